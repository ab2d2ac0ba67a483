"""Toy jets in the exact JetClass and BTag ROOT schemas (the `generate` stage, engine `toy`).

No physics: class-dependent random distributions that make the pipeline run end to end
offline and give classifiers something to learn. The Pythia8 + FastJet engine replaces it as
the default data source.
"""

import logging
from pathlib import Path

import awkward as ak
import numpy as np
from tqdm import tqdm

from mpm.atomic import atomic_file
from mpm.data import schema
from mpm.data.root_io import write_btag, write_jetclass

log = logging.getLogger(__name__)

# File numbers per split, as in the real JetClass tars (train 000-, test 100-, val 120-).
JETCLASS_FIRST_FILE = {"train": 0, "test": 100, "val": 120}
BTAG_FILES = {"train": "train_small.root", "val": "validate_small.root", "test": "test_small.root"}


def _jagged(flat: np.ndarray, counts: np.ndarray) -> ak.Array:
    return ak.unflatten(flat, counts)


def toy_jetclass(n_jets: int, label: int, rng: np.random.Generator) -> tuple[dict, dict]:
    counts = np.clip(rng.poisson(20 + 4 * label, n_jets), 1, 150)
    total = int(counts.sum())
    jet_idx = np.repeat(np.arange(n_jets), counts)
    jet_pt = rng.uniform(500, 1000, n_jets)
    jet_eta = rng.uniform(-2, 2, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    width = 0.05 + 0.02 * label
    deta = rng.normal(0, width, total)  # JetClass convention: sign(jet_eta) * (eta - jet_eta)
    dphi = rng.normal(0, width, total)
    pt = jet_pt[jet_idx] * rng.dirichlet(np.ones(3), total)[:, 0] / np.sqrt(counts[jet_idx])
    eta = jet_eta[jet_idx] + deta * np.where(jet_eta[jet_idx] >= 0, 1, -1)
    phi = jet_phi[jet_idx] + dphi
    kind = rng.choice(5, total, p=[0.3, 0.15, 0.45, 0.05, 0.05])  # ph, nh, ch, e, mu
    charged = kind >= 2
    charge = np.where(charged, rng.choice([-1.0, 1.0], total), 0.0)
    ip_scale = np.where(charged, 0.02 * (1 + (label in (1, 2, 8, 9))), 0.0)
    part = {
        "px": pt * np.cos(phi),
        "py": pt * np.sin(phi),
        "pz": pt * np.sinh(eta),
        "energy": pt * np.cosh(eta),
        "deta": deta,
        "dphi": dphi,
        "d0val": rng.normal(0, 1, total) * ip_scale,
        "d0err": np.where(charged, rng.uniform(0.005, 0.05, total), 0.0),
        "dzval": rng.normal(0, 1, total) * ip_scale,
        "dzerr": np.where(charged, rng.uniform(0.005, 0.05, total), 0.0),
        "charge": charge,
        "isPhoton": kind == 0,
        "isNeutralHadron": kind == 1,
        "isChargedHadron": kind == 2,
        "isElectron": kind == 3,
        "isMuon": kind == 4,
    }
    part = {k: _jagged(np.asarray(v), counts) for k, v in part.items()}
    jet = {
        "jet_pt": jet_pt,
        "jet_eta": jet_eta,
        "jet_phi": jet_phi,
        "jet_energy": jet_pt * np.cosh(jet_eta),
        "jet_nparticles": counts,
        "jet_sdmass": rng.normal(20 + 15 * label, 10, n_jets).clip(0),
        **{f"jet_tau{i}": rng.uniform(0, 1, n_jets) for i in range(1, 5)},
    }
    return part, jet


def toy_btag(n_jets: int, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    flav = rng.choice([0, 4, 5], n_jets)
    counts = np.clip(rng.poisson(4 + (flav == 5) * 2, n_jets), 1, 25)
    total = int(counts.sum())
    jet_idx = np.repeat(np.arange(n_jets), counts)
    jet_eta = rng.uniform(-2.5, 2.5, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    # One heavy hadron per c/b jet, decaying at z = hadron_z; its tracks are produced there.
    n_had = (flav > 0).astype(np.int64)
    had_pdg = np.where(flav == 5, 521, 421)[flav > 0]
    had_z = rng.normal(0, 3, int(n_had.sum()))
    had_z_per_jet = np.zeros(n_jets)
    had_z_per_jet[flav > 0] = had_z
    from_hadron = (flav[jet_idx] > 0) & (rng.random(total) < 0.5)
    prod_z = np.where(from_hadron, had_z_per_jet[jet_idx], 0.0)
    trk = {
        "pt": rng.exponential(5, total) + 1,
        "eta": jet_eta[jet_idx] + rng.normal(0, 0.1, total),
        "phi": jet_phi[jet_idx] + rng.normal(0, 0.1, total),
        "d0": rng.normal(0, 0.01, total) + from_hadron * rng.normal(0, 0.5, total),
        "z0": rng.normal(0, 0.02, total) + from_hadron * rng.normal(0, 0.5, total),
        "d0err": rng.uniform(0.005, 0.05, total),
        "z0err": rng.uniform(0.005, 0.05, total),
        "charge": rng.choice([-1, 1], total),
        "pdg_id": rng.choice([211, 321, 2212, 11, 13], total, p=[0.8, 0.1, 0.06, 0.02, 0.02]),
        "vtx_index": from_hadron.astype(np.int64),
        "prod_z": prod_z,
    }
    trk = {k: _jagged(np.asarray(v), counts) for k, v in trk.items()}
    hadron = {"pdgid": _jagged(had_pdg, n_had), "z": _jagged(had_z, n_had)}
    jet = {
        "jet_pt": rng.exponential(40, n_jets) + 20,
        "jet_eta": jet_eta,
        "jet_phi": jet_phi,
        "jet_M": rng.exponential(8, n_jets),
        "jet_flav": flav,
    }
    return trk, hadron, jet


def generate_toy(out_root: Path, jets_per_file: dict[str, int], seed: int) -> None:
    """Write jetclass/<split dir>/<Proc>_<NNN>.root (one file per class and split) and
    btag/<split file>.root under `out_root`; every file atomically."""
    processes = {cls: proc for proc, cls in schema.JETCLASS_PROCESSES.items()}
    jobs = [(split, label) for split in jets_per_file for label in range(10)]
    for split, label in tqdm(jobs, desc="toy JetClass files"):
        cls = schema.JETCLASS_CLASSES[label]
        rng = np.random.default_rng([seed, 0, label, JETCLASS_FIRST_FILE[split]])
        part, jet = toy_jetclass(jets_per_file[split], label, rng)
        folder = out_root / "jetclass" / schema.JETCLASS_SPLIT_DIRS[split]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{processes[cls]}_{JETCLASS_FIRST_FILE[split]:03d}.root"
        with atomic_file(folder / name) as tmp:
            write_jetclass(tmp, part, jet, cls)
    for i, (split, name) in enumerate(BTAG_FILES.items()):
        if split not in jets_per_file:
            continue
        rng = np.random.default_rng([seed, 1, i])
        trk, hadron, jet = toy_btag(jets_per_file[split] * 3, rng)
        (out_root / "btag").mkdir(parents=True, exist_ok=True)
        with atomic_file(out_root / "btag" / name) as tmp:
            write_btag(tmp, trk, hadron, jet)
    log.info("toy data written to %s", out_root)
