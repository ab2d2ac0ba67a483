"""The decoder curve: probe accuracy against pre-training steps for Table 1's row 4 (MLP
decoder) and row 5 (transformer decoder, MAE) of the regression backbone, from the
`ablation_curve` runs, with the Random init probe as a band; and where the two rows cross."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mpm.ablation import TABLE1_ROWS
from mpm.errors import InputError
from mpm.plotting.style import label, use_style
from mpm.tables import read_json, read_probe


def read_curves(curves_dir: Path) -> pd.DataFrame:
    """[row, step, accuracy, error] of every run under `curves_dir` (row<N>/curve.json and its
    probes' binomial errors)."""
    lines = []
    for run in sorted(Path(curves_dir).glob("row*/curve.json")):
        curve = read_json(run)
        for step in curve["probe_steps"]:
            probe = read_probe(run.parent / f"probe-step{step}")
            lines.append({"row": curve["row"], "step": step, "accuracy": probe["accuracy"],
                          "error": probe["error"]})  # fmt: skip
    if not lines:
        raise InputError(f"{curves_dir}: no decoder-curve runs (row<N>/curve.json)")
    return pd.DataFrame(lines)


def crossing(curves: pd.DataFrame, low: int, high: int) -> dict:
    """Row `high` minus row `low` at each probed step, with its error, and the first step from
    which the difference keeps the sign it ends with (None if it never changes sign)."""
    a = curves[curves["row"] == low].set_index("step")
    b = curves[curves["row"] == high].set_index("step")
    steps = sorted(set(a.index) & set(b.index))
    diff = [float(b.loc[s, "accuracy"] - a.loc[s, "accuracy"]) for s in steps]
    error = [float(np.hypot(a.loc[s, "error"], b.loc[s, "error"])) for s in steps]
    signs = np.sign(diff)
    changes = [i for i in range(1, len(steps)) if signs[i] != signs[i - 1]]
    return {"rows": [low, high], "steps": steps, "difference": [round(d, 4) for d in diff],
            "difference_error": [round(e, 4) for e in error],
            "crossing_step": steps[changes[-1]] if changes else None}  # fmt: skip


def draw(curves: pd.DataFrame, random: dict) -> plt.Figure:
    """Accuracy (%) against pre-training steps, one line per row with binomial error bars."""
    use_style()
    fig, ax = plt.subplots(figsize=(10, 7))
    for row, line in curves.groupby("row"):
        line = line.sort_values("step")
        ax.errorbar(line["step"], 100 * line["accuracy"], yerr=100 * line["error"], marker="o",
                    capsize=4, lw=2, label=f"Row {row}: {TABLE1_ROWS[row - 1][0]}")  # fmt: skip
    low, high = 100 * (random["accuracy"] - random["error"]), 100 * (random["accuracy"]
                                                                     + random["error"])  # fmt: skip
    ax.axhspan(low, high, color="grey", alpha=0.3, lw=0, label="Random init")
    ax.set_xlabel("Pre-training steps")
    ax.set_ylabel("Probe accuracy (%)")
    ax.legend(fontsize=13, loc="best", title="Regression backbone", title_fontsize=13)
    label(ax, rlabel="JetClass")
    fig.tight_layout()
    return fig
