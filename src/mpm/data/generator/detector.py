"""A simple, seeded CMS-like detector response: truth particles -> particle-flow candidates.

Every number comes from the `generate.detector` params group; the efficiencies, momentum and
energy resolutions and calorimeter cells are those of the Delphes CMS card
(`cards/delphes_card_CMS.tcl`), the detector JetClass was simulated with.

- Tracker (pT > track_pt_min, |eta| within the last track-efficiency edge, produced inside the
  tracker volume: transverse radius < tracker_radius, |z| < tracker_half_length): a charged
  particle is reconstructed as a track with the card's efficiency for its species (hadron,
  electron, muon), |eta| region and pT range; its pT is smeared log-normally (as Delphes does)
  with sigma(pT)/pT = a (+) b*pT per species and |eta| region. Tracks keep their true direction
  (no magnetic field).
- Impact parameters of tracks: the true transverse and longitudinal impact parameters of a
  straight line from the true production vertex (Pythia's, in mm) relative to the primary
  vertex at the origin, smeared by sigma = a (+) b/pT, with sigma recorded as the error.
  d0 follows the Delphes sign convention: d0 = (x*py - y*px)/pT, so the point of closest
  approach is d0*(sin(phi), -cos(phi)).
- Calorimeters, as the card's SimpleCalorimeter: photons and untracked electrons deposit in the
  ECAL, other untracked particles except muons in the HCAL. Deposits are summed per cell
  (ECAL 0.0174 x 1 degree, HCAL 0.087 x 5 degrees), the sum is smeared log-normally with the
  card's sigma(E), and a cell below its energy threshold or below `significance_min` sigma is
  lost; each surviving ECAL cell is one photon, each HCAL cell one neutral hadron, massless,
  placed uniformly at random inside its cell (the card's SmearTowerCenter). Tracked
  particles leave nothing in the calorimeters (a perfect particle-flow subtraction). No
  pile-up.
"""

from dataclasses import dataclass

import numpy as np

from mpm.data.generator.kinematics import Momenta
from mpm.data.generator.pythia import NEUTRINOS, EventRecord

# Candidate kinds, matching the JetClass is* flags.
PHOTON, NEUTRAL_HADRON, CHARGED_HADRON, ELECTRON, MUON = range(5)
# Track species of the card's efficiency and resolution formulas, in params order.
SPECIES = ("hadron", "electron", "muon")


@dataclass
class Candidates(Momenta):
    """Reconstructed candidates of a batch of events, flat, grouped by event."""

    counts: np.ndarray
    event: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    kind: np.ndarray
    charge: np.ndarray
    pdg_id: np.ndarray  # of the truth particle (a calorimeter cell's most energetic one)
    truth: np.ndarray  # flat position of that truth particle in the EventRecord
    d0: np.ndarray
    z0: np.ndarray
    d0err: np.ndarray
    z0err: np.ndarray
    pt_err: np.ndarray


def _quadrature(a, b) -> np.ndarray:
    return np.hypot(a, b)


def _region(edges, abs_eta) -> np.ndarray:
    """Index of the |eta| region (edges[i-1], edges[i]] of each value (the last one beyond)."""
    return np.minimum(np.searchsorted(edges, abs_eta), len(edges) - 1)


def _log_normal(mean, sigma, gauss) -> np.ndarray:
    """Log-normal values of the given mean and sigma from standard normal draws (Delphes's
    smearing: always positive)."""
    mean = np.maximum(mean, 1e-12)
    b = np.sqrt(np.log1p((sigma / mean) ** 2))
    return np.exp(np.log(mean) - 0.5 * b**2 + b * gauss)


def _species(abs_pdg: np.ndarray) -> np.ndarray:
    return np.select([abs_pdg == 11, abs_pdg == 13], [1, 2], 0)


