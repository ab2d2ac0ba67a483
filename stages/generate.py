"""DVC stage `generate`: the offline data source of the default and smoke profiles.

Writes JetClass- and BTag-schema ROOT files under --out, laid out like the extracted real
datasets, so that `convert` runs the same code on generated and downloaded data.
"""

import argparse
import json
import logging

from mpm.atomic import atomic_dir
from mpm.cli import run_stage
from mpm.data.toy import generate_toy
from mpm.params import get, one_of, positive_int

log = logging.getLogger("generate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/generated", help="output folder")


def body(params: dict, args: argparse.Namespace) -> None:
    source = one_of(get(params, "data.source"), "data.source", ["generated", "real"])
    engine = one_of(get(params, "generate.engine"), "generate.engine", ["toy"])
    jets = get(params, "generate.jets_per_file")
    jets = {
        s: positive_int(jets.get(s), f"generate.jets_per_file.{s}")
        for s in ("train", "val", "test")
    }
    with atomic_dir(args.out) as tmp:
        if source == "generated":
            generate_toy(tmp, jets, get(params, "seed"))
        else:
            log.info("data.source is 'real': nothing to generate")
        (tmp / "generation.json").write_text(
            json.dumps({"source": source, "engine": engine, "jets_per_file": jets}, indent=2)
        )


if __name__ == "__main__":
    run_stage(
        "generate",
        "Generate the offline JetClass-like and BTag-like ROOT files (engine from params).",
        body,
        add_arguments,
    )
