"""DVC stage `cwola_data`: one repeat's CWoLa dataset, --n-signal top jets injected (sec. 5.2.2).

Two random halves of the JetClass QCD training jets get the mixed labels 0 and 1, the top
jets join the second; a share of each is held out for validation; the test set is the pure
JetClass test QCD and top jets with true labels. The repeat's --seed (with the profile's
`seed`) draws the halves and the top jets. Params: `seed`, `finetune.cwola`.
"""

import argparse
from pathlib import Path

from mpm.cli import run_stage
from mpm.downstream.cwola import build_cwola
from mpm.params import fraction, get, non_negative_int, positive_float, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jetclass", default="data/processed/jetclass", help="converted JetClass")
    parser.add_argument("--n-signal", required=True, type=int, help="top jets injected")
    parser.add_argument("--seed", required=True, type=int, help="the repeat's seed")
    parser.add_argument("--out", required=True, help="dataset folder (train/val/test.h5)")


def body(params: dict, args: argparse.Namespace) -> None:
    cfg = "finetune.cwola"
    build_cwola(
        Path(args.jetclass),
        Path(args.out),
        n_signal=non_negative_int(args.n_signal, "--n-signal"),
        n_background=positive_int(get(params, f"{cfg}.n_background"), f"{cfg}.n_background",
                                  allow_none=True),
        val_fraction=fraction(get(params, f"{cfg}.val_fraction"), f"{cfg}.val_fraction"),
        n_test_per_class=positive_int(get(params, f"{cfg}.n_test_per_class"),
                                      f"{cfg}.n_test_per_class", allow_none=True),
        seed=[get(params, "seed"), non_negative_int(args.seed, "--seed")],
        min_background_at_fpr=positive_float(get(params, f"{cfg}.min_background_at_fpr"),
                                             f"{cfg}.min_background_at_fpr"),
        compression=get(params, "convert.compression"),
    )  # fmt: skip


if __name__ == "__main__":
    run_stage("cwola_data", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
