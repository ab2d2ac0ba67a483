"""JetClass-like jets: 10 classes from Pythia8 at 13 TeV, anti-kT R=0.8, 500 < pT < 1000 GeV.

Each class is a Pythia process card plus a truth rule. Signal jets are kept only when every
visible decay product of one resonance (the quarks, gluons and charged lepton; neutrinos are
invisible) lies within R of the jet axis, as in JetClass. QCD jets come from Z(->nunu)+jet and
need no matching. The resonances are produced recoiling against a parton with pTHatMin just
below the jet window, so that few events are wasted.
"""

from dataclasses import dataclass

import numpy as np

from mpm.data.generator.detector import (
    CHARGED_HADRON,
    ELECTRON,
    MUON,
    NEUTRAL_HADRON,
    PHOTON,
    Candidates,
    Detector,
)
from mpm.data.generator.jets import Jets, cluster, same_event_pairs, substructure
from mpm.data.generator.kinematics import delta_r, pt_eta_phi
from mpm.data.generator.pythia import EventRecord, EventSource
from mpm.data.generator.truth import decay_products

RADIUS = 0.8
PT_RANGE = (500.0, 1000.0)
ETA_MAX = 2.0
MAX_PARTICLES = 128
HADRONIC_W = "24:onIfAny = 1 2 3 4 5"

_HIGGS = [
    "HiggsSM:gg2Hg(l:t) = on",
    "HiggsSM:qg2Hq(l:t) = on",
    "HiggsSM:qqbar2Hg(l:t) = on",
    "25:onMode = off",
]
_Z_JET = ["WeakBosonAndParton:qqbar2gmZg = on", "WeakBosonAndParton:qg2gmZq = on"]
_Z_JET += ["WeakZ0:gmZmode = 2", "23:onMode = off"]
_W_JET = ["WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", "24:onMode = off"]
_TTBAR = ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off"]


@dataclass(frozen=True)
class JetClassProcess:
    settings: tuple[str, ...]
    resonance: int | None  # |PDG id| of the resonance whose products must be in the jet


def _h_to_lnuqq(lepton_sign: str) -> tuple[str, ...]:
    # One W -> l nu (e, mu), the other -> qq'; which W is leptonic alternates between chunks
    # so that the sample is charge-symmetric.
    hadron_sign = "Neg" if lepton_sign == "Pos" else "Pos"
    return (
        *_HIGGS,
        "25:onIfMatch = 24 -24",
        "24:onMode = off",
        f"24:on{lepton_sign}IfAny = 11 13",
        f"24:on{hadron_sign}IfAny = 1 2 3 4 5",
    )


def process(label: str, chunk: int) -> JetClassProcess:
    """Pythia card and truth rule for a JetClass class name (schema.JETCLASS_CLASSES)."""
    if label == "QCD":
        return JetClassProcess((*_Z_JET, "23:onIfAny = 12 14 16"), None)
    if label in ("Hbb", "Hcc", "Hgg"):
        quark = {"Hbb": "5 -5", "Hcc": "4 -4", "Hgg": "21 21"}[label]
        return JetClassProcess((*_HIGGS, f"25:onIfMatch = {quark}"), 25)
    if label == "H4q":
        return JetClassProcess(
            (*_HIGGS, "25:onIfMatch = 24 -24", "24:onMode = off", HADRONIC_W), 25
        )
    if label == "Hqql":
        return JetClassProcess(_h_to_lnuqq("Pos" if chunk % 2 == 0 else "Neg"), 25)
    if label == "Zqq":
        return JetClassProcess((*_Z_JET, "23:onIfAny = 1 2 3 4 5"), 23)
    if label == "Wqq":
        return JetClassProcess((*_W_JET, HADRONIC_W), 24)
    if label == "Tbqq":
        return JetClassProcess((*_TTBAR, HADRONIC_W), 6)
    if label == "Tbl":
        return JetClassProcess((*_TTBAR, "24:onIfAny = 11 13"), 6)
    raise ValueError(f"unknown JetClass class '{label}'")


