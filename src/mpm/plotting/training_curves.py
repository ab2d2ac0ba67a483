"""Training curves of the pre-training runs and the VQ-VAE tokenizer, one panel per run."""

import matplotlib.pyplot as plt
import pandas as pd

from mpm.plotting.style import BACKBONE_NAMES, label, use_style


def _losses(curve: pd.DataFrame) -> list[str]:
    """Loss names logged for both training and validation (lr and probes excluded)."""
    train = {c.split("/", 1)[1] for c in curve.columns if c.startswith("train/")}
    names = sorted(n for n in train if f"val/{n}" in curve.columns and n != "total")
    return sorted(names, key=lambda n: n != "id")  # the ID task first: the same colour everywhere


def draw(curves: dict[str, pd.DataFrame]) -> plt.Figure:
    """`curves`: run name -> its Lightning CSV log."""
    use_style()
    n = len(curves)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 5.5 * rows), squeeze=False)
    for ax, (name, curve) in zip(axes.flat, curves.items()):
        for i, loss in enumerate(_losses(curve)):
            train = curve[["step", f"train/{loss}"]].dropna()
            val = curve[["step", f"val/{loss}"]].dropna()
            colour = f"C{i}"
            ax.plot(train["step"], train[f"train/{loss}"], color=colour, alpha=0.5, lw=1.5)
            ax.plot(val["step"], val[f"val/{loss}"], "o-", color=colour, label=loss, lw=2)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (line: train, dots: validation)", fontsize=14)
        ax.legend(fontsize=14, title=BACKBONE_NAMES.get(name, name), title_fontsize=15)
        label(ax, rlabel="")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
