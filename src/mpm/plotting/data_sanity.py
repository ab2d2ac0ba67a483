"""The data sanity figure: JetClass jet mass and multiplicity per class, BTag lifetime-signed
d0 significance and secondary-vertex count per flavour, with the sample checks written in."""

import matplotlib.pyplot as plt
import mplhep
import numpy as np

from mpm.data import schema
from mpm.plotting.style import label, use_style

# PDG masses (GeV) of the resonances whose peaks the resonant classes should show.
RESONANCE_MASSES = {"W": 80.4, "Z": 91.2, "H": 125.0, "t": 172.5}
FLAVOUR_COLOURS = {"light": "tab:blue", "charm": "tab:green", "bottom": "tab:red"}


def _resonance_lines(ax) -> None:
    for name, mass in RESONANCE_MASSES.items():
        ax.axvline(mass, color="grey", linestyle=":", linewidth=1)
        ax.text(
            mass + 2,
            0.97,
            name,
            transform=ax.get_xaxis_transform(),
            va="top",
            color="grey",
            fontsize=13,
        )


def _checks_text(summary: dict) -> tuple[str, str]:
    """The `checks` of `summarise` (and the leptonic classes' lepton fractions), as the text
    of the JetClass and the BTag panels."""
    checks, classes = summary["checks"], summary["jetclass"]
    leptons = [f"{c} {classes[c]['lepton_fraction']:.1%}" for c in ("Hqql", "Tbl") if c in classes]
    photons = checks["jetclass_photons_sharing_ecal_cell_fraction"]
    neutrals = checks["jetclass_neutral_hadrons_sharing_hcal_cell_fraction"]
    jetclass = (
        f"e/mu > 20 GeV: {', '.join(leptons)}\n"
        f"photons sharing an ECAL cell: {photons:.1e}\n"
        f"neutral hadrons sharing an HCAL cell: {neutrals:.1e}"
    )
    accuracy = checks["btag_flavour_accuracy_from_pt_eta_ntracks"]
    separation = checks["btag_min_secondary_vertex_separation_mm"]
    btag = (
        f"flavour from (pT, eta, tracks): {accuracy:.3f} (chance 0.333)\n"
        f"jets sharing a track: {checks['btag_shared_track_jet_fraction']:.1%}\n"
        f"closest secondary vertices: {'none' if separation is None else f'{separation:.2g} mm'}"
    )
    return jetclass, btag


def draw(jetclass: dict, btag: dict, source: str, summary: dict) -> plt.Figure:
    """The 2x2 sanity figure; `summary` is `summarise`'s."""
    use_style()
    fig, axes = plt.subplots(2, 2, figsize=(20, 16))
    colours = plt.get_cmap("tab10").colors
    mass_bins = np.linspace(0, 300, 61)
    mult_bins = np.arange(0, 131, 4)
    for i, name in enumerate(schema.JETCLASS_CLASSES):
        sel = jetclass["label"] == i
        style = {"color": colours[i], "label": name, "density": True, "linewidth": 1.8}
        mplhep.histplot(np.histogram(jetclass["mass"][sel], mass_bins), ax=axes[0, 0], **style)
        mplhep.histplot(
            np.histogram(jetclass["n_constituents"][sel], mult_bins), ax=axes[0, 1], **style
        )
    _resonance_lines(axes[0, 0])
    axes[0, 0].set(xlabel="Jet soft-drop mass [GeV]", ylabel="Normalised to unit area")
    axes[0, 1].set(xlabel="Number of constituents", ylabel="Normalised to unit area")
    jetclass_title = f"JetClass-like ({source})"
    axes[0, 0].legend(ncol=2, fontsize=14, loc="upper right", bbox_to_anchor=(1.0, 0.9),
                      title=jetclass_title, title_fontsize=15)  # fmt: skip
    axes[0, 1].legend(ncol=2, fontsize=14, loc="upper right", title=jetclass_title,
                      title_fontsize=15)  # fmt: skip

    sig_bins = np.linspace(-20, 40, 61)
    sv_bins = np.arange(-0.5, 6.5, 1)
    for i, name in enumerate(schema.BTAG_CLASSES):
        tracks, jets = btag["track_label"] == i, btag["label"] == i
        style = {"color": FLAVOUR_COLOURS[name], "label": f"{name} jets", "density": True}
        sig = np.clip(btag["significance"][tracks], sig_bins[0], sig_bins[-1])
        mplhep.histplot(np.histogram(sig, sig_bins), ax=axes[1, 0], linewidth=1.8, **style)
        mplhep.histplot(
            np.histogram(btag["n_secondary_vertices"][jets], sv_bins),
            ax=axes[1, 1],
            linewidth=1.8,
            **style,
        )
    axes[1, 0].set(
        xlabel=r"Lifetime-signed track $d_0/\sigma(d_0)$ (overflow in edge bins)",
        ylabel="Tracks, normalised",
        yscale="log",
    )
    axes[1, 1].set(
        xlabel="True secondary vertices per jet",
        ylabel="Jets, normalised",
        xticks=range(6),
    )
    for ax in axes[1]:
        ax.legend(fontsize=16, title=f"BTag-like ({source})", title_fontsize=15)
    text_box = {"fontsize": 13, "va": "bottom", "ha": "right",
                "bbox": {"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"}}  # fmt: skip
    jetclass_text, btag_text = _checks_text(summary)
    axes[0, 1].text(0.97, 0.35, jetclass_text, transform=axes[0, 1].transAxes, **text_box)
    axes[1, 1].text(0.97, 0.35, btag_text, transform=axes[1, 1].transAxes, **text_box)
    for ax in axes[0]:
        label(ax, rlabel="13 TeV")
    for ax in axes[1]:
        label(ax, rlabel="14 TeV")
    fig.tight_layout()
    return fig
