"""DVC stage `convert`: ROOT -> HDF5 for one dataset (JetClass or BTag), all three splits."""

import argparse
import json
from pathlib import Path

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.data.convert import DATASETS, convert_dataset
from mpm.params import get, one_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--generated", default="data/generated", help="generated ROOT files")
    parser.add_argument("--real", default="data/real", help="downloaded ROOT files")
    parser.add_argument("--out", required=True, help="output folder for train/val/test.h5")
    parser.add_argument("--metrics", required=True, help="JSON summary (jets per split/class)")


def body(params: dict, args: argparse.Namespace) -> None:
    source = one_of(get(params, "data.source"), "data.source", ["generated", "real"])
    root = Path(args.generated if source == "generated" else args.real)
    summary = convert_dataset(params, args.dataset, root, Path(args.out))
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(
        "convert",
        "Convert the ROOT files of one dataset into shuffled, padded HDF5 files "
        "(features, particle IDs, mask, jet features, labels; BTag also vertex and origin).",
        body,
        add_arguments,
    )
