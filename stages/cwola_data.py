"""DVC stage `cwola_data`: the CWoLa datasets of params `finetune.grid` (paper sec. 5.2.2).

One dataset per number of injected top jets (`finetune.grid.cwola_signal`) and repeat seed
(`finetune.grid.seeds`), each in --out/<n_signal>-s<seed>/: two random halves of the JetClass
QCD training jets get the mixed labels 0 and 1, the top jets join the second; a share of each
is held out for validation. The test set, the same file in every dataset, is the pure JetClass
test QCD and top jets with true labels. The repeat's seed (with the profile's `seed`) draws the
halves and the top jets. Params: `seed`, `finetune.cwola`, `finetune.grid`.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.downstream.cwola import build_cwola_datasets
from mpm.errors import InputError
from mpm.params import fraction, get, non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jetclass", default="data/processed/jetclass", help="converted JetClass")
    parser.add_argument("--out", required=True,
                        help="the datasets' folder (<n_signal>-s<seed>/{train,val,test}.h5)")


def _int_list(params: dict, key: str) -> list[int]:
    values = get(params, key)
    if not isinstance(values, list):
        raise InputError(f"params: '{key}' must be a list, got {values!r}")
    return [non_negative_int(value, key) for value in values]


def body(params: dict, args: argparse.Namespace) -> None:
    cfg = "finetune.cwola"
    build_cwola_datasets(
        Path(args.jetclass),
        Path(args.out),
        n_signals=_int_list(params, "finetune.grid.cwola_signal"),
        seeds=_int_list(params, "finetune.grid.seeds"),
        profile_seed=non_negative_int(get(params, "seed"), "seed"),
        n_background=positive_int(get(params, f"{cfg}.n_background"), f"{cfg}.n_background",
                                  allow_none=True),
        val_fraction=fraction(get(params, f"{cfg}.val_fraction"), f"{cfg}.val_fraction"),
        n_test_per_class=positive_int(get(params, f"{cfg}.n_test_per_class"),
                                      f"{cfg}.n_test_per_class", allow_none=True),
        min_background_at_fpr=positive_float(get(params, f"{cfg}.min_background_at_fpr"),
                                             f"{cfg}.min_background_at_fpr"),
        compression=get(params, "convert.compression"),
    )  # fmt: skip


if __name__ == "__main__":
    run_stage("cwola_data", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
