"""DVC stage `report`: results/REPORT.md, every table and figure of the run on one page.

Each figure with a one-line caption and its paper figure, Table 1, the downstream headline and
the Fig. 5 and Fig. 8 numbers, the profile and scale they were produced with, and the paper's
numbers beside ours where the paper states them.
"""

import argparse
import logging
from pathlib import Path

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.report import build_report

log = logging.getLogger("report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results", help="folder of the run's results")
    parser.add_argument("--figures", default="results/figures", help="folder of the figures")
    parser.add_argument("--out", default="results/REPORT.md")


def body(params: dict, args: argparse.Namespace) -> None:
    out = Path(args.out)
    text = build_report(params, Path(args.results), Path(args.figures), out)
    with atomic_file(out) as tmp:
        tmp.write_text(text)
    log.info("wrote %s (%d lines)", out, text.count("\n") + 1)


if __name__ == "__main__":
    run_stage("report", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
