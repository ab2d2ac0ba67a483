"""DVC stage `figures_*`: execute a figure notebook (papermill) and export it to HTML.

The notebook gets `-p NAME=VALUE` parameters (repeatable) and a temporary `figures` folder for
its PDF/PNG files; nothing reaches --figures, --out or --html unless every cell ran.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.errors import InputError
from mpm.plotting.notebook import execute


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notebook", required=True, help="notebook under notebooks/")
    parser.add_argument("--out", required=True, help="executed notebook (.ipynb)")
    parser.add_argument("--html", required=True, help="HTML export of the executed notebook")
    parser.add_argument("--figures", default="results/figures", help="folder of the figures")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="a notebook parameter (repeatable)")  # fmt: skip


def _parameters(specs: list[str]) -> dict[str, str]:
    parameters = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.isidentifier():
            raise InputError(f"-p '{spec}': expected NAME=VALUE")
        parameters[name] = value
    return parameters


def body(params: dict, args: argparse.Namespace) -> None:
    execute(Path(args.notebook), Path(args.out), Path(args.html), Path(args.figures),
            _parameters(args.parameter))  # fmt: skip


if __name__ == "__main__":
    run_stage("notebook", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
