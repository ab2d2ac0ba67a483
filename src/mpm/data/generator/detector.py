"""A simple, seeded CMS-like detector response: truth particles -> particle-flow candidates.

Every number comes from the `generate.detector` params group (documented in the README):

- Tracker (|eta| < track_eta_max, pT > track_pt_min, produced inside the tracker volume:
  transverse radius < tracker_radius, |z| < tracker_half_length): a charged particle is
  reconstructed as a track with probability `track_efficiency` (below 1 GeV, barrel
  |eta| < 1.5, endcap); its pT is smeared by sigma(pT)/pT = a (+) b*pT. Tracks keep their true
  direction (no magnetic field).
- Impact parameters of tracks: the true transverse and longitudinal impact parameters of a
  straight line from the true production vertex (Pythia's, in mm) relative to the primary
  vertex at the origin, smeared by sigma = a (+) b/pT, with sigma recorded as the error.
  d0 follows the Delphes sign convention: d0 = (x*py - y*px)/pT, so the point of closest
  approach is d0*(sin(phi), -cos(phi)).
- Calorimeters (|eta| < calo_eta_max): photons, and electrons without a track, become photon
  candidates with the ECAL resolution; neutral hadrons, and charged hadrons without a track,
  become neutral-hadron candidates with the HCAL resolution (sigma(E)/E = s/sqrt(E) (+) c).
  Energies below the ECAL / HCAL thresholds are lost; candidates are massless, along the true
  direction. Muons without a track are lost. No calorimeter granularity or pile-up.
"""

from dataclasses import dataclass

import numpy as np

from mpm.data.generator.kinematics import Momenta
from mpm.data.generator.pythia import NEUTRINOS, EventRecord

# Candidate kinds, matching the JetClass is* flags.
PHOTON, NEUTRAL_HADRON, CHARGED_HADRON, ELECTRON, MUON = range(5)


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
    pdg_id: np.ndarray  # of the truth particle
    truth: np.ndarray  # flat position of the truth particle in the EventRecord
    d0: np.ndarray
    z0: np.ndarray
    d0err: np.ndarray
    z0err: np.ndarray
    pt_err: np.ndarray


def _quadrature(a: float, b) -> np.ndarray:
    return np.hypot(a, b)


