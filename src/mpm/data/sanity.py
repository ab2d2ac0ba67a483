"""Physics sanity summaries of the datasets (generated or real): the numbers behind the
`data_sanity` figure and metrics. Most come from the converted test files; the BTag track
sharing and vertex separations need the raw file's truth branches."""

from pathlib import Path

import awkward as ak
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from mpm.data import schema
from mpm.data.generator.detector import cell_indices
from mpm.data.generator.jets import same_event_pairs
from mpm.data.h5io import open_jets
from mpm.data.root_io import open_tree

PT, ETA, PHI = (schema.JET_FEATURES.index(k) for k in ("pt", "eta", "phi"))
MASS = schema.JET_FEATURES.index("mass")
N_CONSTITUENTS = schema.JET_FEATURES.index("n_constituents")
C_PT, C_DETA, C_DPHI = (schema.CONTINUOUS_FEATURES.index(k) for k in ("pt", "deta", "dphi"))
D0, D0_ERR = schema.CONTINUOUS_FEATURES.index("d0"), schema.CONTINUOUS_FEATURES.index("d0_err")
CHARGED_IDS = tuple(i for i in range(len(schema.PARTICLE_IDS)) if i not in schema.NEUTRAL_IDS)
LEPTONS = ("electron", "positron", "muon", "antimuon")
LEPTON_IDS = tuple(schema.PARTICLE_IDS.index(k) for k in LEPTONS)
PHOTON_ID = schema.PARTICLE_IDS.index("photon")
NEUTRAL_HADRON_ID = schema.PARTICLE_IDS.index("neutral_hadron")
SIGNIFICANCE_CUT = 3.0  # tracks with lifetime-signed S(d0) above this make the "tail"
LEPTON_PT_MIN = 20.0  # GeV: a leptonic jet "keeps its lepton" with an e or mu above this
# Calorimeter cells of the Delphes CMS card (JetClass's detector), (eta size, cells in phi):
# each cell makes at most one photon (ECAL) or neutral hadron (HCAL) in the real data.
ECAL_CELL = (0.0174, 360)
HCAL_CELL = (0.087, 72)
RAW_BTAG_BRANCHES = {
    "trk_pythia_i": "jagged_number",
    "trk_pt": "jagged_float",
    "trk_eta": "jagged_float",
    "trk_vtx_index": "jagged_number",
    **{f"trk_prod_{c}": "jagged_float" for c in "xyz"},
}


def jetclass_arrays(path: Path, max_jets: int, clip_angle: float | None) -> dict[str, np.ndarray]:
    """Per jet: mass (soft-drop for JetClass), constituent multiplicity, label and pT of the
    hardest e or mu (0 without); per photon (neutral hadron), whether another photon (neutral
    hadron) of its jet is in its ECAL (HCAL) cell. `clip_angle` is the conversion's
    d_eta/d_phi clip: clipped constituents, whose position is lost, are left out of the cells.
    """
    with open_jets(path) as f:
        n = min(max_jets, len(f[schema.H5_LABELS]))
        jets = f[schema.H5_JETS][:n]
        csts, ids, mask = f[schema.H5_CONSTITUENTS][:n], f[schema.H5_IDS][:n], f[schema.H5_MASK][:n]
        label = f[schema.H5_LABELS][:n]
    lepton_pt = np.where(mask & np.isin(ids, LEPTON_IDS), csts[..., C_PT], 0.0).max(1, initial=0.0)
    placed = mask.copy()
    if clip_angle is not None:
        placed &= (np.abs(csts[..., [C_DETA, C_DPHI]]) < clip_angle).all(-1)
    return {
        "mass": jets[:, MASS],
        "n_constituents": jets[:, N_CONSTITUENTS],
        "label": label,
        "lepton_pt": lepton_pt,
        "photon_shares_cell": _shares_a_cell(jets, csts, placed & (ids == PHOTON_ID), ECAL_CELL),
        "neutral_hadron_shares_cell": _shares_a_cell(
            jets, csts, placed & (ids == NEUTRAL_HADRON_ID), HCAL_CELL
        ),
    }


def _shares_a_cell(jets: np.ndarray, csts: np.ndarray, select: np.ndarray, cell) -> np.ndarray:
    """For each `select`ed constituent, whether another one of its jet is in its calorimeter
    cell (eta from the JetClass d_eta, sign-flipped for negative-eta jets). The float32
    positions put a constituent within ~1e-7 of a cell edge on either side: a 1e-5 effect."""
    rows, cols = np.nonzero(select)
    jet_eta, jet_phi = jets[rows, ETA].astype(np.float64), jets[rows, PHI].astype(np.float64)
    eta = jet_eta + np.where(jet_eta >= 0, 1.0, -1.0) * csts[rows, cols, C_DETA]
    phi = jet_phi + csts[rows, cols, C_DPHI]
    i_eta, i_phi = cell_indices(eta, phi, *cell)
    _, inverse, counts = np.unique(
        np.stack([rows, i_eta, i_phi], axis=1), axis=0, return_inverse=True, return_counts=True
    )
    return counts[inverse.reshape(-1)] > 1


