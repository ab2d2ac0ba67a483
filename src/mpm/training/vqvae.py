"""Training the VQ-VAE tokenizer with Lightning; the codebook usage on validation jets is
reported because an unused codebook is the usual way a VQ-VAE fails."""

import json
import logging
from pathlib import Path

import lightning as L
import torch

from mpm.atomic import atomic_file
from mpm.models.encoder import feature_index
from mpm.tokenizers.vqvae import VQVAE, save_vqvae
from mpm.training.fit import fit, is_rank_zero
from mpm.training.schedule import PaperOptimizer

log = logging.getLogger(__name__)

WEIGHT_DECAY = 1e-2  # AdamW's usual default; the tokenizer is not part of the paper's recipe
# params `tokenizers.vqvae` keys that build the model (the rest configure its training)
MODEL_KEYS = ("dim", "depth", "heads", "codebook_size", "codebook_dim", "commitment_weight",
              "ema_decay", "dead_code_threshold")  # fmt: skip


def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """Share of codes used and the perplexity (effective number of codes) of a histogram."""
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    usage = (counts > 0).float().mean()
    return {"codebook_usage": float(usage), "perplexity": float(entropy.exp())}


def model_config(cfg: dict, features: str) -> dict:
    """VQVAE keyword arguments from `tokenizers.vqvae` and `model.encoder.features`."""
    return {**{k: cfg[k] for k in MODEL_KEYS}, "n_features": len(feature_index(features))}


class VQVAEModule(PaperOptimizer, L.LightningModule):
    """Trains on the feature set `features` (`model.encoder.features`): the one the
    pre-trained model reconstructs."""

    def __init__(self, cfg: dict, features: str):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.cfg = cfg
        self.features = feature_index(features)
        self.vqvae = VQVAE(**model_config(cfg, features))
        self.register_buffer("val_counts", torch.zeros(cfg["codebook_size"]), persistent=False)

    def training_step(self, batch, batch_idx):
        out = self.vqvae(batch["csts"][..., self.features], batch["mask"])
        size = len(batch["labels"])
        for name in ("reconstruction", "commitment", "total"):
            self.log(f"train/{name}", out[name], prog_bar=name == "total", batch_size=size)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], batch_size=size)
        return out["total"]

    def on_validation_epoch_start(self):
        self.val_counts.zero_()

    def validation_step(self, batch, batch_idx):
        out = self.vqvae(batch["csts"][..., self.features], batch["mask"])
        # (the quantizer computes no commitment loss outside training)
        self.log("val/reconstruction", out["reconstruction"], prog_bar=True,
                 batch_size=len(batch["labels"]), sync_dist=True)  # fmt: skip
        self.val_counts += torch.bincount(out["codes"].flatten(), minlength=len(self.val_counts))

    def on_validation_epoch_end(self):
        counts = self.trainer.strategy.reduce(self.val_counts, reduce_op="sum")
        for name, value in codebook_stats(counts).items():
            self.log(f"val/{name}", value)

    def configure_optimizers(self):
        return self.paper_optimizer(self.vqvae.parameters(), self.cfg, WEIGHT_DECAY)


def train_vqvae(
    params: dict,
    data_dir: Path,
    preprocessor: Path,
    out: Path,
    checkpoints: Path,
    log_dir: Path,
    metrics: Path,
) -> dict:
    """Train the VQ-VAE of `tokenizers.vqvae`, export it to `out` and its metrics (under DDP,
    rank 0 only)."""
    seed, cfg = params["seed"], params["tokenizers"]["vqvae"]
    L.seed_everything(seed, workers=True, verbose=False)
    features = params["model"]["encoder"]["features"]
    module = VQVAEModule(cfg, features)
    summary = {"codebook_size": cfg["codebook_size"]} | fit(
        module, cfg, params, data_dir, preprocessor, run_dir=checkpoints, log_dir=log_dir,
        config={"seed": seed, "vqvae": cfg, "features": features},
    )  # fmt: skip
    if not is_rank_zero():
        return summary
    save_vqvae(module.vqvae.cpu(), model_config(cfg, features), out)
    with atomic_file(metrics) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    final = summary["final"]
    log.info("VQ-VAE: %d steps, validation reconstruction MSE %.4f, codebook usage %.1f%%, "
             "perplexity %.0f", summary["steps"], final.get("val/reconstruction", float("nan")),
             100 * final.get("val/codebook_usage", float("nan")),
             final.get("val/perplexity", float("nan")))  # fmt: skip
    return summary
