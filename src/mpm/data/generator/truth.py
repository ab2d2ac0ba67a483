"""Truth information from the Pythia event record: resonance decay products and heavy hadrons."""

import numpy as np

from mpm.data.generator.pythia import NEUTRINOS, EventRecord

RESONANCES = (6, 23, 24, 25)  # t, Z, W, H
# Weakly decaying heavy-flavour hadrons have c*tau0 of 0.02-0.5 mm; excited states ~0.
WEAK_DECAY_MIN_TAU0_MM = 1e-3


def _quark_digits(pdg: np.ndarray) -> np.ndarray:
    """The three quark digits (n_q1, n_q2, n_q3) of hadron PDG ids, as columns."""
    a = np.abs(pdg)
    return np.stack([(a // 1000) % 10, (a // 100) % 10, (a // 10) % 10], axis=1)


def heavy_flavour(pdg: np.ndarray) -> np.ndarray:
    """5 for b hadrons, 4 for c hadrons (b wins), 0 otherwise."""
    digits = _quark_digits(pdg)
    hadron = np.abs(pdg) > 100
    return np.where(hadron & (digits == 5).any(1), 5, np.where(hadron & (digits == 4).any(1), 4, 0))


def decay_products(ev: EventRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible outgoing partons/leptons of the hard process that come from a resonance decay.

    Returns (rows, root_row, root_id): flat rows of the products in `ev`, the flat row of the
    top-most resonance each descends from (the first copy of e.g. the top for the b and the
    W's quarks), and that resonance's |id|. Neutrinos are left out: they are invisible.
    """
    rows = np.flatnonzero((np.abs(ev.status) == 23) & ~np.isin(np.abs(ev.id), NEUTRINOS))
    event = ev.event[rows]
    mother = ev.global_index(ev.mother1[rows], event)
    is_res = np.isin(np.abs(ev.id[mother]), RESONANCES)
    rows, event, root = rows[is_res], event[is_res], mother[is_res]
    # Climb through resonance copies and resonance parents (W <- t, W <- H). A few steps
    # suffice: the chains are short (recoil copies + one parent).
    for _ in range(16):
        parent = ev.global_index(ev.mother1[root], event)
        up = np.isin(np.abs(ev.id[parent]), RESONANCES) & (ev.mother1[root] > 0)
        if not up.any():
            break
        root = np.where(up, parent, root)
    return rows, root, np.abs(ev.id[root])


def weak_heavy_hadrons(ev: EventRecord) -> tuple[np.ndarray, np.ndarray]:
    """Rows of weakly decaying b and c hadrons and their flavour (5 or 4)."""
    flavour = heavy_flavour(ev.id)
    rows = np.flatnonzero((flavour > 0) & (ev.tau0 > WEAK_DECAY_MIN_TAU0_MM) & (ev.status < 0))
    return rows, flavour[rows]


def decay_z(ev: EventRecord, rows: np.ndarray) -> np.ndarray:
    """z of the decay vertex of decayed particles: the production z of their first daughter."""
    return ev.z[ev.global_index(ev.daughter1[rows], ev.event[rows])]
