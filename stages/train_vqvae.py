"""DVC stage `train_vqvae`: the VQ-VAE tokenizer of the vqvae backbone.

Trains a transformer VQ-VAE on the preprocessed constituents of JetClass training jets (the
whole jet is its context), reports the reconstruction error, codebook usage and perplexity on
validation jets, and exports the model that tokenizes jets for `pretrain_tokens@vqvae`.
Checkpoints go to --checkpoints (a persist output): a killed run resumes.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.errors import InputError
from mpm.models.encoder import FEATURE_SETS
from mpm.params import fraction, get, one_of, positive_float, positive_int
from mpm.training.vqvae import train_vqvae

GROUP = "tokenizers.vqvae"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/processed/jetclass", help="converted JetClass")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--out", default="models/tokenizers/vqvae.pt", help="tokenizer (.pt)")
    parser.add_argument("--checkpoints", default="checkpoints/vqvae", help="resumable run")
    parser.add_argument("--log-dir", default="results/tokenizers/vqvae", help="curves")
    parser.add_argument("--metrics", default="results/tokenizers/vqvae.json")


def _validate(params: dict) -> None:
    for key in ("dim", "depth", "heads", "codebook_size", "codebook_dim", "steps", "batch_size",
                "n_val_jets", "val_every_steps", "warmup_steps"):  # fmt: skip
        positive_int(get(params, f"{GROUP}.{key}"), f"{GROUP}.{key}")
    positive_int(get(params, f"{GROUP}.n_train_jets"), f"{GROUP}.n_train_jets", allow_none=True)
    for key in ("lr", "half_life_steps", "grad_clip", "commitment_weight", "dead_code_threshold"):
        positive_float(get(params, f"{GROUP}.{key}"), f"{GROUP}.{key}")
    fraction(get(params, f"{GROUP}.ema_decay"), f"{GROUP}.ema_decay")
    one_of(get(params, "model.encoder.features"), "model.encoder.features", FEATURE_SETS)
    one_of(get(params, "trainer.compile"), "trainer.compile", (True, False))
    one_of(get(params, "trainer.force_resume"), "trainer.force_resume", (True, False))
    if get(params, f"{GROUP}.dim") % get(params, f"{GROUP}.heads"):
        raise InputError(f"params: '{GROUP}.dim' must be divisible by '{GROUP}.heads'")


def body(params: dict, args: argparse.Namespace) -> None:
    _validate(params)
    train_vqvae(
        params,
        Path(args.data),
        Path(args.preprocessor),
        Path(args.out),
        Path(args.checkpoints),
        Path(args.log_dir),
        Path(args.metrics),
    )


if __name__ == "__main__":
    run_stage("train_vqvae", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
