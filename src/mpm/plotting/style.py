"""HEP house style (mplhep) shared by every figure, and how figures are written."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402

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
    """Experiment-style label: bold project name, italic `llabel`, `rlabel` on the right."""
    mplhep.label.exp_label(exp=EXPERIMENT, llabel=llabel, rlabel=rlabel, ax=ax)


def save_figure(fig: plt.Figure, stem: str | Path, dpi: int = 90) -> list[Path]:
    """Write `fig` to `<stem>.pdf` and `<stem>.png`, each atomically; returns the paths."""
    paths = [Path(f"{stem}.{suffix}") for suffix in FORMATS]
    for path in paths:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=path.suffix[1:], dpi=dpi)
    plt.close(fig)
    return paths