def btag_arrays(path: Path, max_jets: int) -> dict[str, np.ndarray]:
    """Per track: lifetime-signed d0 significance and its jet's label; per jet: the number of
    secondary vertices (distinct vertex ids above 0) and the label."""
    with open_jets(path) as f:
        n = min(max_jets, len(f[schema.H5_LABELS]))
        csts, ids, mask = f[schema.H5_CONSTITUENTS][:n], f[schema.H5_IDS][:n], f[schema.H5_MASK][:n]
        vertex, label = f[schema.H5_VERTEX][:n], f[schema.H5_LABELS][:n]
        jets = f[schema.H5_JETS][:n]
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
        "kinematics": jets[:, [PT, ETA, N_CONSTITUENTS]],
    }


def btag_raw_arrays(path: Path, max_jets: int) -> dict[str, np.ndarray]:
    """The first `max_jets` jets of a raw BTag ROOT file: their track counts and, flat, each
    track's Pythia index, pT, eta, vertex index and production point (mm)."""
    file, tree = open_tree(path, schema.BTAG_TREE, RAW_BTAG_BRANCHES)
    with file:
        a = tree.arrays(list(RAW_BTAG_BRANCHES), entry_stop=max_jets, library="ak")
    out = {k.removeprefix("trk_"): ak.to_numpy(ak.flatten(a[k])) for k in RAW_BTAG_BRANCHES}
    out["counts"] = ak.to_numpy(ak.num(a["trk_pt"])).astype(np.int64)
    return out


def shared_track_jet_fraction(raw: dict) -> float:
    """Fraction of jets holding a track that another jet also holds (the same truth particle:
    equal Pythia index, pT and eta). 0 in the real data, where a track has one jet."""
    owner = np.repeat(np.arange(len(raw["counts"])), raw["counts"])
    key = np.stack([raw["pythia_i"].astype(np.float64), raw["pt"], raw["eta"]], axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    shared = counts[inverse.reshape(-1)] > 1
    return float(np.isin(np.arange(len(raw["counts"])), owner[shared]).mean())


def min_secondary_vertex_separation(raw: dict) -> float | None:
    """Smallest distance (mm) between the production points of two tracks of different
    secondary vertices of one jet; None without two secondary vertices in a jet."""
    owner = np.repeat(np.arange(len(raw["counts"])), raw["counts"])
    i, j = same_event_pairs(owner, owner)  # every ordered pair of tracks of one jet
    vtx = raw["vtx_index"]
    pair = (vtx[i] > 0) & (vtx[j] > 0) & (vtx[i] != vtx[j])  # i == j is never a pair
    if not pair.any():
        return None
    points = np.stack([raw["prod_x"], raw["prod_y"], raw["prod_z"]], axis=1)
    return float(np.linalg.norm(points[i[pair]] - points[j[pair]], axis=1).min())


def flavour_accuracy(kinematics: np.ndarray, label: np.ndarray) -> float:
    """Accuracy of a gradient-boosted classifier of the flavour from the jet (pT, eta, track
    count) alone, fitted on half the jets and scored on the other half: 1/3 when the
    flavours share one distribution, as in the flattened real BTag data."""
    half = len(label) // 2
    # One thread: OpenMP's spinning threads make it ~30x slower on a busy machine.
    with threadpool_limits(limits=1):
        clf = HistGradientBoostingClassifier(random_state=0).fit(kinematics[:half], label[:half])
        return float(clf.score(kinematics[half:], label[half:]))


def _mean(flags: np.ndarray) -> float:
    return round(float(flags.mean()), 6) if flags.size else 0.0


def summarise(jetclass: dict, btag: dict, btag_raw: dict) -> dict:
    """Metrics: per JetClass class the median jet mass, mean multiplicity and fraction of jets
    with an e or mu above 20 GeV; per BTag flavour the fraction of tracks in the S(d0) > 3
    tail and the mean number of secondary vertices; and the checks of the detector and
    sample definitions (`checks`): neutrals per calorimeter cell, the BTag flavours'
    kinematic separability, tracks shared by jets, secondary-vertex separations."""
    out = {"jetclass": {}, "btag": {}}
    for i, name in enumerate(schema.JETCLASS_CLASSES):
        sel = jetclass["label"] == i
        if sel.any():
            out["jetclass"][name] = {
                "median_mass": round(float(np.median(jetclass["mass"][sel])), 2),
                "mean_multiplicity": round(float(jetclass["n_constituents"][sel].mean()), 2),
                "lepton_fraction": round(
                    float((jetclass["lepton_pt"][sel] > LEPTON_PT_MIN).mean()), 4
                ),
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
    out["checks"] = {
        "jetclass_photons_sharing_ecal_cell_fraction": _mean(jetclass["photon_shares_cell"]),
        "jetclass_neutral_hadrons_sharing_hcal_cell_fraction": _mean(
            jetclass["neutral_hadron_shares_cell"]
        ),
        "btag_flavour_accuracy_from_pt_eta_ntracks": round(
            flavour_accuracy(btag["kinematics"], btag["label"]), 4
        ),
        "btag_shared_track_jet_fraction": round(shared_track_jet_fraction(btag_raw), 4),
        "btag_min_secondary_vertex_separation_mm": min_secondary_vertex_separation(btag_raw),
    }
    return out
