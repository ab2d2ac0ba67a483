"""The model-redesign ablation (paper Table 1) and the decoder-depth and mask-rate sweeps
(Fig. 5): the pre-training settings of each run, and the tables built from their probes.

Each Table 1 row adds one change to the row above it, starting from MPMv1 (Golling et al.). A
row is a list of `key.path=value` overrides on top of the profile's params (the syntax of
`dvc exp run -S`). Rows 1-6 are pre-trained shorter than the final backbones (params
`ablation.pretrain`; paper: 200k of 1M steps) with a 2-layer decoder and a 30% mask rate;
row 7 is the final setting, i.e. the profile's own backbones. Fig. 5 varies the decoder depth
or the mask rate of row 6 (k-means + ID). A profile trains the rows of
`ablation.table1_rows` (the smoke profile a subset). Every run is scored by the accuracy of a
class-attention head trained on its frozen backbone (JetClass; `probe`); `mpm.tables` builds
the tables.
"""

import copy
from pathlib import Path

import yaml

from mpm.errors import InputError
from mpm.params import get, non_negative_int, positive_int

MPMV1 = [
    "model.variant=bert",
    "model.encoder.layer=normformer",
    "model.encoder.features=kinematic",
    "model.encoder.ids=false",
    "model.encoder.registers=0",
    "model.decoder.depth=2",
    "mask_rate=0.3",
]

TABLE1_ROWS: list[tuple[str, list[str]]] = [
    ("MPMv1 using (pT, eta, phi)", MPMV1),
    ("+ updated transformer layers", [*MPMV1[:1], *MPMV1[2:]]),
    ("+ impact parameter features", [*MPMV1[:1], *MPMV1[3:]]),
    ("+ constituent ID feature and ID reconstruction task", [*MPMV1[:1], *MPMV1[4:]]),
    ("+ transformer as decoder (MAE)", MPMV1[4:]),
    ("+ registers", MPMV1[5:]),
    ("+ longer train + deeper decoder + 40% mask rate", []),
]
FINAL_ROW = len(TABLE1_ROWS)  # the profile's own backbones
TABLE1_BACKBONES = ("regression", "kmeans")
SWEEP_BASE_ROW = 6  # Fig. 5 varies one setting of this row (k-means + ID)
# The decoder curve (ablation.curve): the backbone whose Table 1 gap the decoder closes most
CURVE_BACKBONE = "regression"



def apply_overrides(params: dict, overrides: list[str]) -> dict:
    """A copy of `params` with `key.path=value` overrides applied (values parsed as YAML, as
    `dvc exp run -S` does)."""
    params = copy.deepcopy(params)
    for override in overrides:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return params


def table1_rows(params: dict) -> list[int]:
    """The Table 1 rows the profile trains (`ablation.table1_rows`), or a one-line InputError:
    distinct rows of 1-6 in order, with Fig. 5's base row among them."""
    rows = get(params, "ablation.table1_rows")
    valid = range(1, FINAL_ROW)
    rows_ok = isinstance(rows, list) and rows and all(
        isinstance(r, int) and not isinstance(r, bool) and r in valid for r in rows
    )
    if not rows_ok or rows != sorted(set(rows)):
        raise InputError(f"params: 'ablation.table1_rows' must list distinct rows of "
                         f"{valid.start}-{valid.stop - 1} in order, got {rows!r}")  # fmt: skip
    if SWEEP_BASE_ROW not in rows:
        raise InputError(f"params: 'ablation.table1_rows' must include row {SWEEP_BASE_ROW}, "
                         "the base of the Fig. 5 sweeps")  # fmt: skip
    return rows


def run_names(params: dict) -> list[str]:
    """The run folders of the ablation stages in dvc.yaml for these params: `<backbone>-row<N>`
    for Table 1, `kmeans-depth<D>` and `kmeans-mask<R>` for the Fig. 5 sweeps."""
    names = [f"{b}-row{row}" for b in TABLE1_BACKBONES for row in table1_rows(params)]
    names += [f"kmeans-depth{d}" for d in params["ablation"]["decoder_depths"]]
    return names + [f"kmeans-mask{r}" for r in params["ablation"]["mask_rates"]]


