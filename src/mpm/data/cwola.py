"""The CWoLa data sets of paper section 5.2.2 (classification without labels).

Two halves of QCD jets; `n_signal` top jets (Tbqq, never Tbl) are injected into the second.
A classifier learns "which half" from the mixed labels; it is scored on a pure test set of QCD
vs top, whose size sets how stable the SIC at 1% false-positive rate is (the SIC counts the
background passing the cut, so n_test_per_class / 100 events decide its noise).
"""

import logging
from pathlib import Path

import h5py
import numpy as np

from mpm.atomic import atomic_dir
from mpm.data import schema
from mpm.data.h5io import append_rows, open_jets, read_rows
from mpm.errors import InputError

log = logging.getLogger(__name__)

BACKGROUND = schema.JETCLASS_CLASSES.index("QCD")
SIGNAL = schema.JETCLASS_CLASSES.index("Tbqq")


def _pick(labels: np.ndarray, cls: int, n: int, rng, path: Path, what: str) -> np.ndarray:
    candidates = np.flatnonzero(labels == cls)
    if len(candidates) < n:
        raise InputError(
            f"{path}: {what} needs {n} {schema.JETCLASS_CLASSES[cls]} jets, "
            f"the file holds {len(candidates)}"
        )
    return rng.choice(candidates, n, replace=False)


def _write(src: h5py.File, out: Path, indices: np.ndarray, labels: np.ndarray) -> None:
    rows = read_rows(src, indices)
    rows["true_labels"] = rows.pop(schema.H5_LABELS)
    rows[schema.H5_LABELS] = labels.astype(np.int64)
    with h5py.File(out, "w") as file:
        append_rows(file, rows)
        file.attrs.update(dict(src.attrs), classes=["QCD half", "top-injected half"])


def build_cwola(
    train_h5: Path,
    test_h5: Path,
    out_dir: Path,
    *,
    n_background: int,
    n_signal: int,
    n_test_per_class: int,
    val_fraction: float,
    seed: int,
) -> dict:
    """Write train/val.h5 (label = half, 1 = top-injected; `true_labels` kept for studies)
    and test.h5 (label = truth, 1 = top) under `out_dir`. `n_background` jets per half."""
    rng = np.random.default_rng(seed)
    with open_jets(train_h5) as src:
        labels = src[schema.H5_LABELS][:]
        qcd = _pick(labels, BACKGROUND, 2 * n_background, rng, train_h5, "CWoLa training")
        top = _pick(labels, SIGNAL, n_signal, rng, train_h5, "CWoLa training")
        indices = np.concatenate([qcd, top])
        halves = np.concatenate([np.zeros(n_background), np.ones(n_background + n_signal)])
        perm = rng.permutation(len(indices))
        indices, halves = indices[perm], halves[perm]
        n_val = int(round(val_fraction * len(indices)))
        with atomic_dir(out_dir) as tmp:
            _write(src, tmp / "train.h5", indices[n_val:], halves[n_val:])
            _write(src, tmp / "val.h5", indices[:n_val], halves[:n_val])
            with open_jets(test_h5) as test_src:
                test_labels = test_src[schema.H5_LABELS][:]
                test_qcd = _pick(
                    test_labels, BACKGROUND, n_test_per_class, rng, test_h5, "CWoLa test"
                )
                test_top = _pick(test_labels, SIGNAL, n_test_per_class, rng, test_h5, "CWoLa test")
                test_idx = np.concatenate([test_qcd, test_top])
                truth = np.repeat([0, 1], n_test_per_class)
                perm = rng.permutation(len(test_idx))
                _write(test_src, tmp / "test.h5", test_idx[perm], truth[perm])
    summary = {
        "n_train": int(len(indices) - n_val),
        "n_val": n_val,
        "n_signal": n_signal,
        "n_test": int(2 * n_test_per_class),
    }
    log.info("CWoLa sets in %s: %s", out_dir, summary)
    return summary
