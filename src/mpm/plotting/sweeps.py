"""Fig. 5: the probe accuracy of the k-means + ID backbone against the decoder depth (top) and
the mask rate (bottom), next to the Random init probe, from the sweep table of the
`ablation_tables` stage."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator, NullLocator

from mpm.errors import InputError
from mpm.plotting.style import BACKBONE_COLOURS, BACKBONE_NAMES, label, use_style

AXES = {"decoder_depth": "Decoder depth", "mask_rate": "Mask rate"}
COLUMNS = ("sweep", "value", "accuracy", "error", "steps")
REFERENCE = "random_init"  # the sweep-table line of the Random init probe


def read_sweeps(path: Path) -> pd.DataFrame:
    """The sweep table (sweeps.csv), checked for the columns and sweeps Fig. 5 draws."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)}")
    absent = [s for s in (*AXES, REFERENCE) if s not in set(table["sweep"])]
    if absent:
        raise InputError(f"{path}: no '{', '.join(absent)}' sweep")
    return table


def draw(table: pd.DataFrame) -> plt.Figure:
    """One panel per sweep: accuracy (%) of the class-attention probe on the frozen backbone,
    with the binomial error of its test set, and the Random init probe as a band."""
    use_style()
    fig, axes = plt.subplots(2, 1, figsize=(9, 11))
    runs = table[table["sweep"] != REFERENCE]
    steps = ", ".join(map(str, sorted(set(runs["steps"]))))
    random = table[table["sweep"] == REFERENCE].iloc[0]
    for ax, (sweep, name) in zip(axes, AXES.items()):
        points = runs[runs["sweep"] == sweep].sort_values("value")
        ax.errorbar(points["value"], 100 * points["accuracy"], 100 * points["error"], fmt="o-",
                    color=BACKBONE_COLOURS["kmeans"], capsize=3,
                    label=f"K-Means + ID, {steps} steps, frozen")  # fmt: skip
        centre, error = 100 * random["accuracy"], 100 * random["error"]
        ax.axhspan(centre - error, centre + error, color=BACKBONE_COLOURS["random"], alpha=0.15,
                   lw=0)  # fmt: skip
        ax.axhline(centre, color=BACKBONE_COLOURS["random"], ls="--",
                   label=BACKBONE_NAMES["random"])  # fmt: skip
        ax.set_xlabel(name)
        ax.set_ylabel("Accuracy [%]")
        if sweep == "decoder_depth":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.xaxis.set_minor_locator(NullLocator())
        ax.margins(y=0.3)
        ax.legend(loc="lower center", fontsize="small")
        label(ax, rlabel="JetClass")
    fig.tight_layout()
    return fig
