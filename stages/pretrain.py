"""DVC stage `pretrain@<backbone>`: pre-train one MPMv2 backbone on JetClass and export it.

Backbones: each continuous-feature reconstruction task together with the particle-ID task,
plus `random` (the randomly initialised baseline, exported the same way). Checkpoints go to
--checkpoints (a persist output): a killed run resumes from its last checkpoint.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.errors import InputError
from mpm.params import one_of
from mpm.training.pretrain import BACKBONES, validate_params
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



def body(params: dict, args: argparse.Namespace) -> None:
    backbone = one_of(args.backbone, "--backbone", BACKBONES)
    validate_params(params)
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
