"""Appending rows to, and reading rows from, the jet HDF5 files of `mpm.data.schema`."""

from pathlib import Path

import h5py
import numpy as np

from mpm.data import schema
from mpm.errors import InputError

# Jets per HDF5 chunk; the loader reads whole chunks, so this is also its unit of sampling.
CHUNK_JETS = 256
# File attribute: the sha1 of a converted file's rows, recorded as they are written (a
# training run's fingerprint identifies its inputs by content without re-reading them).
CONTENT_DIGEST = "content_sha1"


def append_rows(
    group: h5py.Group, rows: dict[str, np.ndarray], compression: str | None = None, digest=None
) -> None:
    """Append `rows` (same first dimension) to the datasets of `group`, creating them first;
    `digest` (a hashlib object), if given, is updated with each array's name and bytes."""
    for name, values in rows.items():
        if digest is not None:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(values).tobytes())
        if name not in group:
            group.create_dataset(
                name,
                shape=(0, *values.shape[1:]),
                maxshape=(None, *values.shape[1:]),
                dtype=values.dtype,
                chunks=(CHUNK_JETS, *values.shape[1:]),
                compression=compression,
            )
        dset = group[name]
        n = dset.shape[0]
        dset.resize(n + len(values), axis=0)
        dset[n:] = values


def read_rows(file: h5py.File, indices: np.ndarray, step: int = 8192) -> dict[str, np.ndarray]:
    """Rows `indices` (any order) of every dataset, read in increasing order in steps."""
    order = np.argsort(indices)
    sorted_idx = indices[order]
    parts: dict[str, list] = {name: [] for name in file}
    for lo in range(0, len(sorted_idx), step):
        chunk = sorted_idx[lo : lo + step]
        for name in file:
            parts[name].append(file[name][chunk])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {name: np.concatenate(p)[inverse] for name, p in parts.items()}


def open_jets(path: str | Path) -> h5py.File:
    """Open a converted file read-only, with a one-line error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        file = h5py.File(path, "r")
    except OSError:
        raise InputError(f"{path}: not a readable HDF5 file") from None
    for name in (schema.H5_CONSTITUENTS, schema.H5_IDS, schema.H5_MASK, schema.H5_LABELS):
        if name not in file:
            file.close()
            raise InputError(f"{path}: missing dataset '{name}'")
    return file
