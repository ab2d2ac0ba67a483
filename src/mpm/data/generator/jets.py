"""Jet clustering and substructure with FastJet (and fjcontrib through the fastjet package)."""

import functools
import logging
import os
import sys
from dataclasses import dataclass

import awkward as ak
import fastjet
import numpy as np

from mpm.data.generator.detector import Candidates
from mpm.data.generator.kinematics import Momenta, delta_r

log = logging.getLogger(__name__)
# Soft drop as in CMS: beta = 0, z_cut = 0.1; N-subjettiness with one-pass kT axes and the
# normalised measure at beta = 1 (the Delphes/CMS defaults that JetClass's jet_tau* follow).
SOFT_DROP_BETA = 0.0
SOFT_DROP_ZCUT = 0.1
# Reclustering radius for grooming and axes: large enough that every constituent of an
# R <= 0.8 jet ends in the single exclusive jet (FastJet's SoftDrop does the same).
RECLUSTER_R = 5.0


@dataclass
class Jets(Momenta):
    """Jets of a batch of events, flat; constituents index the clustered Candidates."""

    event: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    n_constituents: np.ndarray
    constituents: np.ndarray  # flat candidate rows, jet by jet

    @property
    def mass(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.e**2 - self.px**2 - self.py**2 - self.pz**2, 0.0))

    def select(self, keep: np.ndarray) -> "Jets":
        """The jets where `keep` is True, with their constituents."""
        owner = np.repeat(np.arange(len(self.event)), self.n_constituents)
        return Jets(
            event=self.event[keep],
            px=self.px[keep],
            py=self.py[keep],
            pz=self.pz[keep],
            e=self.e[keep],
            n_constituents=self.n_constituents[keep],
            constituents=self.constituents[keep[owner]],
        )


@functools.cache
def _silence_banner() -> None:
    """FastJet prints its banner to stdout on the first clustering of each process, which
    breaks the progress bar; the Python package offers no switch, so cluster once with the
    stdout file descriptor pointed at /dev/null."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            particles = _four_vectors(*np.ones((4, 1)), np.array([1]))
            fastjet.ClusterSequence(particles, fastjet.JetDefinition(fastjet.antikt_algorithm, 1.0))
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _four_vectors(px, py, pz, e, counts) -> ak.Array:
    record = ak.zip({"px": px, "py": py, "pz": pz, "E": e}, with_name="Momentum4D")
    return ak.unflatten(record, counts)


def cluster(cands: Candidates, radius: float, pt_min: float) -> Jets:
    """Anti-kT jets of every event with pT > pt_min."""
    _silence_banner()
    particles = _four_vectors(cands.px, cands.py, cands.pz, cands.e, cands.counts)
    sequence = fastjet.ClusterSequence(
        particles, fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    )
    jets = sequence.inclusive_jets(min_pt=pt_min)
    local = sequence.constituent_index(min_pt=pt_min)  # [event][jet][constituent]
    jets_per_event = ak.to_numpy(ak.num(jets)).astype(np.int64)
    event = np.repeat(np.arange(len(jets_per_event)), jets_per_event)
    n_const = ak.to_numpy(ak.flatten(ak.num(local, axis=2))).astype(np.int64)
    offsets = np.cumsum(cands.counts) - cands.counts
    rows = ak.to_numpy(ak.flatten(local, axis=None)).astype(np.int64)
    rows += np.repeat(offsets[event], n_const)

    def flat(field):
        return ak.to_numpy(ak.flatten(jets[field])).astype(np.float64)

    return Jets(event, flat("px"), flat("py"), flat("pz"), flat("E"), n_const, rows)


def substructure(px, py, pz, e, counts, radius: float) -> dict[str, np.ndarray]:
    """Soft-drop mass and N-subjettiness tau_1..tau_4 of jets given by their constituents."""
    particles = _four_vectors(px, py, pz, e, counts)
    sequence = fastjet.ClusterSequence(
        particles, fastjet.JetDefinition(fastjet.cambridge_algorithm, RECLUSTER_R)
    )
    groomed = sequence.exclusive_jets_softdrop_grooming(
        njets=1, beta=SOFT_DROP_BETA, symmetry_cut=SOFT_DROP_ZCUT, R0=radius
    )
    taus = sequence.njettiness(njets=[1, 2, 3, 4], beta=1.0, R0=radius)
    taus = ak.to_numpy(taus).astype(np.float64).reshape(len(counts), 4)
    out = {"sdmass": ak.to_numpy(groomed.msoftdrop).astype(np.float64).reshape(len(counts))}
    out.update({f"tau{i + 1}": taus[:, i] for i in range(4)})
    return out


def same_event_pairs(jet_event: np.ndarray, item_event: np.ndarray):
    """(jet index, item index) of every jet-item pair in the same event; `item_event` sorted."""
    first = np.searchsorted(item_event, jet_event, side="left")
    n = np.searchsorted(item_event, jet_event, side="right") - first
    jet = np.repeat(np.arange(len(jet_event)), n)
    item = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + np.repeat(first, n)
    return jet, item


def closest_jets(jets: Jets, item_event, item_eta, item_phi, max_dr: float):
    """(jet index, item index) of the items within max_dr of a jet of their event, each item
    with its closest jet only (as in the real BTag data, where a track belongs to one jet)."""
    jet, item = same_event_pairs(jets.event, item_event)
    dr = delta_r(item_eta[item], item_phi[item], jets.eta[jet], jets.phi[jet])
    near = np.flatnonzero(dr < max_dr)
    by_item = near[np.lexsort((dr[near], item[near]))]  # item by item, closest jet first
    first = np.ones(len(by_item), bool)
    first[1:] = item[by_item[1:]] != item[by_item[:-1]]
    kept = np.sort(by_item[first])  # back in jet-by-jet order
    return jet[kept], item[kept]
