"""DVC stage `figures_decoder_curve`: probe accuracy against pre-training steps for Table 1's
decoder rows.

Reads the `ablation_curve` runs (--curves: row<N>/curve.json and its probes) and the Random
init probe (--random), draws the curve and writes, per pair of rows, the later row's gain at
each probed step with its error and the step from which it keeps its final sign (--metrics).
"""

import argparse
import json
import logging

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.plotting.decoder_curve import crossing, draw, read_curves
from mpm.plotting.style import save_figure
from mpm.tables import read_probe

log = logging.getLogger("plot_decoder_curve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curves", required=True, help="folder of the ablation_curve runs")
    parser.add_argument("--random", required=True, help="the Random init probe run")
    parser.add_argument("--figure", required=True, help="path stem of the figure")
    parser.add_argument("--metrics", required=True, help="JSON: gains and crossing step")


def body(params: dict, args: argparse.Namespace) -> None:
    curves = read_curves(args.curves)
    random = read_probe(args.random)
    rows = sorted(set(curves["row"]))
    metrics = {f"row{b}_minus_row{a}": crossing(curves, a, b) for a, b in zip(rows, rows[1:])}
    metrics["random_init_accuracy"] = round(random["accuracy"], 4)
    save_figure(draw(curves, random), args.figure)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("decoder curve of rows %s: %s", rows, metrics)


if __name__ == "__main__":
    run_stage("plot_decoder_curve", __doc__.splitlines()[0].split(": ", 1)[1], body,
              add_arguments)  # fmt: skip
