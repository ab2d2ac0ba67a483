"""DVC stage `ablation_tables`: Table 1 and the Fig. 5 sweep table from the ablation probes.

Reads the run folders under --runs (`stages/ablation.py`) of the ablation stages the params
define (`mpm.ablation.run_names`; Table 1 rows `ablation.table1_rows`) and the probes of the final
backbones under --final/<backbone>. Writes Table 1 as Markdown, CSV and LaTeX (accuracy in %,
the change from the line above, the paper's numbers beside ours, the random backbone's probe
under --final/random as a reference line), the sweep table
(sweeps.csv, drawn by notebooks/sweeps.ipynb) and Table 1's accuracies (with the probes'
number of test jets) as DVC metrics.
"""

import argparse
import json
import logging
from pathlib import Path

from mpm.ablation import FINAL_ROW, TABLE1_BACKBONES, run_names, table1_rows
from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.tables import (
    read_json,
    read_probe,
    read_runs,
    sweep_table,
    table1,
    table1_accuracy,
    table1_latex,
    table1_markdown,
)

log = logging.getLogger("ablation_tables")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", required=True, help="folder of the ablation run folders")
    parser.add_argument("--final", required=True, help="folder of the final backbones' probes")
    parser.add_argument("--out", required=True, help="folder of table1.{md,csv,tex}, sweeps.csv")
    parser.add_argument("--metrics", required=True, help="Table 1 accuracies (JSON)")


def body(params: dict, args: argparse.Namespace) -> None:
    runs = read_runs(Path(args.runs), run_names(params))
    final = {b: read_json(Path(args.final) / b / "metrics.json")["accuracy"]
             for b in TABLE1_BACKBONES}  # fmt: skip
    random = read_probe(Path(args.final) / "random")
    rows = [*table1_rows(params), FINAL_ROW]
    table = table1(table1_accuracy(runs, final), random["accuracy"], rows)
    sweeps = sweep_table(runs, random)
    out = Path(args.out)
    outputs = {
        "table1.md": table1_markdown(table),
        "table1.csv": table.to_csv(index=False),
        "table1.tex": table1_latex(table),
        "sweeps.csv": sweeps.to_csv(index=False),
    }
    lines = table[table["row"] != "reference"]
    metrics = {b: {f"row{r}": v for r, v in zip(lines["row"], lines[b])} for b in TABLE1_BACKBONES}
    metrics["random_init"] = round(100 * random["accuracy"], 1)
    metrics["probe_test_jets"] = random["n_test"]  # every probe scores the same test jets
    for name, text in outputs.items():
        with atomic_file(out / name) as tmp:
            tmp.write_text(text)
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("Table 1 from %d runs (+ %d final backbones), %d sweep points:\n%s", len(runs),
             len(final), len(sweeps), outputs["table1.md"])  # fmt: skip


if __name__ == "__main__":
    run_stage("ablation_tables", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
