"""One pre-training run: data, model, Lightning trainer with resumable checkpoints, export of
the backbone and its metrics."""

import json
import logging
from pathlib import Path

import lightning as L

from mpm.atomic import atomic_file
from mpm.data.loader import JetDataset
from mpm.models.backbone import save_backbone
from mpm.models.encoder import JetEncoder
from mpm.training.fit import fit, is_rank_zero, prepare_run_dir
from mpm.training.pretrain import PretrainModule
from mpm.training.pretrained import save_pretrained
from mpm.training.probe import linear_probe_accuracy

log = logging.getLogger(__name__)


def pretrain(
    backbone: str,
    params: dict,
    data_dir: Path,
    preprocessor: Path,
    out: Path,
    checkpoints: Path,
    log_dir: Path,
    metrics: Path,
    tokenizer: Path | None = None,
    model_out: Path | None = None,
    linear_probe: bool = True,
    callbacks: tuple[L.Callback, ...] = (),
) -> dict:
    """Pre-train (or, for `random`, only initialise) one backbone and export it to `out`, and
    the whole pre-training model to `model_out` if given; `linear_probe` adds the linear-probe
    health check to the metrics; `callbacks` join the trainer's. Under DDP only rank 0
    exports (the others return the summary of their fit)."""
    seed, cfg = params["seed"], params["pretrain"]
    encoder_cfg = params["model"]["encoder"]
    L.seed_everything(seed, workers=True, verbose=False)
    summary: dict = {"backbone": backbone}
    if backbone == "random":
        encoder = JetEncoder(**encoder_cfg)
        summary["steps"] = 0
        prepare_run_dir(checkpoints, {"backbone": backbone})  # nothing to resume: a stamp
    else:
        module = PretrainModule(
            backbone, params["model"], cfg, params["mask_rate"],
            params["convert"]["jetclass"]["max_constituents"],
            None if tokenizer is None else str(tokenizer),
        )  # fmt: skip
        config = {"backbone": backbone, "seed": seed, "mask_rate": params["mask_rate"],
                  "model": params["model"], "pretrain": cfg}  # fmt: skip
        summary |= fit(
            module, cfg, params, data_dir, preprocessor, run_dir=checkpoints, log_dir=log_dir,
            config=config, extra_inputs=(tokenizer,) if tokenizer else (), callbacks=callbacks,
        )  # fmt: skip
        encoder = module.encoder
        if not is_rank_zero():
            return summary
        if model_out is not None:
            save_pretrained(module.cpu(), {"steps": summary["steps"]}, model_out)
    if linear_probe:
        probe = params["pretrain"]["probe_jets"]
        kwargs = dict(preprocessor_path=preprocessor, batch_size=500, seed=seed, shuffle=False)
        summary["linear_probe_accuracy"] = round(
            linear_probe_accuracy(
                encoder.cpu(),
                JetDataset(data_dir / "val.h5", n_jets=probe["train"], **kwargs),
                JetDataset(data_dir / "test.h5", n_jets=probe["test"], **kwargs),
            ),
            4,
        )
        log.info("%s: linear probe accuracy %.3f", backbone, summary["linear_probe_accuracy"])
    save_backbone(encoder, encoder_cfg, {"backbone": backbone, "steps": summary["steps"]}, out)
    with atomic_file(metrics) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %d steps", backbone, summary["steps"])
    return summary


class EncoderSnapshots(L.Callback):
    """Saves the backbone every `every` training steps as `folder/step<N>.pt` (rank zero), for
    probes along a pre-training (the decoder curve of the Table 1 ablation). The folder is the
    run's checkpoint folder's, so a resumed run keeps the snapshots taken before it stopped."""

    def __init__(self, folder: Path, every: int, encoder_cfg: dict, backbone: str):
        self.folder, self.every = Path(folder), every
        self.encoder_cfg, self.backbone = encoder_cfg, backbone

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            save_backbone(pl_module.encoder, self.encoder_cfg,
                          {"backbone": self.backbone, "steps": step},
                          self.folder / f"step{step}.pt")  # fmt: skip