def cell_indices(eta, phi, cell_eta: float, phi_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(eta, phi) index of the calorimeter cell of each position: cells `cell_eta` wide in eta
    and `phi_bins` around phi."""
    i_eta = np.floor(eta / cell_eta).astype(np.int64)
    i_phi = np.floor((phi + np.pi) / (2 * np.pi) * phi_bins).astype(np.int64) % phi_bins
    return i_eta, i_phi


@dataclass(frozen=True)
class Towers:
    """Surviving calorimeter cells: the index of each cell's most energetic deposit, its
    measured energy and position."""

    leading: np.ndarray
    energy: np.ndarray
    eta: np.ndarray
    phi: np.ndarray


@dataclass(frozen=True)
class Calorimeter:
    """sigma(E) = (p0 + p1 (|eta| - eta0)^2) sqrt((c E)^2 + s^2 E + n^2) per |eta| region."""

    abs_eta_edges: list
    stochastic: list  # s, GeV^1/2
    constant: list  # c
    noise: list  # n, GeV
    eta_shape: dict  # {"p0": [...], "p1": [...], "eta0": [...]}
    threshold: float  # GeV
    significance_min: float
    cell: dict  # {"eta": cell size in eta, "phi_bins": cells in 2 pi}

    def covers(self, abs_eta) -> np.ndarray:
        return abs_eta <= self.abs_eta_edges[-1]

    def sigma(self, energy, eta) -> np.ndarray:
        """The energy resolution in GeV at `energy` and `eta`."""
        abs_eta = np.abs(eta)
        r = _region(self.abs_eta_edges, abs_eta)
        p0, p1, eta0 = (np.asarray(self.eta_shape[k])[r] for k in ("p0", "p1", "eta0"))
        s, c, n = (np.asarray(v)[r] for v in (self.stochastic, self.constant, self.noise))
        return (p0 + p1 * (abs_eta - eta0) ** 2) * np.sqrt((c * energy) ** 2 + s**2 * energy + n**2)

    def towers(self, event, eta, phi, energy, gauss, u_eta, u_phi) -> Towers:
        """Deposits summed per (event, cell), smeared, thresholded and placed in their cell.

        The random draws used for a cell are those of its most energetic deposit, so every
        particle has its own draws whatever the cell content (the stream stays aligned).
        """
        cell_eta, phi_bins = self.cell["eta"], self.cell["phi_bins"]
        i_eta, i_phi = cell_indices(eta, phi, cell_eta, phi_bins)
        order = np.lexsort((-energy, i_phi, i_eta, event))  # cell by cell, hardest first
        e_o, i_o, j_o = event[order], i_eta[order], i_phi[order]
        first = np.ones(len(order), bool)
        first[1:] = (e_o[1:] != e_o[:-1]) | (i_o[1:] != i_o[:-1]) | (j_o[1:] != j_o[:-1])
        starts = np.flatnonzero(first)
        true_energy = np.add.reduceat(energy[order], starts) if len(starts) else np.zeros(0)
        leading = order[starts]
        centre_eta = (i_eta[leading] + 0.5) * cell_eta
        measured = _log_normal(true_energy, self.sigma(true_energy, centre_eta), gauss[leading])
        keep = measured > self.threshold
        keep &= measured > self.significance_min * self.sigma(measured, centre_eta)
        leading = leading[keep]
        return Towers(
            leading=leading,
            energy=measured[keep],
            eta=(i_eta[leading] + u_eta[leading]) * cell_eta,
            phi=(i_phi[leading] + u_phi[leading]) * (2 * np.pi / phi_bins) - np.pi,
        )


@dataclass(frozen=True)
class Detector:
    track_pt_min: float
    tracker_radius: float  # mm
    tracker_half_length: float  # mm
    track_efficiency: dict  # {"abs_eta_edges", "pt_edges", species: [eta region][pT bin]}
    track_pt_resolution: dict  # {"abs_eta_edges", species: {"a": [...], "b": [...]}}
    d0_resolution: dict  # {"a": mm, "b": mm*GeV} sigma = a (+) b/pT
    z0_resolution: dict
    ecal: Calorimeter
    hcal: Calorimeter

    @classmethod
    def from_params(cls, cfg: dict) -> "Detector":
        calorimeters = {k: Calorimeter(**cfg[k]) for k in ("ecal", "hcal")}
        return cls(**{**cfg, **calorimeters})

    def _efficiency(self, species, pt, abs_eta, radius, abs_z) -> np.ndarray:
        eff = self.track_efficiency
        table = np.array([eff[name] for name in SPECIES])  # [species][eta region][pT bin]
        r = _region(eff["abs_eta_edges"], abs_eta)
        value = table[species, r, np.searchsorted(eff["pt_edges"], pt)]
        inside = (abs_eta <= eff["abs_eta_edges"][-1]) & (pt > self.track_pt_min)
        inside &= (radius < self.tracker_radius) & (abs_z < self.tracker_half_length)
        return np.where(inside, value, 0.0)

    def _pt_resolution(self, species, pt, abs_eta) -> np.ndarray:
        """sigma(pT)/pT, at most 1 (Delphes caps it there)."""
        res = self.track_pt_resolution
        r = _region(res["abs_eta_edges"], abs_eta)
        a = np.array([res[name]["a"] for name in SPECIES])[species, r]
        b = np.array([res[name]["b"] for name in SPECIES])[species, r]
        return np.minimum(_quadrature(a, b * pt), 1.0)

    def reconstruct(self, ev: EventRecord, rng: np.random.Generator) -> Candidates:
        final = (ev.status > 0) & ~np.isin(np.abs(ev.id), NEUTRINOS)
        idx = np.flatnonzero(final)
        n = len(idx)
        pid = ev.id[idx]
        apid = np.abs(pid)
        species = _species(apid)
        px, py, pz, e = ev.px[idx], ev.py[idx], ev.pz[idx], ev.e[idx]
        pt = np.hypot(px, py)
        eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
        phi = np.arctan2(py, px)
        abs_eta = np.abs(eta)
        charged = ev.charge[idx] != 0
        event = ev.event[idx]

        # The same draws per particle, whatever its fate, keep the stream aligned.
        u_track = rng.random(n)
        noise = rng.standard_normal((3, n))  # track pT, d0, z0
        calo_gauss = rng.standard_normal(n)
        calo_u = rng.random((2, n))  # position inside the calorimeter cell

        x, y, z = ev.x[idx], ev.y[idx], ev.z[idx]
        efficiency = self._efficiency(species, pt, abs_eta, np.hypot(x, y), np.abs(z))
        tracked = charged & (u_track < efficiency)

        # Tracks: smeared pT, true direction, impact parameters from the production vertex.
        t = np.flatnonzero(tracked)
        rel_pt = self._pt_resolution(species[t], pt[t], abs_eta[t])
        track_pt = _log_normal(pt[t], rel_pt * pt[t], noise[0, t])
        scale = track_pt / pt[t]
        mass2 = np.maximum(e[t] ** 2 - (px[t] ** 2 + py[t] ** 2 + pz[t] ** 2), 0.0)
        d0_true = (x[t] * py[t] - y[t] * px[t]) / pt[t]
        z0_true = z[t] - (x[t] * px[t] + y[t] * py[t]) / pt[t] * pz[t] / pt[t]
        d0err = _quadrature(self.d0_resolution["a"], self.d0_resolution["b"] / pt[t])
        z0err = _quadrature(self.z0_resolution["a"], self.z0_resolution["b"] / pt[t])
        tracks = {
            "rows": t,
            "px": px[t] * scale,
            "py": py[t] * scale,
            "pz": pz[t] * scale,
            "e": np.sqrt((px[t] ** 2 + py[t] ** 2 + pz[t] ** 2) * scale**2 + mass2),
            "kind": np.array([CHARGED_HADRON, ELECTRON, MUON])[species[t]],
            "charge": ev.charge[idx][t],
            "d0": d0_true + d0err * noise[1, t],
            "z0": z0_true + z0err * noise[2, t],
            "d0err": d0err,
            "z0err": z0err,
            "pt_err": rel_pt * track_pt,
        }

        # Calorimeter cells of the untracked particles (muons leave no deposit).
        electromagnetic = (apid == 22) | (apid == 11)
        to_ecal = ~tracked & electromagnetic & self.ecal.covers(abs_eta)
        to_hcal = ~tracked & ~electromagnetic & (apid != 13) & self.hcal.covers(abs_eta)
        per_particle = (event, eta, phi, e, calo_gauss, calo_u)
        photons = self._neutrals(self.ecal, to_ecal, PHOTON, *per_particle)
        neutral_hadrons = self._neutrals(self.hcal, to_hcal, NEUTRAL_HADRON, *per_particle)

        parts = [tracks, photons, neutral_hadrons]
        rows = np.concatenate([p["rows"] for p in parts])
        order = np.argsort(rows)  # truth order: grouped by event
        rows = rows[order]

        columns = {key: np.concatenate([p[key] for p in parts])[order]
                   for key in tracks if key != "rows"}  # fmt: skip
        return Candidates(
            counts=np.bincount(event[rows], minlength=len(ev.counts)),
            event=event[rows],
            pdg_id=pid[rows],
            truth=idx[rows],
            **columns,
        )

    @staticmethod
    def _neutrals(calo, mask, kind, event, eta, phi, e, gauss, uniform) -> dict:
        """Massless neutral candidates of the cells of `calo` that the `mask` particles hit,
        keyed like the tracks (rows: each cell's most energetic particle)."""
        m = np.flatnonzero(mask)
        cells = calo.towers(event[m], eta[m], phi[m], e[m], gauss[m], uniform[0, m], uniform[1, m])
        pt = cells.energy / np.cosh(cells.eta)
        zero = np.zeros(len(pt))
        return {
            "rows": m[cells.leading],
            "px": pt * np.cos(cells.phi),
            "py": pt * np.sin(cells.phi),
            "pz": pt * np.sinh(cells.eta),
            "e": cells.energy,
            "kind": np.full(len(pt), kind),
            "charge": zero,
            **dict.fromkeys(("d0", "z0", "d0err", "z0err", "pt_err"), zero),
        }
