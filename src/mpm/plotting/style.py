"""HEP house style (mplhep) shared by every figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mplhep  # noqa: E402

EXPERIMENT = "MPMv2"


def use_style() -> None:
    mplhep.style.use("CMS")
    # Offline machines may lack the style's TeX Gyre fonts; DejaVu is always there.
    plt.rcParams["font.family"] = "DejaVu Sans"


def label(ax, llabel: str = "Simulation", rlabel: str = "") -> None:
    """Experiment-style label: bold project name, italic `llabel`, `rlabel` on the right."""
    mplhep.label.exp_label(exp=EXPERIMENT, llabel=llabel, rlabel=rlabel, ax=ax)
