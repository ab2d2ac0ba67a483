"""The rows of the paper's Table 1 (model redesign ablation) as params settings.

Each row adds one change to the row above it, starting from MPMv1 (Golling et al.). A row is
a list of `dvc exp run -S` overrides on top of the profile's params, e.g.
`dvc exp run -S model.variant=bert -S model.encoder.layer=normformer ...`; the paper ran the
regression and k-means backbones of every row. Rows 1-6 use a 2-layer decoder and a 30% mask
rate; row 7 is the final MPMv2 setting (the profile itself). The paper also trained rows 1-6
five times shorter (200k of 1M steps): add `-S pretrain.steps=...` for that.
"""

import copy

import yaml

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
