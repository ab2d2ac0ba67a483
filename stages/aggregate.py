"""DVC stage `aggregate`: every downstream run of `finetune.grid` in tidy tables.

Writes runs.csv (one row per run and metric), summary.csv (mean, standard deviation and number
of seeds per task, backbone, mode, size and metric), binned.csv (ARI by number of secondary
vertices, balanced accuracy by number of tracks, averaged over seeds) and the headline, as
JSON (DVC metrics) and as headline.csv (DVC plots): each backbone's metric at each task's
smallest size and its gain over the random backbone.
"""

import argparse
import json
import logging
from pathlib import Path

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.downstream.aggregate import grid_runs, headline, headline_table, over_seeds, read_runs
from mpm.errors import InputError
from mpm.params import get

log = logging.getLogger("aggregate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default="results/finetune", help="folder of the run folders")
    parser.add_argument("--out", default="results/downstream", help="folder of the tables")
    parser.add_argument("--metrics", default="results/downstream/headline.json")


def body(params: dict, args: argparse.Namespace) -> None:
    paths = grid_runs(get(params, "finetune.grid"), Path(args.runs))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: run missing ({len(missing)} of {len(paths)} missing)")
    runs, binned = read_runs(paths)
    summary = over_seeds(runs)
    binned = over_seeds(binned, ["task", "backbone", "mode", "size", "metric", "bin"])
    out = Path(args.out)
    for name, table in (("runs", runs), ("summary", summary), ("binned", binned)):
        with atomic_file(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.5g")
    top = headline(summary)
    with atomic_file(out / "headline.csv") as tmp:
        headline_table(top).to_csv(tmp, index=False, float_format="%.5g")
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(top, indent=2) + "\n")
    for task, entry in top.items():
        log.info("%s (%s at %d): %s", task, entry["metric"], entry["size"],
                 {m: e["mean"] for m, e in entry.items() if isinstance(e, dict)})  # fmt: skip
    log.info("aggregated %d runs into %s", len(paths), out)


if __name__ == "__main__":
    run_stage("aggregate", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
