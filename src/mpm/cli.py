"""Shared plumbing of the thin stage CLIs under stages/: --help, logging, one-line errors."""

import argparse
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable

from mpm.errors import InputError
from mpm.params import load_params


def run_stage(
    name: str,
    description: str,
    body: Callable[[dict, argparse.Namespace], None],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse arguments, set up logging and run `body(params, args)`.

    Paths come from the command line (dvc.yaml spells them out, so the DAG is readable in one
    place); everything else comes from the params file. Bad input exits 2 with one line; a
    failing system call (a full disk, a file too large, no permission) exits 1 with one line.
    """
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=description)
    parser.add_argument(
        "--params", default="params.yaml", help="params file to read (default: params.yaml)"
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {name}: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        body(load_params(args.params), args)
    except InputError as err:
        _fail(name, str(err), 2)
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _fail(name, f"{where}{err.strerror or err}", 1)
    except SystemExit as err:
        # Lightning's answer to SIGTERM is a SystemExit without a code, i.e. exit status 0: a
        # killed training stage would look finished to DVC (and to SLURM) without its outputs.
        lightning = sys.modules.get("lightning.pytorch.utilities.exceptions")
        if lightning and isinstance(err, lightning.SIGTERMException):
            _fail(name, "terminated (SIGTERM); its checkpoints are kept for a resume", 143)
        raise
    _exit_at_once()


def _exit_at_once() -> None:
    """Exit 0 without the interpreter's teardown, which takes ~1 s once torch and Lightning
    are loaded (a sixth of a small stage). Every output is written and closed by now; where
    child processes (loader workers) are alive, the normal exit shuts them down instead, and
    so it does under a profiler or tracer (cProfile, coverage), which report at exit."""
    if multiprocessing.active_children() or sys.getprofile() or sys.gettrace():
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _fail(stage: str, message: str, code: int) -> None:
    message = " ".join(message.split())  # always one line, whatever a library said
    print(f"error: {stage}: {message}", file=sys.stderr)
    sys.exit(code)
