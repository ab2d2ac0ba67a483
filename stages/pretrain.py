"""DVC stage `pretrain@<backbone>`: pre-train one MPMv2 backbone on JetClass and export it.

Backbones: each continuous-feature reconstruction task together with the particle-ID task,
plus `random` (the randomly initialised baseline, exported the same way). Checkpoints go to
--checkpoints (a persist output): a killed run resumes from its last checkpoint.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.errors import InputError
from mpm.models.encoder import FEATURE_SETS
from mpm.models.layers import LAYERS
from mpm.params import fraction, get, non_negative_int, one_of, positive_float, positive_int
from mpm.training.pretrain import BACKBONES, VARIANTS
from mpm.training.run import pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", required=True, help=f"one of {', '.join(BACKBONES)}")
    parser.add_argument("--data", default="data/processed/jetclass", help="converted JetClass")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--out", required=True, help="backbone artifact (.pt)")
    parser.add_argument("--model-out", help="whole pre-training model (.pt; not for random)")
    parser.add_argument("--checkpoints", required=True, help="checkpoint folder (resumable)")
    parser.add_argument("--log-dir", required=True, help="training curves (metrics.csv)")
    parser.add_argument("--metrics", required=True, help="final losses and probe accuracy")
    parser.add_argument("--tokenizer", help="tokenizer file of the token backbones (kmeans, vqvae)")


def _validate(params: dict) -> None:
    fraction(get(params, "mask_rate"), "mask_rate")
    one_of(get(params, "model.variant"), "model.variant", VARIANTS)
    for group in ("encoder", "decoder"):
        for key in ("dim", "depth", "heads"):
            positive_int(get(params, f"model.{group}.{key}"), f"model.{group}.{key}")
        positive_float(get(params, f"model.{group}.layer_scale_init"),
                       f"model.{group}.layer_scale_init")  # fmt: skip
        if get(params, f"model.{group}.dim") % get(params, f"model.{group}.heads"):
            raise InputError(f"params: 'model.{group}.dim' must be divisible by "
                             f"'model.{group}.heads'")  # fmt: skip
    non_negative_int(get(params, "model.encoder.registers"), "model.encoder.registers")
    one_of(get(params, "model.encoder.layer"), "model.encoder.layer", LAYERS)
    one_of(get(params, "model.encoder.features"), "model.encoder.features", FEATURE_SETS)
    one_of(get(params, "model.encoder.ids"), "model.encoder.ids", (True, False))
    one_of(get(params, "trainer.compile"), "trainer.compile", (True, False))
    for key in ("steps", "batch_size", "n_val_jets", "val_every_steps", "warmup_steps"):
        positive_int(get(params, f"pretrain.{key}"), f"pretrain.{key}")
    positive_int(get(params, "pretrain.n_train_jets"), "pretrain.n_train_jets", allow_none=True)
    for key in ("lr", "weight_decay", "half_life_steps", "grad_clip"):
        positive_float(get(params, f"pretrain.{key}"), f"pretrain.{key}")
    ssfm = "pretrain.tasks.ssfm"
    low = fraction(get(params, f"{ssfm}.kept_fraction_min"), f"{ssfm}.kept_fraction_min")
    high = fraction(get(params, f"{ssfm}.kept_fraction_max"), f"{ssfm}.kept_fraction_max", True)
    if low > high:
        raise InputError(f"params: '{ssfm}.kept_fraction_min' exceeds kept_fraction_max")
    positive_int(get(params, f"{ssfm}.sample_steps"), f"{ssfm}.sample_steps")


def body(params: dict, args: argparse.Namespace) -> None:
    backbone = one_of(args.backbone, "--backbone", BACKBONES)
    _validate(params)
    if backbone == "random" and args.model_out:
        raise InputError("--model-out: the random backbone has no pre-training model")
    pretrain(
        backbone,
        params,
        Path(args.data),
        Path(args.preprocessor),
        Path(args.out),
        Path(args.checkpoints),
        Path(args.log_dir),
        Path(args.metrics),
        None if args.tokenizer is None else Path(args.tokenizer),
        None if args.model_out is None else Path(args.model_out),
    )


if __name__ == "__main__":
    run_stage("pretrain", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