@dataclass(frozen=True)
class Detector:
    track_eta_max: float
    track_pt_min: float
    tracker_radius: float  # mm
    tracker_half_length: float  # mm
    track_efficiency: dict  # {"low_pt": , "barrel": , "endcap": }
    track_pt_resolution: dict  # {"a": , "b": } sigma(pT)/pT = a (+) b*pT
    d0_resolution: dict  # {"a": mm, "b": mm*GeV} sigma = a (+) b/pT
    z0_resolution: dict
    calo_eta_max: float
    ecal: dict  # {"stochastic": , "constant": , "threshold": GeV}
    hcal: dict

    @classmethod
    def from_params(cls, cfg: dict) -> "Detector":
        return cls(**cfg)

    def _efficiency(self, pt, abs_eta, radius, abs_z) -> np.ndarray:
        eff = self.track_efficiency
        high = np.where(abs_eta < 1.5, eff["barrel"], eff["endcap"])
        inside = (abs_eta < self.track_eta_max) & (pt > self.track_pt_min)
        inside &= (radius < self.tracker_radius) & (abs_z < self.tracker_half_length)
        return np.where(inside, np.where(pt < 1.0, eff["low_pt"], high), 0.0)

    def _calorimeter(self, energy, cfg, rng) -> np.ndarray:
        sigma = _quadrature(cfg["stochastic"] / np.sqrt(np.maximum(energy, 1e-9)), cfg["constant"])
        return energy * (1.0 + sigma * rng.standard_normal(len(energy)))

    def reconstruct(self, ev: EventRecord, rng: np.random.Generator) -> Candidates:
        final = (ev.status > 0) & ~np.isin(np.abs(ev.id), NEUTRINOS)
        idx = np.flatnonzero(final)
        pid = ev.id[idx]
        apid = np.abs(pid)
        px, py, pz, e = ev.px[idx], ev.py[idx], ev.pz[idx], ev.e[idx]
        pt = np.hypot(px, py)
        abs_eta = np.abs(np.arcsinh(pz / np.maximum(pt, 1e-12)))
        charged = ev.charge[idx] != 0

        # One uniform draw per particle, whatever its fate, keeps the stream aligned.
        x, y, z = ev.x[idx], ev.y[idx], ev.z[idx]
        u_track = rng.random(len(idx))
        noise = rng.standard_normal((3, len(idx)))
        efficiency = self._efficiency(pt, abs_eta, np.hypot(x, y), np.abs(z))
        tracked = charged & (u_track < efficiency)

        # Tracks: smeared pT, true direction, impact parameters from the production vertex.
        res = self.track_pt_resolution
        rel_pt = _quadrature(res["a"], res["b"] * pt)
        scale = np.where(tracked, np.maximum(1.0 + rel_pt * noise[0], 0.05), 1.0)
        safe_pt = np.maximum(pt, 1e-12)
        d0_true = (x * py - y * px) / safe_pt
        z0_true = z - (x * px + y * py) / safe_pt * pz / safe_pt
        d0err = _quadrature(self.d0_resolution["a"], self.d0_resolution["b"] / safe_pt)
        z0err = _quadrature(self.z0_resolution["a"], self.z0_resolution["b"] / safe_pt)
        d0 = d0_true + d0err * noise[1]
        z0 = z0_true + z0err * noise[2]

        # Calorimeter candidates: massless, along the true direction.
        ecal_like = (apid == 22) | ((apid == 11) & ~tracked)
        hcal_like = (~charged & (apid != 22)) | (charged & ~tracked & (apid != 11) & (apid != 13))
        in_calo = abs_eta < self.calo_eta_max
        e_ecal = self._calorimeter(e, self.ecal, rng)
        e_hcal = self._calorimeter(e, self.hcal, rng)
        photon = ecal_like & ~tracked & in_calo & (e_ecal > self.ecal["threshold"])
        neutral = hcal_like & ~tracked & in_calo & (e_hcal > self.hcal["threshold"])

        keep = tracked | photon | neutral
        p_abs = np.sqrt(px**2 + py**2 + pz**2)
        calo_e = np.where(photon, e_ecal, e_hcal)
        mom_scale = np.where(tracked, scale, calo_e / np.maximum(p_abs, 1e-12))
        mass2 = np.where(tracked, np.maximum(e**2 - p_abs**2, 0.0), 0.0)
        kind = np.select(
            [photon, neutral, tracked & (apid == 11), tracked & (apid == 13)],
            [PHOTON, NEUTRAL_HADRON, ELECTRON, MUON],
            CHARGED_HADRON,
        )
        cand_px, cand_py, cand_pz = px * mom_scale, py * mom_scale, pz * mom_scale
        rows = np.flatnonzero(keep)
        event = ev.event[idx][rows]
        is_track = tracked[rows]
        zero = np.zeros(len(rows))
        return Candidates(
            counts=np.bincount(event, minlength=len(ev.counts)),
            event=event,
            px=cand_px[rows],
            py=cand_py[rows],
            pz=cand_pz[rows],
            e=np.sqrt(cand_px[rows] ** 2 + cand_py[rows] ** 2 + cand_pz[rows] ** 2 + mass2[rows]),
            kind=kind[rows],
            charge=np.where(is_track, ev.charge[idx][rows], 0.0),
            pdg_id=pid[rows],
            truth=idx[rows],
            d0=np.where(is_track, d0[rows], zero),
            z0=np.where(is_track, z0[rows], zero),
            d0err=np.where(is_track, d0err[rows], zero),
            z0err=np.where(is_track, z0err[rows], zero),
            pt_err=np.where(is_track, rel_pt[rows] * pt[rows] * scale[rows], zero),
        )