def matched_jets(ev: EventRecord, jets: Jets, resonance: int | None) -> np.ndarray:
    """Mask of jets holding every visible decay product of one resonance of that |id|."""
    if resonance is None:
        return np.ones(len(jets.event), bool)
    rows, root, root_id = decay_products(ev)
    rows, root = rows[root_id == resonance], root[root_id == resonance]
    if len(rows) == 0 or len(jets.event) == 0:
        return np.zeros(len(jets.event), bool)
    # Every (jet, product) pair of the same event; rows are in event order.
    jet_of_pair, prod = same_event_pairs(jets.event, ev.event[rows])
    p_row = rows[prod]
    _, p_eta, p_phi = pt_eta_phi(ev.px[p_row], ev.py[p_row], ev.pz[p_row])
    inside = delta_r(p_eta, p_phi, jets.eta[jet_of_pair], jets.phi[jet_of_pair]) < RADIUS
    # A (jet, resonance) pair matches when none of the resonance's products is outside.
    key = jet_of_pair * len(ev.id) + root[prod]
    keys, inverse = np.unique(key, return_inverse=True)
    outside = np.bincount(inverse, weights=~inside, minlength=len(keys))
    matched = np.zeros(len(jets.event), bool)
    matched[keys[outside == 0] // len(ev.id)] = True
    return matched


def jet_arrays(cands: Candidates, jets: Jets) -> tuple[dict, dict]:
    """Per-particle (flat, jet by jet, pT-descending, at most 128) and per-jet arrays in the
    JetClass branch naming (without the `part_` prefix)."""
    rows, counts = jets.constituents, jets.n_constituents
    owner = np.repeat(np.arange(len(counts)), counts)
    pt = cands.pt[rows]
    order = np.lexsort((-pt, owner))
    position = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = order[position < MAX_PARTICLES]
    rows, owner = rows[keep], owner[keep]
    n_kept = np.minimum(counts, MAX_PARTICLES)

    structure = substructure(
        cands.px[jets.constituents],
        cands.py[jets.constituents],
        cands.pz[jets.constituents],
        cands.e[jets.constituents],
        counts,
        RADIUS,
    )
    jet_eta, jet_phi = jets.eta, jets.phi
    eta, phi, kind = cands.eta[rows], cands.phi[rows], cands.kind[rows]
    part = {
        "px": cands.px[rows],
        "py": cands.py[rows],
        "pz": cands.pz[rows],
        "energy": cands.e[rows],
        # JetClass flips d_eta for negative-eta jets.
        "deta": np.where(jet_eta[owner] >= 0, 1.0, -1.0) * (eta - jet_eta[owner]),
        "dphi": np.mod(phi - jet_phi[owner] + np.pi, 2 * np.pi) - np.pi,
        "d0val": cands.d0[rows],
        "d0err": cands.d0err[rows],
        "dzval": cands.z0[rows],
        "dzerr": cands.z0err[rows],
        "charge": cands.charge[rows],
        "isChargedHadron": kind == CHARGED_HADRON,
        "isNeutralHadron": kind == NEUTRAL_HADRON,
        "isPhoton": kind == PHOTON,
        "isElectron": kind == ELECTRON,
        "isMuon": kind == MUON,
    }
    jet = {
        "jet_pt": jets.pt,
        "jet_eta": jet_eta,
        "jet_phi": jet_phi,
        "jet_energy": jets.e,
        "jet_nparticles": n_kept,
        **{f"jet_{k}": v for k, v in structure.items()},
    }
    return part, jet


def generate_chunk(
    label: str,
    n_jets: int,
    seed: int,
    chunk: int,
    physics_settings: list[str],
    detector: Detector,
    pt_hat_min: float,
    events_per_batch: int,
    rng: np.random.Generator,
) -> tuple[dict, dict, int]:
    """`n_jets` selected jets of one class: (particles, jets, events generated)."""
    proc = process(label, chunk)
    settings = ["Beams:eCM = 13000", f"PhaseSpace:pTHatMin = {pt_hat_min}"]
    source = EventSource([*settings, *proc.settings, *physics_settings], seed)
    parts, jet_tables, have = [], [], 0
    while have < n_jets:
        ev = source.next(events_per_batch)
        cands = detector.reconstruct(ev, rng)
        jets = cluster(cands, RADIUS, PT_RANGE[0])
        pt, eta = jets.pt, jets.eta
        window = (pt > PT_RANGE[0]) & (pt < PT_RANGE[1]) & (np.abs(eta) < ETA_MAX)
        keep = window & matched_jets(ev, jets, proc.resonance)
        keep &= np.cumsum(keep) <= n_jets - have  # the first jets in event order
        if keep.any():
            part, jet = jet_arrays(cands, jets.select(keep))
            parts.append(part)
            jet_tables.append(jet)
            have += int(keep.sum())
    part = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    jet = {k: np.concatenate([j[k] for j in jet_tables]) for k in jet_tables[0]}
    return part, jet, source.events
