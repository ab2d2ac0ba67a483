"""DVC stage `data_sanity`: physics sanity figure and metrics of the converted datasets.

JetClass jet mass (peaks at the W, Z, H and top masses for resonant classes) and multiplicity
per class; BTag lifetime-signed d0 significance and secondary vertices per flavour. Runs on
whichever data the profile converted (generated or real).
"""

import argparse
import json
import logging

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.data.sanity import btag_arrays, jetclass_arrays, summarise
from mpm.params import get, positive_int
from mpm.plotting.data_sanity import draw
from mpm.plotting.style import save_figure

log = logging.getLogger("data_sanity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jetclass", default="data/processed/jetclass/test.h5")
    parser.add_argument("--btag", default="data/processed/btag/test.h5")
    parser.add_argument("--figure", default="results/figures/data_sanity", help="path stem")
    parser.add_argument("--metrics", default="results/data/sanity.json")


def body(params: dict, args: argparse.Namespace) -> None:
    max_jets = positive_int(get(params, "sanity.max_jets"), "sanity.max_jets")
    jetclass = jetclass_arrays(args.jetclass, max_jets)
    btag = btag_arrays(args.btag, max_jets)
    summary = summarise(jetclass, btag)
    for name, values in summary["jetclass"].items():
        log.info(
            "%-5s median mass %6.1f GeV, %5.1f constituents",
            name,
            values["median_mass"],
            values["mean_multiplicity"],
        )
    for name, values in summary["btag"].items():
        log.info(
            "%-6s S(d0) > 3 tail %.3f, %.2f secondary vertices",
            name,
            values["d0_significance_tail"],
            values["mean_secondary_vertices"],
        )
    fig = draw(jetclass, btag, get(params, "data.source"))
    paths = save_figure(fig, args.figure, dpi=100)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("figure written to %s", ", ".join(map(str, paths)))


if __name__ == "__main__":
    run_stage("data_sanity", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
