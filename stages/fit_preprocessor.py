"""DVC stage `fit_preprocessor`: the quantile-to-normal transform of the 7 features."""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.data.preprocess import fit_preprocessor, save_preprocessor
from mpm.params import get, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="converted JetClass train.h5")
    parser.add_argument("--out", required=True, help="output .joblib artifact")


def body(params: dict, args: argparse.Namespace) -> None:
    cfg = get(params, "preprocess")
    transformer = fit_preprocessor(
        Path(args.train),
        n_jets=positive_int(cfg.get("n_jets"), "preprocess.n_jets"),
        n_quantiles=positive_int(cfg.get("n_quantiles"), "preprocess.n_quantiles"),
        subsample=positive_int(cfg.get("subsample"), "preprocess.subsample"),
        seed=get(params, "seed"),
    )
    save_preprocessor(transformer, Path(args.out))


if __name__ == "__main__":
    run_stage(
        "fit_preprocessor",
        "Fit the quantile-to-normal transform of the 7 constituent features on the first "
        "preprocess.n_jets JetClass training jets (neutral impact parameters excluded).",
        body,
        add_arguments,
    )
