"""BTag-like jets: ttbar at 14 TeV, anti-kT R=0.4, pT >= 20 GeV, |eta| < 2.5, charged tracks.

Flavour: b if a weakly decaying b hadron with pT > 5 GeV lies within dR < 0.3 of the jet axis,
else c for a c hadron, else light; the three flavours are kept in equal numbers. Tracks are the
reconstructed charged candidates with pT > 1 GeV within dR < 0.4 of the axis (jets without a
track are dropped). Per track we record its true production vertex; `trk_vtx_index` numbers the
distinct production vertices of the jet's tracks (0 = primary, then 1, 2, ... in pT order), and
the jet's weakly decaying b and c hadrons within dR < 0.4 are listed with the z of their decay
vertex, from which `convert` derives the track origin.
"""

import numpy as np

from mpm.data.generator.detector import Candidates, Detector
from mpm.data.generator.jets import Jets, cluster, near_jets
from mpm.data.generator.kinematics import pt_eta_phi
from mpm.data.generator.pythia import EventRecord, EventSource
from mpm.data.generator.truth import decay_z, weak_heavy_hadrons

RADIUS = 0.4
PT_MIN = 20.0
ETA_MAX = 2.5
TRACK_PT_MIN = 1.0
TRACK_DR = 0.4
LABEL_DR = 0.3
LABEL_HADRON_PT_MIN = 5.0
FLAVOURS = (0, 4, 5)  # jet_flav of light, c and b jets
SETTINGS = ["Beams:eCM = 14000", "Top:gg2ttbar = on", "Top:qqbar2ttbar = on"]


def _near_hadrons(ev: EventRecord, jets: Jets, rows: np.ndarray, max_dr: float):
    """(jet index, index into `rows`) of the truth particles at `rows` near each jet."""
    _, eta, phi = pt_eta_phi(ev.px[rows], ev.py[rows], ev.pz[rows])
    return near_jets(jets, ev.event[rows], eta, phi, max_dr)


def flavour_labels(ev: EventRecord, jets: Jets) -> np.ndarray:
    """jet_flav (5, 4 or 0) from the weakly decaying heavy hadrons near each jet."""
    rows, flavour = weak_heavy_hadrons(ev)
    hard = np.hypot(ev.px[rows], ev.py[rows]) > LABEL_HADRON_PT_MIN
    rows, flavour = rows[hard], flavour[hard]
    jet, item = _near_hadrons(ev, jets, rows, LABEL_DR)
    label = np.zeros(len(jets.event), np.int64)
    np.maximum.at(label, jet, flavour[item])  # b (5) beats c (4)
    return label


