"""DVC stage `finetune`: a backbone's downstream runs on one task (paper section 5.2).

Runs every mode, training-set size and seed of params `finetune.grid` for the task: each
trains the task's head on a seeded subset of training jets, with the backbone fine-tuned (held
for the first steps, then ramped in) or `frozen`, stops early on the validation loss and
evaluates the best checkpoint on the test set. Writes `<mode>-<size>-s<seed>/metrics.json`
and `predictions.csv` to --out. The recipe comes from params `finetune.recipe` and
`finetune.head`.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.downstream.finetune import TASKS, validate_grid, validate_params
from mpm.downstream.grid import run_grid
from mpm.params import one_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    parser.add_argument("--backbone", required=True, help="backbone artifact (.pt)")
    parser.add_argument("--data", required=True,
                        help="converted dataset folder (cwola: that of its datasets)")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--out", required=True, help="the runs' folder")


def body(params: dict, args: argparse.Namespace) -> None:
    task = one_of(args.task, "--task", TASKS)
    validate_params(params)
    validate_grid(params)
    run_grid(task, Path(args.backbone), params, Path(args.data), Path(args.preprocessor),
             Path(args.out))  # fmt: skip


if __name__ == "__main__":
    run_stage("finetune", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
