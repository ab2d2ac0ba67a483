"""DVC stage `plot_training`: the training curves of every pre-trained backbone and tokenizer.

Reads the Lightning CSV logs (`--curve name=path`, repeatable) and draws each run's losses,
training and validation, in one figure.
"""

import argparse
import logging

import pandas as pd

from mpm.cli import run_stage
from mpm.errors import InputError
from mpm.plotting.style import save_figure
from mpm.plotting.training_curves import draw

log = logging.getLogger("plot_training")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curve", action="append", required=True, metavar="NAME=CSV",
                        help="a run's name and its metrics.csv (repeatable)")  # fmt: skip
    parser.add_argument("--figure", default="results/figures/training_curves", help="path stem")


def _read(spec: str) -> tuple[str, pd.DataFrame]:
    name, _, path = spec.partition("=")
    if not path:
        raise InputError(f"--curve '{spec}': expected NAME=CSV")
    try:
        curve = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path}: cannot read the training curve ({err})") from None
    if "step" not in curve.columns:
        raise InputError(f"{path}: not a training curve (no 'step' column)")
    return name, curve


def body(params: dict, args: argparse.Namespace) -> None:
    curves = dict(_read(spec) for spec in args.curve)
    save_figure(draw(curves), args.figure)
    log.info("drew %d training curves to %s.{pdf,png}", len(curves), args.figure)


if __name__ == "__main__":
    run_stage("plot_training", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
