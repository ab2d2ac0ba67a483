"""DVC stage `ablation_final`: the frozen-backbone probe of Table 1 and Fig. 5 for one backbone.

Trains a class-attention head (`finetune.head`) on JetClass on top of the frozen --backbone
with the recipe `finetune.recipe` and the jets, seed, steps and test jets of `ablation.probe`,
exactly as `stages/ablation.py` probes its runs. Table 1's last row probes the profile's own
backbones this way (and Random init as a reference). Writes metrics.json and predictions.csv
to --out.
"""

import argparse
from pathlib import Path

from mpm.ablation import probe, validate_probe_params
from mpm.cli import run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", required=True, help="backbone artifact (.pt)")
    parser.add_argument("--data", default="data/processed/jetclass", help="converted JetClass")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--out", required=True, help="run folder (metrics.json, predictions.csv)")


def body(params: dict, args: argparse.Namespace) -> None:
    validate_probe_params(params)
    probe(Path(args.backbone), params, Path(args.data), Path(args.preprocessor), Path(args.out))


if __name__ == "__main__":
    run_stage("probe", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
