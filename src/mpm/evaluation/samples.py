"""The samples file of the `reconstruct` stage: the jets Fig. 8 draws, each model's
reconstruction of their dropped constituents and the SSFM generation (.npz). Kept apart from
`mpm.evaluation.reconstruction` so the figure notebook reads it without importing torch."""

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mpm.atomic import atomic_file
from mpm.errors import InputError

if TYPE_CHECKING:
    from mpm.evaluation.reconstruction import MaskedJets, Reconstruction


def save_samples(
    path: Path,
    jets: "MaskedJets",
    reconstructions: dict[str, "Reconstruction"],
    n_jets: int,
    generation: dict | None = None,
) -> None:
    """The first `n_jets` jets with each model's reconstruction of their dropped constituents
    and, if given, the SSFM generation: everything Fig. 8's notebook draws (.npz)."""
    mask, dropped = jets.mask[:n_jets].numpy(), jets.dropped[:n_jets].numpy()
    owner = np.nonzero(jets.dropped.numpy())[0]  # the jet of each dropped constituent
    arrays = {"raw": jets.raw[:n_jets, :, :3], "mask": mask, "dropped": dropped,
              "names": np.array(list(reconstructions))}  # fmt: skip
    for name, rec in reconstructions.items():
        arrays[f"reconstruction.{name}"] = rec.dropped[owner < n_jets]
    if generation is not None:
        arrays["generation.n_jets"] = np.array(generation["metrics"]["n_jets"])
        for key in ("jet_mass", "cst_pt"):
            for sample in ("second", "generated"):
                arrays[f"generation.{key}.{sample}"] = generation[key][sample]
    with atomic_file(path) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(file, **arrays)


def load_samples(path: str | Path) -> dict:
    """What `save_samples` wrote: raw, mask, dropped [J, N(, 3)], reconstructions {name: [M, 3]}
    and generation (None without an SSFM model) in the form `evaluate_generation` returns."""
    try:
        data = dict(np.load(path))
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except (ValueError, OSError, zipfile.BadZipFile):
        raise InputError(f"{path}: not a reconstruction samples file") from None
    out = {k: data[k] for k in ("raw", "mask", "dropped")}
    out["reconstructions"] = {str(n): data[f"reconstruction.{n}"] for n in data["names"]}
    out["generation"] = None
    if "generation.n_jets" in data:
        out["generation"] = {
            key: {s: data[f"generation.{key}.{s}"] for s in ("second", "generated")}
            for key in ("jet_mass", "cst_pt")
        } | {"metrics": {"n_jets": int(data["generation.n_jets"])}}
    return out
