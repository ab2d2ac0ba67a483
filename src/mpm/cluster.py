"""Hand-over of results between SLURM jobs (slurm/job.sbatch).

Every job runs in a clone of its own and shares one DVC cache. DVC keeps no run-cache for
stages with `persist` outputs (every training stage), so a job that needs a trained backbone
cannot find it by the stage's hash alone: it needs the `dvc.lock` entry of the job that
trained it. `take-locks` copies into this clone's `dvc.lock` every stage entry that earlier
jobs changed relative to the commit they all started from; `dvc checkout` then restores
those outputs from the shared cache, and `dvc repro` runs only what is still missing.

    python -m mpm.cluster take-locks --base <git rev> ../<job id>/dvc.lock ...

prints the names of the stages taken on stdout, one a line (the job script checks out only
their outputs), and a summary on stderr.
"""

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from mpm.atomic import atomic_file

log = logging.getLogger("mpm.cluster")


def _stages(text: str | None) -> dict:
    return (yaml.safe_load(text) or {}).get("stages", {}) if text else {}


def merge_locks(base: str | None, ours: str | None, theirs: list[str]) -> tuple[dict, list[str]]:
    """The lock of `ours` with every stage entry that a lock of `theirs` changed relative to
    `base` (texts of dvc.lock; None where there is none). Returns the lock and the names of
    the stages taken; where two of `theirs` changed the same stage, the later one wins."""
    base_stages = _stages(base)
    lock = yaml.safe_load(ours) if ours else None
    lock = lock or {"schema": "2.0", "stages": {}}
    taken = {}  # names in order, once each
    for text in theirs:
        for name, entry in _stages(text).items():
            if base_stages.get(name) != entry:
                lock["stages"][name] = entry
                taken[name] = None
    return lock, list(taken)


def _git_show(rev: str, path: str) -> str | None:
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def take_locks(base_rev: str, lock_paths: list[Path], ours: Path = Path("dvc.lock")) -> list[str]:
    """Merge the stage entries the jobs of `lock_paths` produced into `ours` (atomically)."""
    for path in lock_paths:
        if not path.is_file():
            raise SystemExit(f"error: take-locks: {path}: no dvc.lock (did that job run?)")
    lock, taken = merge_locks(
        _git_show(base_rev, "dvc.lock"),
        ours.read_text() if ours.is_file() else None,
        [p.read_text() for p in lock_paths],
    )
    with atomic_file(ours) as tmp:
        tmp.write_text(yaml.safe_dump(lock, sort_keys=False))
    return taken


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mpm.cluster",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    take = sub.add_parser("take-locks", help="take the stage entries earlier jobs produced")
    take.add_argument("--base", default="HEAD", help="the git revision every job started from")
    take.add_argument("locks", nargs="+", type=Path, help="dvc.lock files of earlier jobs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s cluster: %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    taken = take_locks(args.base, args.locks)
    log.info("took %d stage(s) from earlier jobs: %s", len(taken), " ".join(taken) or "none")
    for name in taken:
        print(name)


if __name__ == "__main__":
    sys.exit(main())
