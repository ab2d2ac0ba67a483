"""Fig. 4: the constituent features of JetClass and BTag side by side, raw (top row) and after
the quantile transform fitted on JetClass (bottom row), which is what the backbone sees. The
impact parameters are drawn for charged constituents only (neutral ones have none)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mpm.data import schema
from mpm.data.h5io import open_jets
from mpm.data.preprocess import load_preprocessor
from mpm.plotting.style import FEATURE_LABELS, label, use_style

IMPACT = set(schema.IMPACT_PARAMETER_FEATURES)
TAIL = 3.0  # |transformed value| beyond which a constituent counts as in the tails


def read_constituents(path: Path, max_jets: int, preprocessor: Path) -> dict[str, np.ndarray]:
    """Real constituents of the first `max_jets` jets: raw and transformed features [M, 7] and
    whether each is charged [M]."""
    with open_jets(path) as file:
        n = min(max_jets, file[schema.H5_LABELS].shape[0])
        csts, ids = file[schema.H5_CONSTITUENTS][:n], file[schema.H5_IDS][:n]
        mask = file[schema.H5_MASK][:n]
    transformed = load_preprocessor(preprocessor)(csts, ids, mask, np.random.default_rng(0))
    return {"raw": csts[mask], "transformed": transformed[mask],
            "charged": ~np.isin(ids[mask], schema.NEUTRAL_IDS)}  # fmt: skip


def _values(data: dict, kind: str, j: int) -> np.ndarray:
    values = data[kind][:, j]
    return values[data["charged"]] if j in IMPACT else values


def tail_fractions(datasets: dict[str, dict]) -> pd.DataFrame:
    """Per dataset and feature, the share of constituents the transform puts beyond |3|
    (a standard normal: 0.27%)."""
    return pd.DataFrame({
        name: {feature: float((np.abs(_values(data, "transformed", j)) > TAIL).mean())
               for j, feature in enumerate(schema.CONTINUOUS_FEATURES)}
        for name, data in datasets.items()
    })  # fmt: skip


def _raw_bins(values: list[np.ndarray], feature: str) -> tuple[np.ndarray, str]:
    pooled = np.concatenate(values)
    if feature in ("pt", "d0_err", "z0_err"):  # positive, over decades
        low = max(np.quantile(pooled, 0.001), 1e-4)
        return np.geomspace(low, pooled.max(), 50), "log"
    low, high = np.quantile(pooled, [0.001, 0.999])
    return np.linspace(low, high, 50), "linear"


def draw(datasets: dict[str, dict]) -> plt.Figure:
    """`datasets`: name -> `read_constituents` output; one column per feature."""
    use_style()
    features = schema.CONTINUOUS_FEATURES
    fig, axes = plt.subplots(2, len(features), figsize=(5 * len(features), 9.5))
    for j, feature in enumerate(features):
        raw = [_values(d, "raw", j) for d in datasets.values()]
        bins, scale = _raw_bins(raw, feature)
        for k, (name, data) in enumerate(datasets.items()):
            style = {"histtype": "step", "density": True, "lw": 2, "color": f"C{k}"}
            axes[0, j].hist(raw[k], bins, label=name, **style)  # 0.1% tails left out
            axes[1, j].hist(np.clip(_values(data, "transformed", j), -5, 5),
                            np.linspace(-5, 5, 51), label=name, **style)  # fmt: skip
        axes[0, j].set_xscale(scale)
        axes[0, j].set_xlabel(FEATURE_LABELS[feature] + (" (charged)" if j in IMPACT else ""))
        axes[1, j].set_xlabel(f"transformed {FEATURE_LABELS[feature].split(' [')[0]}")
        for ax in axes[:, j]:
            ax.set_yscale("log")
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
        label(ax, rlabel="")
    axes[0, 0].legend(fontsize=14)
    axes[1, 0].legend(fontsize=14, title="quantile transform\nfitted on JetClass",
                      title_fontsize=12)  # fmt: skip
    fig.tight_layout()
    return fig
