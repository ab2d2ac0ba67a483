"""Physics sanity summaries of converted datasets (generated or real): the numbers behind the
`data_sanity` figure and metrics."""

from pathlib import Path

import numpy as np

from mpm.data import schema
from mpm.data.h5io import open_jets

MASS = schema.JET_FEATURES.index("mass")
N_CONSTITUENTS = schema.JET_FEATURES.index("n_constituents")
D0, D0_ERR = schema.CONTINUOUS_FEATURES.index("d0"), schema.CONTINUOUS_FEATURES.index("d0_err")
CHARGED_IDS = tuple(i for i in range(len(schema.PARTICLE_IDS)) if i not in schema.NEUTRAL_IDS)
SIGNIFICANCE_CUT = 3.0  # tracks with lifetime-signed S(d0) above this make the "tail"


def jetclass_arrays(path: Path, max_jets: int) -> dict[str, np.ndarray]:
    """Jet mass (soft-drop for JetClass), constituent multiplicity and label per jet."""
    with open_jets(path) as f:
        n = min(max_jets, len(f[schema.H5_LABELS]))
        jets = f[schema.H5_JETS][:n]
        return {
            "mass": jets[:, MASS],
            "n_constituents": jets[:, N_CONSTITUENTS],
            "label": f[schema.H5_LABELS][:n],
        }


def btag_arrays(path: Path, max_jets: int) -> dict[str, np.ndarray]:
    """Per track: lifetime-signed d0 significance and its jet's label; per jet: the number of
    secondary vertices (distinct vertex ids above 0) and the label."""
    with open_jets(path) as f:
        n = min(max_jets, len(f[schema.H5_LABELS]))
        csts, ids, mask = f[schema.H5_CONSTITUENTS][:n], f[schema.H5_IDS][:n], f[schema.H5_MASK][:n]
        vertex, label = f[schema.H5_VERTEX][:n], f[schema.H5_LABELS][:n]
    track = mask & np.isin(ids, CHARGED_IDS)
    significance = csts[..., D0][track] / csts[..., D0_ERR][track]
    owner = np.broadcast_to(np.arange(n)[:, None], mask.shape)[track]
    secondary = np.zeros((n, vertex.max(initial=0) + 1), bool)
    rows, cols = np.nonzero(mask & (vertex > 0))
    secondary[rows, vertex[rows, cols]] = True
    return {
        "significance": significance,
        "track_label": label[owner],
        "n_secondary_vertices": secondary.sum(1),
        "label": label,
    }


def summarise(jetclass: dict, btag: dict) -> dict:
    """Metrics: per JetClass class the median jet mass and mean multiplicity; per BTag flavour
    the fraction of tracks in the S(d0) > 3 tail and the mean number of secondary vertices."""
    out = {"jetclass": {}, "btag": {}}
    for i, name in enumerate(schema.JETCLASS_CLASSES):
        sel = jetclass["label"] == i
        if sel.any():
            out["jetclass"][name] = {
                "median_mass": round(float(np.median(jetclass["mass"][sel])), 2),
                "mean_multiplicity": round(float(jetclass["n_constituents"][sel].mean()), 2),
            }
    for i, name in enumerate(schema.BTAG_CLASSES):
        tracks, jets = btag["track_label"] == i, btag["label"] == i
        if jets.any():
            tail = btag["significance"][tracks] > SIGNIFICANCE_CUT
            out["btag"][name] = {
                "d0_significance_tail": round(float(tail.mean()) if tail.size else 0.0, 4),
                "mean_secondary_vertices": round(
                    float(btag["n_secondary_vertices"][jets].mean()), 3
                ),
            }
    return out
