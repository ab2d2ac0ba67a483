"""Masked-jet reconstructions (paper appendix E, Fig. 8) and SSFM whole-jet generation.

The same seeded test jets and the same dropped constituents go to every pre-trained model;
each samples the dropped constituents' features. Distances are 1-Wasserstein (scipy) between
pooled distributions: of the quantile-normalised features for the reconstructions (one scale
for every feature), of physical jet mass and constituent pT for generation, where a second,
disjoint half of real jets gives the distance that sampling noise alone leaves.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from mpm.data import schema
from mpm.data.h5io import open_jets, read_rows
from mpm.data.loader import JetDataset
from mpm.data.preprocess import Preprocessor
from mpm.models.masking import choose_dropped
from mpm.training.pretrain import PretrainModule

log = logging.getLogger(__name__)

# Fig. 8 shows (pT, d_eta, d_phi): the first three continuous features, in every feature set.
KINEMATICS = (0, 1, 2)
BATCH_JETS = 256  # jets per forward pass: bounds the memory of whole-jet attention


@dataclass
class MaskedJets:
    """Jets with a seeded choice of dropped constituents. `csts` are preprocessed [B, N, 7],
    `raw` the physical features read back from the file for the same jets."""

    csts: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    dropped: torch.Tensor
    raw: np.ndarray


def load_masked_jets(
    path: Path, preprocessor_path: Path, n_jets: int, mask_rate: float, seed: int
) -> MaskedJets:
    """A seeded sample of `n_jets` jets of `path`, with `mask_rate` of each jet dropped."""
    data = JetDataset(path, preprocessor_path, batch_size=n_jets, n_jets=n_jets, seed=seed,
                      shuffle=False)  # fmt: skip
    batch = next(iter(data))
    with open_jets(path) as file:
        raw = read_rows(file, batch["index"].numpy())[schema.H5_CONSTITUENTS]
    mask = batch["mask"]
    dropped = choose_dropped(mask, mask_rate, torch.Generator().manual_seed(seed))
    width = mask.shape[1]
    return MaskedJets(batch["csts"], batch["csts_id"], mask, dropped, raw[:, :width])


def reconstruct(module: PretrainModule, jets: MaskedJets, seed: int) -> torch.Tensor:
    """The model's sampled features [M, F] of the dropped constituents (order of
    `csts[dropped]`), preprocessed, F the model's feature set; seeded."""
    torch.manual_seed(seed)
    parts = []
    for lo in range(0, len(jets.mask), BATCH_JETS):
        rows = slice(lo, lo + BATCH_JETS)
        parts.append(module.reconstruct(jets.csts[rows], jets.ids[rows], jets.mask[rows],
                                        jets.dropped[rows]))  # fmt: skip
    return torch.cat(parts)


def to_physical(preprocessor: Preprocessor, x: np.ndarray, columns: list[int]) -> np.ndarray:
    """Preprocessed features [M, len(columns)] of the 7 continuous columns `columns` -> physical
    units (the quantile transform acts column by column, so other columns do not matter)."""
    full = np.zeros((len(x), len(schema.CONTINUOUS_FEATURES)), np.float32)
    full[:, columns] = x
    return preprocessor.inverse(full)[:, columns]


def jet_mass(pt: np.ndarray, deta: np.ndarray, dphi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Invariant mass [B] of the massless constituents [B, N] (only angle differences enter,
    so coordinates relative to the jet axis give the true mass)."""
    pt = np.where(mask, pt, 0.0).astype(np.float64)
    e = (pt * np.cosh(deta)).sum(1)
    px, py, pz = (pt * np.cos(dphi)).sum(1), (pt * np.sin(dphi)).sum(1), (pt * np.sinh(deta)).sum(1)
    return np.sqrt(np.clip(e**2 - px**2 - py**2 - pz**2, 0, None))


def reconstruction_distances(truth: np.ndarray, sampled: np.ndarray) -> dict[str, float]:
    """1-Wasserstein distance per kinematic feature of [M, 3] arrays, and their mean."""
    names = [schema.CONTINUOUS_FEATURES[i] for i in KINEMATICS]
    out = {n: float(wasserstein_distance(truth[:, i], sampled[:, i])) for i, n in enumerate(names)}
    out["mean"] = float(np.mean(list(out.values())))
    return out


@dataclass
class Reconstruction:
    """Physical (pT, d_eta, d_phi) of one model's reconstruction: `dropped` [M, 3] in the order
    of `csts[dropped]`, and `w1` its distances to the truth."""

    dropped: np.ndarray
    w1: dict[str, float]


def evaluate_reconstruction(
    module: PretrainModule, jets: MaskedJets, preprocessor: Preprocessor, seed: int
) -> Reconstruction:
    features = list(module.encoder.features)
    columns = [features.index(i) for i in KINEMATICS]
    sampled = reconstruct(module, jets, seed)[:, columns].numpy()
    truth = jets.csts[jets.dropped][:, list(KINEMATICS)].numpy()
    physical = to_physical(preprocessor, sampled, list(KINEMATICS))
    return Reconstruction(physical, reconstruction_distances(truth, sampled))


def evaluate_generation(
    module: PretrainModule, jets: MaskedJets, preprocessor: Preprocessor, seed: int
) -> dict:
    """SSFM with nothing visible (D_f = 0): whole jets generated with the multiplicities of the
    first half of `jets`, compared with the real second half, next to real first vs second."""
    half = len(jets.mask) // 2
    torch.manual_seed(seed)
    set_mask = np.zeros((half, jets.mask.shape[1]), bool)
    generated = []  # features of the generated constituents, row by row
    for lo in range(0, half, BATCH_JETS):
        rows = slice(lo, min(lo + BATCH_JETS, half))
        mask = jets.mask[rows]
        x, _, batch_mask = module.model.sample(jets.csts[rows], jets.ids[rows], mask, mask)
        generated.append(x[batch_mask][:, list(KINEMATICS)])  # first features of every set
        set_mask[rows, : batch_mask.shape[1]] = batch_mask.numpy()
    gen = np.zeros((*set_mask.shape, 3), np.float32)
    gen[set_mask] = to_physical(preprocessor, torch.cat(generated).numpy(), list(KINEMATICS))
    mask = jets.mask.numpy()
    real = {"first": (jets.raw[:half], mask[:half]), "second": (jets.raw[half:], mask[half:])}
    masses = {k: jet_mass(r[..., 0], r[..., 1], r[..., 2], m) for k, (r, m) in real.items()}
    masses["generated"] = jet_mass(gen[..., 0], gen[..., 1], gen[..., 2], set_mask)
    pts = {k: r[..., 0][m] for k, (r, m) in real.items()} | {"generated": gen[..., 0][set_mask]}
    w1 = lambda a, b: round(float(wasserstein_distance(a, b)), 4)  # noqa: E731
    return {
        "metrics": {
            "n_jets": int(half),
            "w1_jet_mass_gev": w1(masses["generated"], masses["second"]),
            "w1_jet_mass_gev_real_vs_real": w1(masses["first"], masses["second"]),
            "w1_cst_pt_gev": w1(pts["generated"], pts["second"]),
            "w1_cst_pt_gev_real_vs_real": w1(pts["first"], pts["second"]),
        },
        "jet_mass": masses,
        "cst_pt": pts,
    }
