"""HEP house style (mplhep) shared by every figure, and how figures are written."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402
from matplotlib.offsetbox import AnchoredOffsetbox, HPacker, TextArea  # noqa: E402

from mpm.atomic import atomic_file  # noqa: E402

EXPERIMENT = "MPMv2"
FORMATS = ("pdf", "png")

# The paper's backbone names, in its legend order, each with one colour across every figure.
BACKBONE_NAMES = {
    "regression": "Regression",
    "kmeans": "K-Means",
    "vqvae": "VQ-VAE",
    "flow": "CNF",
    "cfm": "CFM",
    "ssfm": "SSFM",
    "random": "Random init",
}
# CMS palette colours (Petroff), chosen so that no backbone takes the grey that figures use for
# real jets and no two look alike: CNF brown and CFM red instead of the cycle's plum and grey.
BACKBONE_COLOURS = {
    "regression": "#5790fc",  # blue
    "kmeans": "#f89c20",  # orange
    "vqvae": "#b9ac70",  # khaki
    "flow": "#a96b59",  # brown
    "cfm": "#e42536",  # red
    "ssfm": "#7a21dd",  # violet
    "random": "black",
}
FEATURE_LABELS = {  # axis labels of the constituent features (schema.CONTINUOUS_FEATURES)
    "pt": r"$p_\mathrm{T}$ [GeV]",
    "deta": r"$\Delta\eta$",
    "dphi": r"$\Delta\phi$",
    "d0": r"$d_0$ [mm]",
    "d0_err": r"$\sigma(d_0)$ [mm]",
    "z0": r"$z_0$ [mm]",
    "z0_err": r"$\sigma(z_0)$ [mm]",
}


def use_style() -> None:
    mplhep.style.use("CMS")
    # Offline machines may lack the style's TeX Gyre fonts; DejaVu is always there.
    plt.rcParams["font.family"] = "DejaVu Sans"


def label(ax, llabel: str = "Simulation", rlabel: str = "") -> None:
    """Experiment-style label above the axes, as mplhep's `exp_label` draws it: bold project
    name, italic `llabel`, `rlabel` on the right. Laid out by matplotlib's offsetbox at draw
    time: `exp_label` draws the whole figure twice per call to measure its text, which made
    six-panel figures take seconds."""
    size = plt.rcParams["font.size"]
    parts = [TextArea(EXPERIMENT, textprops={"fontweight": "bold", "fontsize": 1.3 * size})]
    if llabel:
        parts.append(TextArea(llabel, textprops={"fontstyle": "italic", "fontsize": size}))
    above = {"bbox_to_anchor": (0, 1.005), "bbox_transform": ax.transAxes}
    box = HPacker(children=parts, align="baseline", pad=0, sep=0.6 * size)
    ax.add_artist(AnchoredOffsetbox("lower left", child=box, pad=0, borderpad=0, frameon=False,
                                    **above))  # fmt: skip
    if rlabel:
        ax.text(1, 1.005, rlabel, transform=ax.transAxes, ha="right", va="bottom", fontsize=size)


def save_figure(fig: plt.Figure, stem: str | Path, dpi: int = 90) -> list[Path]:
    """Write `fig` to `<stem>.pdf` and `<stem>.png`, each atomically; returns the paths."""
    paths = [Path(f"{stem}.{suffix}") for suffix in FORMATS]
    for path in paths:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=dpi)
    plt.close(fig)
    return paths
