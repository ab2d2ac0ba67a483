"""DVC stage `finetune`: one downstream run of a backbone (paper section 5.2).

Trains the task's head on a seeded subset of `--size` training jets, with the backbone
fine-tuned (held for the first steps, then ramped in) or `frozen`, stops early on the
validation loss and evaluates the best checkpoint on the test set. Writes `metrics.json` and
`predictions.csv` to --out. The recipe comes from params `finetune.recipe` and `finetune.head`.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.downstream.finetune import MODES, TASKS, validate_params
from mpm.downstream.run import finetune
from mpm.errors import InputError
from mpm.params import non_negative_int, one_of, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    parser.add_argument("--backbone", required=True, help="backbone artifact (.pt)")
    parser.add_argument("--mode", required=True, help=f"one of {', '.join(MODES)}")
    parser.add_argument("--size", required=True, help="training jets, or `all`")
    parser.add_argument("--seed", required=True, help="initialisation and training subset")
    parser.add_argument("--data", required=True, help="converted dataset folder")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--out", required=True, help="run folder (metrics.json, predictions.csv)")



def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"'{name}' must be an integer, got {value!r}") from None


def body(params: dict, args: argparse.Namespace) -> None:
    task = one_of(args.task, "--task", TASKS)
    mode = one_of(args.mode, "--mode", MODES)
    size = None if args.size == "all" else positive_int(_int(args.size, "--size"), "--size")
    seed = non_negative_int(_int(args.seed, "--seed"), "--seed")
    validate_params(params)
    finetune(task, Path(args.backbone), mode, size, seed, params, Path(args.data),
             Path(args.preprocessor), Path(args.out))  # fmt: skip


if __name__ == "__main__":
    run_stage("finetune", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