def run_params(
    params: dict, row: int, decoder_depth: int | None = None, mask_rate: float | None = None
) -> dict:
    """The params of one ablation run: Table 1 row `row` (1-6) with the shorter pre-training
    schedule, and optionally a swept decoder depth or mask rate (Fig. 5)."""
    overrides = list(TABLE1_ROWS[row - 1][1])
    overrides += [f"pretrain.{k}={v}" for k, v in params["ablation"]["pretrain"].items()]
    if decoder_depth is not None:
        overrides.append(f"model.decoder.depth={decoder_depth}")
    if mask_rate is not None:
        overrides.append(f"mask_rate={mask_rate}")
    return apply_overrides(params, overrides)



def curve_params(params: dict, row: int) -> dict:
    """The params of a decoder-curve run: Table 1 row `row` on the profile's own pre-training
    schedule, to `ablation.curve.steps` steps, checkpointed (and probed) every
    `ablation.curve.probe_every`."""
    curve = params["ablation"]["curve"]
    schedule = [f"pretrain.steps={curve['steps']}",
                f"pretrain.val_every_steps={curve['probe_every']}"]
    return apply_overrides(params, [*TABLE1_ROWS[row - 1][1], *schedule])


def validate_curve_params(params: dict) -> None:
    """One-line InputError for an invalid `ablation.curve`."""
    rows = get(params, "ablation.curve.rows")
    if not isinstance(rows, list) or any(r not in range(1, FINAL_ROW) for r in rows):
        raise InputError(f"params: 'ablation.curve.rows' must list rows of 1-{FINAL_ROW - 1}, "
                         f"got {rows!r}")  # fmt: skip
    steps = positive_int(get(params, "ablation.curve.steps"), "ablation.curve.steps")
    every = positive_int(get(params, "ablation.curve.probe_every"), "ablation.curve.probe_every")
    if every > steps:
        raise InputError("params: 'ablation.curve.probe_every' is above 'ablation.curve.steps'")


def probe_params(params: dict) -> dict:
    """Params whose fine-tuning recipe is the probe's: `finetune.recipe` with the steps and
    test jets of `ablation.probe`."""
    settings = params["ablation"]["probe"]
    return apply_overrides(params, [f"finetune.recipe.{key}={settings[key]}"
                                    for key in ("max_steps", "n_test_jets")])  # fmt: skip


def probe(backbone: Path, params: dict, data_dir: Path, preprocessor: Path, out_dir: Path) -> dict:
    """The metric of Table 1 and Fig. 5: a class-attention head (`finetune.head`) trained on
    JetClass on top of the frozen `backbone`; writes `out_dir/{metrics.json,predictions.csv}`."""
    from mpm.downstream.run import finetune  # here: the table and report stages need no torch

    settings = params["ablation"]["probe"]
    return finetune("jetclass", backbone, "frozen", settings["jets"], settings["seed"],
                    probe_params(params), data_dir, preprocessor, out_dir)  # fmt: skip


def validate_probe_params(params: dict) -> None:
    """One-line InputError for an invalid `ablation.probe` or fine-tuning recipe."""
    for key in ("jets", "max_steps"):
        positive_int(get(params, f"ablation.probe.{key}"), f"ablation.probe.{key}")
    non_negative_int(get(params, "ablation.probe.seed"), "ablation.probe.seed")
    positive_int(get(params, "ablation.probe.n_test_jets"), "ablation.probe.n_test_jets",
                 allow_none=True)  # fmt: skip
    if get(params, "ablation.probe.max_steps") < get(params, "finetune.recipe.val_every_steps"):
        # the probe keeps its best validated head: it must validate at least once
        raise InputError("params: 'ablation.probe.max_steps' is below "
                         "'finetune.recipe.val_every_steps'")  # fmt: skip
    from mpm.downstream.finetune import validate_params as validate_finetune

    validate_finetune(probe_params(params))
