"""DVC stage `finetune`: a backbone's downstream runs on one or more tasks (paper section 5.2).

Runs every mode, training-set size and seed of params `finetune.grid` for each task (several
tasks: those read from one dataset, BTag's jet, vertex and track tasks, whose frozen runs
share the backbone's stored outputs): each
trains the task's head on a seeded subset of training jets, with the backbone fine-tuned (held
for the first steps, then ramped in) or `frozen`, stops early on the validation loss and
evaluates the best checkpoint on the test set. Writes `<mode>-<size>-s<seed>/metrics.json`
and `predictions.csv` to the task's --out folder. The recipe comes from params `finetune.recipe` and
`finetune.head`.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.downstream.finetune import TASKS, validate_grid, validate_params
from mpm.downstream.grid import run_grid
from mpm.errors import InputError
from mpm.params import one_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, nargs="+",
                        help=f"tasks read from one dataset, each one of {', '.join(TASKS)}")
    parser.add_argument("--backbone", required=True, help="backbone artifact (.pt)")
    parser.add_argument("--data", required=True,
                        help="converted dataset folder (cwola: that of its datasets)")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--out", required=True, nargs="+",
                        help="the runs' folder of each task, in --task's order")


def body(params: dict, args: argparse.Namespace) -> None:
    tasks = [one_of(task, "--task", TASKS) for task in args.task]
    if len(args.out) != len(tasks):
        raise InputError(f"--out: {len(args.out)} folder(s) for {len(tasks)} tasks of --task")
    if len({TASKS[task].data for task in tasks}) > 1:
        raise InputError(f"--task: {' '.join(tasks)} read different datasets; one stage runs "
                         "the tasks of one dataset")  # fmt: skip
    validate_params(params)
    validate_grid(params)
    run_grid(tasks, Path(args.backbone), params, Path(args.data), Path(args.preprocessor),
             [Path(out) for out in args.out])  # fmt: skip


if __name__ == "__main__":
    run_stage("finetune", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
