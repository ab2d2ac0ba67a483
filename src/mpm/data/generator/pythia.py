"""Pythia8 event generation into flat numpy arrays, with no per-particle Python loop.

`Pythia.nextBatch` returns a batch of whole event records as an awkward array; we flatten it
into one `EventRecord` (numpy arrays over all particles of the batch, plus per-event counts)
and add the particle-data properties the record lacks (charge, nominal lifetime) through a
table lookup over the distinct ids.
"""

from dataclasses import dataclass

import awkward as ak
import numpy as np
import pythia8mc

NEUTRINOS = (12, 14, 16)
# Pythia's seed range is [0, 900000000]; 0 would mean "seed from the clock".
MAX_PYTHIA_SEED = 900_000_000

_QUIET = [
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowInfo = 0",
]


def physics_settings(physics: dict) -> list[str]:
    """Pythia switches from the `generate.physics` params group.

    Decays are Pythia's defaults: K0S, Lambda and the other weakly decaying strange baryons
    decay in flight (their tracks are displaced; the detector drops those produced outside
    the tracker), while charged pions and kaons, K0L and neutrons are stable.
    """
    on_off = {True: "on", False: "off"}
    return [
        f"PartonLevel:MPI = {on_off[bool(physics['mpi'])]}",
        f"PartonLevel:ISR = {on_off[bool(physics['isr'])]}",
        f"PartonLevel:FSR = {on_off[bool(physics['fsr'])]}",
    ]


def make_pythia(settings: list[str], seed: int) -> pythia8mc.Pythia:
    """An initialised, quiet Pythia seeded with `seed` (1 .. MAX_PYTHIA_SEED)."""
    pythia = pythia8mc.Pythia("", False)
    for line in [*_QUIET, *settings, "Random:setSeed = on", f"Random:seed = {seed}"]:
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the setting '{line}'")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise with {settings}")
    return pythia


@dataclass
class EventRecord:
    """All particles of a batch of events, flat; `offsets[i]` is event i's first particle.

    Positions are in mm and momenta in GeV; `index` is the position in Pythia's event record
    (so `mother1`/`daughter1` are local to an event: add `offsets[event]` to use them here).
    """

    counts: np.ndarray
    event: np.ndarray
    index: np.ndarray
    id: np.ndarray
    status: np.ndarray
    mother1: np.ndarray
    daughter1: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    charge: np.ndarray
    tau0: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    def global_index(self, local: np.ndarray, event: np.ndarray) -> np.ndarray:
        """Flat position of the particle at event-record position `local` of `event`."""
        return self.offsets[event] + local


class _ParticleTable:
    """Charge and nominal c*tau0 (mm) per PDG id, cached across batches."""

    def __init__(self, pythia: pythia8mc.Pythia):
        self._data = pythia.particleData
        self._ids = np.zeros(0, np.int64)
        self._charge = np.zeros(0)
        self._tau0 = np.zeros(0)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        new = np.setdiff1d(np.unique(ids), self._ids)
        if len(new):
            ids_all = np.concatenate([self._ids, new])
            charge = np.concatenate([self._charge, [self._data.charge(int(i)) for i in new]])
            tau0 = np.concatenate([self._tau0, [self._data.tau0(int(i)) for i in new]])
            order = np.argsort(ids_all)
            self._ids, self._charge, self._tau0 = ids_all[order], charge[order], tau0[order]
        pos = np.searchsorted(self._ids, ids)
        return self._charge[pos], self._tau0[pos]


class EventSource:
    """Batches of events from one Pythia configuration."""

    def __init__(self, settings: list[str], seed: int):
        self.pythia = make_pythia(settings, seed)
        self._table = _ParticleTable(self.pythia)
        self.events = 0

    def next(self, n_events: int) -> EventRecord:
        prt = self.pythia.nextBatch(n_events).prt
        counts = ak.to_numpy(ak.num(prt)).astype(np.int64)
        self.events += len(counts)

        def flat(array, dtype=np.float64):
            return ak.to_numpy(ak.flatten(array)).astype(dtype)

        vertex = prt.vProd  # None for particles produced at the origin
        ids = flat(prt.id, np.int64)
        charge, tau0 = self._table.lookup(ids)
        return EventRecord(
            counts=counts,
            event=np.repeat(np.arange(len(counts)), counts),
            index=flat(ak.local_index(prt), np.int64),
            id=ids,
            status=flat(prt.status, np.int64),
            mother1=flat(prt.mother1, np.int64),
            daughter1=flat(prt.daughter1, np.int64),
            px=flat(prt.p.px),
            py=flat(prt.p.py),
            pz=flat(prt.p.pz),
            e=flat(prt.p.e),
            x=flat(ak.fill_none(vertex.px, 0.0)),
            y=flat(ak.fill_none(vertex.py, 0.0)),
            z=flat(ak.fill_none(vertex.pz, 0.0)),
            charge=charge,
            tau0=tau0,
        )


def pythia_seed(*keys: int) -> int:
    """A Pythia seed derived from integer keys (profile seed, sample, class, split, chunk)."""
    state = np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0]
    return int(state % MAX_PYTHIA_SEED) + 1
