"""Classification without labels (CWoLa, paper section 5.2.2) datasets from converted JetClass.

Background: QCD jets, split at random into two equal halves. Signal: `n_signal` top jets
(Tbqq) injected into the second half. The classifier learns the mixed labels (0 = first half,
1 = second half + signal); a share of the mixed sample is held out, with the same mixed labels,
for early stopping. The test set is pure, with true labels (0 = QCD, 1 = top), so that the
SIC measures how well the mixed labels taught signal against background. The converted files
are shuffled, so the first jets of a class are a random sample of it; signal sets are nested
(a larger n_signal adds jets to a smaller one's).
"""

import logging
from pathlib import Path

import h5py
import numpy as np

from mpm.atomic import atomic_dir
from mpm.data import schema
from mpm.data.h5io import append_rows, open_jets
from mpm.errors import InputError

log = logging.getLogger(__name__)

BACKGROUND = schema.JETCLASS_CLASSES.index("QCD")
SIGNAL = schema.JETCLASS_CLASSES.index("Tbqq")
READ_STEP = 65_536  # jets per read while scanning a file for one class


def first_of_class(path: Path, label: int, n: int | None) -> dict[str, np.ndarray]:
    """The first `n` jets (all if None) of class `label` in a converted file, every field."""
    parts: dict[str, list] = {}
    found = 0
    with open_jets(path) as file:
        names = [k for k in file if isinstance(file[k], h5py.Dataset)]
        total = file[schema.H5_LABELS].shape[0]
        for lo in range(0, total, READ_STEP):
            if n is not None and found >= n:
                break
            keep = np.flatnonzero(file[schema.H5_LABELS][lo : lo + READ_STEP] == label)
            if n is not None:
                keep = keep[: n - found]
            for name in names:
                parts.setdefault(name, []).append(file[name][lo : lo + READ_STEP][keep])
            found += len(keep)
    if not found or (n is not None and found < n):
        wanted = "any" if n is None else n
        raise InputError(f"{path}: {found} jets of class {schema.JETCLASS_CLASSES[label]}, "
                         f"{wanted} needed")  # fmt: skip
    return {name: np.concatenate(p) for name, p in parts.items()}


def _take(rows: dict, index: np.ndarray) -> dict:
    return {k: v[index] for k, v in rows.items()}


def _join(*parts: dict) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _write(path: Path, rows: dict, attrs: dict, compression: str | None) -> None:
    with h5py.File(path, "w") as file:
        append_rows(file, rows, compression)
        file.attrs.update(attrs)


def build_cwola(
    jetclass_dir: Path,
    out_dir: Path,
    *,
    n_signal: int,
    n_background: int | None,
    val_fraction: float,
    n_test_per_class: int | None,
    seed: int,
    compression: str | None = "lzf",
) -> dict:
    """Write `out_dir/{train,val,test}.h5` for `n_signal` injected top jets; returns counts."""
    rng = np.random.default_rng(seed)
    qcd = first_of_class(jetclass_dir / "train.h5", BACKGROUND, n_background)
    half = len(qcd[schema.H5_LABELS]) // 2
    order = rng.permutation(2 * half)
    first, second = _take(qcd, order[:half]), _take(qcd, order[half:])
    parts = [first, second]
    if n_signal:
        parts.append(first_of_class(jetclass_dir / "train.h5", SIGNAL, n_signal))
    mixed = _join(*parts)
    mixed[schema.H5_LABELS] = np.r_[np.zeros(half), np.ones(len(order) - half + n_signal)]
    mixed[schema.H5_LABELS] = mixed[schema.H5_LABELS].astype(np.int64)
    mixed = _take(mixed, rng.permutation(len(mixed[schema.H5_LABELS])))
    n_val = int(round(val_fraction * len(mixed[schema.H5_LABELS])))
    test = _join(
        first_of_class(jetclass_dir / "test.h5", BACKGROUND, n_test_per_class),
        first_of_class(jetclass_dir / "test.h5", SIGNAL, n_test_per_class),
    )
    test[schema.H5_LABELS] = (test[schema.H5_LABELS] == SIGNAL).astype(np.int64)
    test = _take(test, rng.permutation(len(test[schema.H5_LABELS])))
    attrs = {"dataset": "cwola", "n_signal": n_signal, "n_background_half": half,
             "features": list(schema.CONTINUOUS_FEATURES),
             "particle_ids": list(schema.PARTICLE_IDS)}  # fmt: skip
    splits = {
        "train": (_take(mixed, np.arange(n_val, len(mixed[schema.H5_LABELS]))),
                  ["first QCD half", "second QCD half + signal"]),
        "val": (_take(mixed, np.arange(n_val)), ["first QCD half", "second QCD half + signal"]),
        "test": (test, ["QCD", "top"]),
    }  # fmt: skip
    with atomic_dir(out_dir) as tmp:
        for name, (rows, classes) in splits.items():
            _write(tmp / f"{name}.h5", rows, {**attrs, "classes": classes}, compression)
    summary = {name: np.bincount(rows[schema.H5_LABELS], minlength=2).tolist()
               for name, (rows, _) in splits.items()}  # fmt: skip
    log.info("CWoLa with %d signal jets: jets per label %s", n_signal, summary)
    return {"n_signal": n_signal, "n_background_half": half, "jets_per_label": summary}
