"""DVC stage `download`: fetch the real JetClass and BTag data (the `paper` profile only).

With the default params (empty lists) it touches no network and writes just the manifest.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.data.download import download_all
from mpm.params import get


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/real", help="output directory (default: data/real)")


def body(params: dict, args: argparse.Namespace) -> None:
    download_all(get(params, "download"), Path(args.out))


if __name__ == "__main__":
    run_stage(
        "download",
        "Download the JetClass tars and BTag ROOT files from Zenodo, verify their md5s, "
        "resume interrupted downloads and extract the selected JetClass classes.",
        body,
        add_arguments,
    )