def _vertex_index(jet: np.ndarray, x, y, z, tol: float) -> np.ndarray:
    """Per track: 0 if produced at the origin, else 1, 2, ... per distinct production vertex
    of its jet, in order of first appearance."""
    primary = (np.abs(x) < tol) & (np.abs(y) < tol) & (np.abs(z) < tol)
    key = np.stack([jet, *(np.round(np.stack([x, y, z]) / tol).astype(np.int64))], axis=1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # Rank vertices by their first track within each jet, counting only secondary ones.
    first_track = first[inverse]
    out = np.zeros(len(jet), np.int64)
    sec = np.flatnonzero(~primary)
    if len(sec):
        order = np.lexsort((first_track[sec], jet[sec]))
        s_jet, s_first = jet[sec][order], first_track[sec][order]
        new = np.ones(len(order), bool)
        new[1:] = (s_jet[1:] != s_jet[:-1]) | (s_first[1:] != s_first[:-1])
        counter = np.cumsum(new)
        jet_start = np.ones(len(order), bool)
        jet_start[1:] = s_jet[1:] != s_jet[:-1]
        base = np.maximum.accumulate(np.where(jet_start, counter - 1, 0))
        out[sec[order]] = counter - base
    return out


def jet_arrays(
    ev: EventRecord, cands: Candidates, jets: Jets, flav: np.ndarray, tol: float
) -> dict:
    """Tracks, hadrons (flat, jet by jet, with their counts) and jet scalars, in the BTag
    branch naming without prefixes: {"trk", "hadron", "counts": {"trk", "hadron"}, "jet"}."""
    track_rows = np.flatnonzero((cands.charge != 0) & (cands.pt > TRACK_PT_MIN))
    jet, item = near_jets(
        jets, cands.event[track_rows], cands.eta[track_rows], cands.phi[track_rows], TRACK_DR
    )
    t = track_rows[item]
    order = np.lexsort((-cands.pt[t], jet))  # jet by jet, pT descending
    jet, t = jet[order], t[order]
    truth = cands.truth[t]
    x, y, z = ev.x[truth], ev.y[truth], ev.z[truth]
    pt, eta = cands.pt[t], cands.eta[t]
    trk = {
        "pt": pt,
        "eta": eta,
        "phi": cands.phi[t],
        "ctgtheta": np.sinh(eta),
        "charge": cands.charge[t],
        "pdg_id": cands.pdg_id[t],
        "pythia_i": ev.index[truth],
        "d0": cands.d0[t],
        "z0": cands.z0[t],
        "d0err": cands.d0err[t],
        "z0err": cands.z0err[t],
        "pterr": cands.pt_err[t],
        "prod_x": x,
        "prod_y": y,
        "prod_z": z,
        "vtx_index": _vertex_index(jet, x, y, z, tol),
    }
    n_trks = np.bincount(jet, minlength=len(jets.event))

    h_rows, _ = weak_heavy_hadrons(ev)
    h_jet, h_item = _near_hadrons(ev, jets, h_rows, TRACK_DR)
    r = h_rows[h_item]
    hadron = {"pdgid": ev.id[r], "z": decay_z(ev, r)}
    n_hadrons = np.bincount(h_jet, minlength=len(jets.event))

    scalars = {
        "jet_pt": jets.pt,
        "jet_eta": jets.eta,
        "jet_phi": jets.phi,
        "jet_M": jets.mass,
        "jet_flav": flav,
    }
    return {
        "trk": trk,
        "hadron": hadron,
        "counts": {"trk": n_trks, "hadron": n_hadrons},
        "jet": scalars,
    }


def select(table: dict, keep: np.ndarray) -> dict:
    """The jets of a `jet_arrays` table where `keep` is True."""
    out = {"jet": {k: v[keep] for k, v in table["jet"].items()}, "counts": {}}
    for name, counts in table["counts"].items():
        owner = np.repeat(np.arange(len(counts)), counts)
        out[name] = {k: v[keep[owner]] for k, v in table[name].items()}
        out["counts"][name] = counts[keep]
    return out


def concatenate(tables: list[dict]) -> dict:
    """Tables of consecutive jets joined into one."""
    return {
        group: {k: np.concatenate([t[group][k] for t in tables]) for k in tables[0][group]}
        for group in tables[0]
    }


def generate_chunk(
    n_per_flavour: int,
    seed: int,
    physics_settings: list[str],
    detector: Detector,
    origin_tol_mm: float,
    events_per_batch: int,
    rng: np.random.Generator,
) -> tuple[dict, int]:
    """`n_per_flavour` jets of each flavour: (a `jet_arrays` table, events generated)."""
    source = EventSource([*SETTINGS, *physics_settings], seed)
    tables, have = [], dict.fromkeys(FLAVOURS, 0)
    while min(have.values()) < n_per_flavour:
        ev = source.next(events_per_batch)
        cands = detector.reconstruct(ev, rng)
        jets = cluster(cands, RADIUS, PT_MIN)
        jets = jets.select(np.abs(jets.eta) < ETA_MAX)
        flav = flavour_labels(ev, jets)
        table = jet_arrays(ev, cands, jets, flav, origin_tol_mm)
        keep = table["counts"]["trk"] > 0
        for f in FLAVOURS:  # the first jets of each flavour, in event order
            is_f = keep & (flav == f)
            keep &= ~is_f | (np.cumsum(is_f) <= n_per_flavour - have[f])
            have[f] += int((keep & (flav == f)).sum())
        tables.append(select(table, keep))
    return concatenate(tables), source.events
