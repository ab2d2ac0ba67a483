"""Classification without labels (CWoLa, paper section 5.2.2) datasets from converted JetClass.

Background: QCD jets, split at random into two equal halves. Signal: `n_signal` top jets
(Tbqq) injected into the second half. The classifier learns the mixed labels (0 = first half,
1 = second half + signal); a share of each of the three parts is held out, with the same mixed
labels, for early stopping, so training holds exactly n_signal - round(val_fraction * n_signal)
signal jets (recorded as `n_signal_train` and `n_signal_val`). The test set is pure, with true
labels (0 = QCD, 1 = top), so that the SIC measures how well the mixed labels taught signal
against background; it is the same file in every dataset.

One dataset per (n_signal, repeat seed): the seed chooses the QCD halves and the injected top
jets (the main source of spread at a few hundred signal jets); within one seed the signal
sets are nested (a larger n_signal adds jets to a smaller one's).
"""

import hashlib
import logging
from pathlib import Path

import h5py
import numpy as np

from mpm.atomic import atomic_dir
from mpm.data import schema
from mpm.data.h5io import CONTENT_DIGEST, append_rows, open_jets
from mpm.downstream.layout import cwola_dataset
from mpm.errors import InputError

log = logging.getLogger(__name__)

BACKGROUND = schema.JETCLASS_CLASSES.index("QCD")
SIGNAL = schema.JETCLASS_CLASSES.index("Tbqq")
READ_STEP = 65_536  # jets per read while scanning a file for one class
SAMPLE_BLOCK = 1024  # jets per read when a seed draws the order of the reads


