"""DVC stage `generate`: the offline data source of the default and smoke profiles.

Simulates JetClass-like and BTag-like jets with Pythia8, a simple detector and FastJet, and
writes them as ROOT files in the real datasets' schemas and layout under --out, so that
`convert` runs the same code on generated and downloaded data. With data.source = real it
writes an empty folder (the `download` stage provides the data).
"""

import argparse
import json
import logging

from mpm.atomic import atomic_dir, atomic_file
from mpm.cli import run_stage
from mpm.data.generator.run import generate, validated_config
from mpm.params import get, one_of

log = logging.getLogger("generate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/generated", help="output folder")
    parser.add_argument(
        "--metrics",
        default="results/data/generation.json",
        help="generation statistics (jets, events, jets/s per core)",
    )


def body(params: dict, args: argparse.Namespace) -> None:
    source = one_of(get(params, "data.source"), "data.source", ["generated", "real"])
    cfg = validated_config(params)
    stats = {"source": source}
    with atomic_dir(args.out) as tmp:
        if source == "generated":
            stats.update(generate(tmp, cfg, get(params, "seed")))
        else:
            log.info("data.source is 'real': nothing to generate")
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(stats, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(
        "generate",
        "Generate the offline JetClass-like and BTag-like ROOT files (Pythia8 + FastJet).",
        body,
        add_arguments,
    )
