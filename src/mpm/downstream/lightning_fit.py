"""Downstream runs whose backbone runs at every step (fine-tuned, or frozen where its stored
outputs would not fit in memory), with Lightning: devices, precision, early stopping and the
best checkpoint. Imported by those runs only: Lightning costs a frozen-only stage some seconds
to import and nothing else there uses it."""

import tempfile

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from mpm.data.datamodule import JetDataModule
from mpm.data.loader import JetDataset, make_loader
from mpm.downstream.finetune import FinetuneModule
from mpm.training.fit import trainer_kwargs


class LightningFinetune(L.LightningModule):
    """`FinetuneModule`'s recipe in Lightning's loop: its loss, schedule and predictions."""

    def __init__(self, module: FinetuneModule):
        super().__init__()
        self.module = module

    def forward(self, batch: dict):
        return self.module(batch)

    def training_step(self, batch, batch_idx):
        loss = self.module.loss(self(batch), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        size = len(batch["labels"])
        self.log("val/loss", self.module.loss(out, batch), prog_bar=True, batch_size=size)
        if self.module.task.kind == "jet":
            accuracy = (out.argmax(-1) == batch["labels"]).float().mean()
            self.log("val/accuracy", accuracy, batch_size=size)

    def predict_step(self, batch, batch_idx):
        return self.module.predict_step(batch, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self.module.read_split("val")

    def on_validation_epoch_end(self) -> None:
        self.module.read_split("train")

    def on_predict_epoch_start(self) -> None:
        self.module.read_split("test")

    def on_train_epoch_start(self) -> None:
        self.module.read_split("train")
        if self.module.mode == "frozen":
            # no dropout or other training-time behaviour in a fixed backbone
            self.module.encoder.eval()

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.module.hold_backbone(self.global_step)

    def configure_optimizers(self):
        return self.module.configure_optimizers()


def fit_with_lightning(module: FinetuneModule, data: JetDataModule, test: JetDataset,
                       recipe: dict, params: dict,
                       workers: int) -> tuple[float, int, list[dict]]:  # fmt: skip
    """Train `module` on `data` with early stopping on the validation loss: (the best
    validation loss, steps taken, the best checkpoint's predictions on `test`)."""
    wrapped = LightningFinetune(module)
    with tempfile.TemporaryDirectory() as ckpt_dir:
        best = ModelCheckpoint(ckpt_dir, monitor="val/loss", mode="min", save_top_k=1)
        stop = EarlyStopping("val/loss", patience=recipe["patience"], mode="min")
        trainer = L.Trainer(
            **trainer_kwargs(params["trainer"], distributed=False),
            max_steps=recipe["max_steps"],
            max_epochs=-1,
            val_check_interval=recipe["val_every_steps"],
            check_val_every_n_epoch=None,
            gradient_clip_val=recipe["grad_clip"],
            callbacks=[best, stop],
            logger=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(wrapped, datamodule=data)
        outputs = trainer.predict(
            wrapped, make_loader(test, workers), ckpt_path=best.best_model_path
        )
    return float(best.best_model_score), trainer.global_step, outputs
