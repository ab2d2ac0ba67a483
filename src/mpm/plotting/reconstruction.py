"""Fig. 8 (masked-jet reconstructions per backbone) and the SSFM whole-jet generation figure,
drawn from the samples of the `reconstruct` stage (`mpm.evaluation.samples.load_samples`)."""

import matplotlib.pyplot as plt
import numpy as np

from mpm.plotting.style import (
    BACKBONE_COLOURS,
    BACKBONE_NAMES,
    FEATURE_LABELS,
    label,
    use_style,
)

AXES = tuple(FEATURE_LABELS[f] for f in ("pt", "deta", "dphi"))


def _bins(values: np.ndarray, feature: int) -> np.ndarray:
    if feature == 0:  # pT spans decades
        low = max(float(values.min()), 1e-2)
        return np.geomspace(low, float(values.max()) * 1.01, 16)
    low, high = float(values.min()), float(values.max())
    pad = 0.05 * (high - low) + 1e-3
    return np.linspace(low - pad, high + pad, 16)


def draw_reconstructions(samples: dict) -> plt.Figure:
    """One row per jet of `samples`, one column per feature: the original jet (grey), its
    surviving constituents (blue) and, as lines, surviving + reconstructed per model."""
    use_style()
    mask, dropped, raw = samples["mask"], samples["dropped"], samples["raw"]
    reconstructions = samples["reconstructions"]
    owner = np.nonzero(dropped)[0]  # the jet of each dropped constituent, order of csts[dropped]
    n_jets = len(mask)
    fig, axes = plt.subplots(n_jets, 3, figsize=(19, 5.5 * n_jets), squeeze=False)
    for j in range(n_jets):
        original = raw[j][mask[j], :3]
        surviving = raw[j][mask[j] & ~dropped[j], :3]
        for f, ax in enumerate(axes[j]):
            bins = _bins(original[:, f], f)
            ax.hist(original[:, f], bins, color="0.75", label="original")
            ax.hist(surviving[:, f], bins, color="tab:blue", alpha=0.45, label="surviving")
            for name, rec in reconstructions.items():
                values = np.concatenate([surviving[:, f], rec[owner == j, f]])
                ax.hist(values, bins, histtype="step", lw=2.2, label=BACKBONE_NAMES.get(name, name),
                        color=BACKBONE_COLOURS.get(name))  # fmt: skip
            if f == 0:
                ax.set_xscale("log")
            ax.set_xlabel(AXES[f])
            ax.set_ylabel(f"jet {j + 1}: constituents")
            ax.set_ylim(top=ax.get_ylim()[1] * 1.25)  # room for the note below
            note = f"{int(mask[j].sum())} constituents\n{int(dropped[j].sum())} masked"
            ax.text(0.04, 0.95, note, transform=ax.transAxes, va="top", fontsize=13)
            label(ax)
        if j == 0:
            axes[0, 2].legend(fontsize=13, loc="upper right")
    fig.tight_layout()
    return fig


def draw_generation(generation: dict) -> plt.Figure:
    """SSFM whole jets from nothing (D_f = 0) against real jets: jet mass and constituent pT."""
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    panels = (("jet_mass", "jet mass [GeV]", np.linspace), ("cst_pt", AXES[0], np.geomspace))
    for ax, (key, xlabel, spacing) in zip(axes, panels):
        real, generated = generation[key]["second"], generation[key]["generated"]
        low = max(float(np.percentile(real, 0.5)), 1e-2)
        bins = spacing(low, float(np.percentile(real, 99.5)), 31)
        ax.hist(real, bins, color="0.75", density=True, label="real jets")
        ax.hist(generated, bins, histtype="step", lw=2.2, density=True,
                color=BACKBONE_COLOURS["ssfm"], label="SSFM, $D_f = 0$")  # fmt: skip
        if spacing is np.geomspace:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        ax.legend(fontsize=14, title=f"{generation['metrics']['n_jets']} jets", title_fontsize=14)
        label(ax)
    fig.tight_layout()
    return fig