def first_of_class(
    path: Path, label: int, n: int | None, rng: np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """The first `n` jets (all if None) of class `label` in a converted file, every field;
    with `rng`, the file is read in blocks of SAMPLE_BLOCK jets in an order drawn by it and a
    random share of each block is taken, so each seed takes other jets while reading only
    about as many as it needs (and, for one seed, a smaller n takes a subset of a larger's)."""
    parts: dict[str, list] = {}
    found = 0
    with open_jets(path) as file:
        names = [k for k in file if isinstance(file[k], h5py.Dataset)]
        total = file[schema.H5_LABELS].shape[0]
        step = READ_STEP if rng is None else SAMPLE_BLOCK
        starts = np.arange(0, total, step)
        for lo in starts if rng is None else rng.permutation(starts):
            if n is not None and found >= n:
                break
            keep = np.flatnonzero(file[schema.H5_LABELS][lo : lo + step] == label)
            if rng is not None:  # and a random share of the block (sorted: h5py reads in order)
                keep = keep[rng.permutation(len(keep))]
                keep = np.sort(keep if n is None else keep[: n - found])
            if n is not None:
                keep = keep[: n - found]
            for name in names:
                parts.setdefault(name, []).append(file[name][lo : lo + step][keep])
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
    digest = hashlib.sha1()
    with h5py.File(path, "w") as file:
        append_rows(file, rows, compression, digest)
        file.attrs.update(attrs)
        file.attrs[CONTENT_DIGEST] = digest.hexdigest()


def _split(rows: dict, val_fraction: float) -> tuple[dict, dict]:
    """(train, val) of already shuffled rows: the first round(val_fraction * n) go to val."""
    n_val = int(round(val_fraction * len(rows[schema.H5_LABELS])))
    n = len(rows[schema.H5_LABELS])
    return _take(rows, np.arange(n_val, n)), _take(rows, np.arange(n_val))


def pure_test_set(jetclass_dir: Path, n_test_per_class: int | None, profile_seed: int,
                  min_background_at_fpr: float = 50, fpr: float = 0.01) -> dict:  # fmt: skip
    """The test jets of every CWoLa dataset: the first `n_test_per_class` QCD and top jets of
    the JetClass test file (all if None) with true labels (0 = QCD, 1 = top), in an order drawn
    by the profile's seed alone, so that every dataset has the same test file and a frozen
    backbone's outputs on it are stored once for all of them. InputError if fewer than
    `min_background_at_fpr` QCD jets lie at the SIC's working point (`fpr` of them): there the
    SIC is biased and noisy."""
    test_file = jetclass_dir / "test.h5"
    background = first_of_class(test_file, BACKGROUND, n_test_per_class)
    n_background = len(background[schema.H5_LABELS])
    if n_background * fpr < min_background_at_fpr:
        raise InputError(
            f"params: 'finetune.cwola.min_background_at_fpr' is {min_background_at_fpr}, but "
            f"{n_background} QCD test jets give {n_background * fpr:g} at the SIC's "
            f"FPR of {fpr:g}: add test jets (or lower the floor, for a smoke run only)"
        )
    test = _join(background, first_of_class(test_file, SIGNAL, n_test_per_class))
    test[schema.H5_LABELS] = (test[schema.H5_LABELS] == SIGNAL).astype(np.int64)
    order = np.random.default_rng([profile_seed, 2]).permutation(len(test[schema.H5_LABELS]))
    return _take(test, order)


def _write_dataset(jetclass_dir: Path, folder: Path, test: dict, *, n_signal: int,
                   n_background: int | None, val_fraction: float, seed: list[int],
                   min_background_at_fpr: float, fpr: float,
                   compression: str | None) -> dict:  # fmt: skip
    """Write `folder/{train,val,test}.h5`: the mixed-label training and validation jets drawn
    by `seed` (the profile's and the repeat's), and `test`; returns the counts."""
    rng = np.random.default_rng([*seed, 0])
    train = jetclass_dir / "train.h5"
    qcd = first_of_class(train, BACKGROUND, n_background, rng)
    order = rng.permutation(len(qcd[schema.H5_LABELS]))
    half = len(order) // 2
    first, second = _take(qcd, order[:half]), _take(qcd, order[half : 2 * half])
    # the signal's own generator: nested sets across n_signal within one seed
    signal_rng = np.random.default_rng([*seed, 1])
    signal = first_of_class(train, SIGNAL, n_signal, signal_rng) if n_signal else None
    parts = [(first, 0), (second, 1)] + ([(signal, 1)] if n_signal else [])
    train_parts, val_parts = [], []
    for rows, mixed_label in parts:
        rows = {**rows, schema.H5_LABELS: np.full(len(rows[schema.H5_LABELS]), mixed_label)}
        a, b = _split(rows, val_fraction)
        train_parts.append(a)
        val_parts.append(b)
    n_signal_val = len(val_parts[2][schema.H5_LABELS]) if n_signal else 0
    mixed_train, mixed_val = _join(*train_parts), _join(*val_parts)
    mixed_train = _take(mixed_train, rng.permutation(len(mixed_train[schema.H5_LABELS])))
    mixed_val = _take(mixed_val, rng.permutation(len(mixed_val[schema.H5_LABELS])))
    counts = {"n_signal": n_signal, "n_signal_train": n_signal - n_signal_val,
              "n_signal_val": n_signal_val, "n_background_half": half,
              "n_background_test": int((test[schema.H5_LABELS] == 0).sum())}  # fmt: skip
    attrs = {"dataset": "cwola", **counts, "min_background_at_fpr": min_background_at_fpr,
             "sic_fpr": fpr, "features": list(schema.CONTINUOUS_FEATURES),
             "particle_ids": list(schema.PARTICLE_IDS)}  # fmt: skip
    mixed_classes = ["first QCD half", "second QCD half + signal"]
    splits = {"train": (mixed_train, mixed_classes), "val": (mixed_val, mixed_classes),
              "test": (test, ["QCD", "top"])}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    for name, (rows, classes) in splits.items():
        _write(folder / f"{name}.h5", rows, {**attrs, "classes": classes}, compression)
    summary = {name: np.bincount(rows[schema.H5_LABELS], minlength=2).tolist()
               for name, (rows, _) in splits.items()}  # fmt: skip
    log.info("CWoLa with %d signal jets (%d train, %d val), seed %s: jets per label %s",
             n_signal, counts["n_signal_train"], n_signal_val, seed, summary)  # fmt: skip
    return {**counts, "jets_per_label": summary}


def build_cwola(
    jetclass_dir: Path,
    out_dir: Path,
    *,
    n_signal: int,
    n_background: int | None,
    val_fraction: float,
    n_test_per_class: int | None,
    seed: int | list[int],
    min_background_at_fpr: float = 50,
    fpr: float = 0.01,
    compression: str | None = "lzf",
) -> dict:
    """Write one dataset, `out_dir/{train,val,test}.h5`, for `n_signal` injected top jets;
    returns counts. `seed` (the profile's seed and the repeat's) chooses the halves and the
    signal jets; the test set is `pure_test_set`'s."""
    seed = [int(s) for s in np.atleast_1d(seed)]
    test = pure_test_set(jetclass_dir, n_test_per_class, seed[0], min_background_at_fpr, fpr)
    with atomic_dir(out_dir) as tmp:
        return _write_dataset(jetclass_dir, tmp, test, n_signal=n_signal,
                              n_background=n_background, val_fraction=val_fraction, seed=seed,
                              min_background_at_fpr=min_background_at_fpr, fpr=fpr,
                              compression=compression)  # fmt: skip


def build_cwola_datasets(jetclass_dir: Path, out_dir: Path, *, n_signals: list[int],
                         seeds: list[int], profile_seed: int, n_background: int | None,
                         val_fraction: float, n_test_per_class: int | None,
                         min_background_at_fpr: float = 50, fpr: float = 0.01,
                         compression: str | None = "lzf") -> dict[str, dict]:  # fmt: skip
    """Every dataset of `n_signals` x repeat `seeds`, each in `cwola_dataset(out_dir, n, seed)`
    (all of them or, if one fails, none), the test set read once; returns each one's counts
    by folder name."""
    with open_jets(jetclass_dir / "train.h5") as file:
        n_top = int((file[schema.H5_LABELS][:] == SIGNAL).sum())
    if n_signals and max(n_signals) > n_top:
        raise InputError(f"params: 'finetune.grid.cwola_signal' asks for {max(n_signals)} top "
                         f"jets; {jetclass_dir / 'train.h5'} holds {n_top}")  # fmt: skip
    test = pure_test_set(jetclass_dir, n_test_per_class, profile_seed, min_background_at_fpr,
                         fpr)  # fmt: skip
    counts = {}
    with atomic_dir(out_dir) as tmp:
        for n_signal in n_signals:
            for seed in seeds:
                folder = cwola_dataset(tmp, n_signal, seed)
                counts[folder.name] = _write_dataset(
                    jetclass_dir, folder, test, n_signal=n_signal, n_background=n_background,
                    val_fraction=val_fraction, seed=[profile_seed, seed],
                    min_background_at_fpr=min_background_at_fpr, fpr=fpr,
                    compression=compression)  # fmt: skip
    return counts
