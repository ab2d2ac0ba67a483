"""DVC stage `data_sanity`: physics sanity figure and metrics of the converted datasets.

JetClass jet mass (peaks at the W, Z, H and top masses for resonant classes), multiplicity and
lepton content per class; BTag lifetime-signed d0 significance and secondary vertices per
flavour; and checks of the sample definitions (`checks` in the metrics): neutrals per
calorimeter cell, BTag flavours' separability from (pT, eta, track count), tracks shared by
jets, secondary-vertex separations (the last two from the raw BTag test file's truth).
Runs on whichever data the profile uses (generated or real).
"""

import argparse
import json
import logging
from pathlib import Path

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.data.convert import resolve_inputs
from mpm.data.sanity import btag_arrays, btag_raw_arrays, jetclass_arrays, summarise
from mpm.params import get, one_of, positive_int
from mpm.plotting.data_sanity import draw
from mpm.plotting.style import save_figure

log = logging.getLogger("data_sanity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jetclass", default="data/processed/jetclass/test.h5")
    parser.add_argument("--btag", default="data/processed/btag/test.h5")
    parser.add_argument("--generated", default="data/generated", help="generated ROOT files")
    parser.add_argument("--real", default="data/real", help="downloaded ROOT files")
    parser.add_argument("--figure", default="results/figures/data_sanity", help="path stem")
    parser.add_argument("--metrics", default="results/data/sanity.json")


def body(params: dict, args: argparse.Namespace) -> None:
    max_jets = positive_int(get(params, "sanity.max_jets"), "sanity.max_jets")
    source = one_of(get(params, "data.source"), "data.source", ["generated", "real"])
    raw_root = Path(args.generated if source == "generated" else args.real)
    raw_btag = resolve_inputs(raw_root, get(params, "convert.btag.inputs.test"))[0]
    jetclass = jetclass_arrays(args.jetclass, max_jets, get(params, "convert.jetclass.clip_angle"))
    btag = btag_arrays(args.btag, max_jets)
    summary = summarise(jetclass, btag, btag_raw_arrays(raw_btag, max_jets))
    for name, values in summary["jetclass"].items():
        log.info(
            "%-5s median mass %6.1f GeV, %5.1f constituents, e/mu > 20 GeV in %.3f",
            name,
            values["median_mass"],
            values["mean_multiplicity"],
            values["lepton_fraction"],
        )
    for name, values in summary["btag"].items():
        log.info(
            "%-6s S(d0) > 3 tail %.3f, %.2f secondary vertices",
            name,
            values["d0_significance_tail"],
            values["mean_secondary_vertices"],
        )
    for name, value in summary["checks"].items():
        log.info("%s: %s", name, value)
    fig = draw(jetclass, btag, source, summary)
    paths = save_figure(fig, args.figure, dpi=100)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("figure written to %s", ", ".join(map(str, paths)))


if __name__ == "__main__":
    run_stage("data_sanity", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
