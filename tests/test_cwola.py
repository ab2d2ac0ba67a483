"""CWoLa datasets: two QCD halves, signal injected into the second, a pure test set; one
dataset per (n_signal, seed)."""

import h5py
import numpy as np
import pytest

from mpm.data import schema
from mpm.data.h5io import CONTENT_DIGEST
from mpm.downstream.cwola import (
    BACKGROUND,
    SIGNAL,
    build_cwola,
    build_cwola_datasets,
    first_of_class,
)
from mpm.errors import InputError

KWARGS = dict(n_background=None, val_fraction=0.2, n_test_per_class=None,
              min_background_at_fpr=0.1)  # fmt: skip


def _keys(jets: np.ndarray) -> set:
    return {tuple(row) for row in jets.round(4)}


def _read(path):
    with h5py.File(path) as f:
        return f[schema.H5_JETS][:], f[schema.H5_LABELS][:]


def _build(src, out, n_signal, seed):
    return build_cwola(src, out, n_signal=n_signal, seed=[1, seed], **KWARGS)


def _signal(src, out):
    """The injected top jets of a built dataset (train and validation)."""
    top = _keys(first_of_class(src / "train.h5", SIGNAL, None)[schema.H5_JETS])
    jets = np.concatenate([_read(out / "train.h5")[0], _read(out / "val.h5")[0]])
    return _keys(jets) & top


def test_cwola_mixes_labels_and_keeps_a_pure_test_set(jetclass, tmp_path):
    root, _ = jetclass
    src = root / "jetclass"
    summary = _build(src, tmp_path / "c", 10, 0)
    qcd = _keys(first_of_class(src / "train.h5", BACKGROUND, None)[schema.H5_JETS])
    half = len(qcd) // 2
    train, val = _read(tmp_path / "c/train.h5"), _read(tmp_path / "c/val.h5")
    jets = np.concatenate([train[0], val[0]])
    labels = np.concatenate([train[1], val[1]])
    assert summary["n_background_half"] == half
    # label 0: half of the QCD jets; label 1: the other half plus every signal jet
    assert _keys(jets[labels == 0]) <= qcd and len(jets[labels == 0]) == half
    assert (labels == 1).sum() == half + 10 and len(_signal(src, tmp_path / "c")) == 10
    assert not _signal(src, tmp_path / "c") & _keys(jets[labels == 0])
    # the test set is pure, with the true labels
    test_jets, test_labels = _read(tmp_path / "c/test.h5")
    test_top = _keys(first_of_class(src / "test.h5", SIGNAL, None)[schema.H5_JETS])
    assert _keys(test_jets[test_labels == 1]) == test_top
    # seeded: the same split again
    _build(src, tmp_path / "again", 10, 0)
    np.testing.assert_array_equal(_read(tmp_path / "again/train.h5")[0], train[0])
    with pytest.raises(InputError, match="jets of class Tbqq, 100000 needed"):
        _build(src, tmp_path / "x", 100_000, 0)
    assert not (tmp_path / "x").exists()


def test_the_validation_share_is_cut_from_each_part_and_recorded(jetclass, tmp_path):
    root, _ = jetclass
    summary = _build(root / "jetclass", tmp_path / "c", 10, 0)
    # 20% of the 10 signal jets validate, 8 train; the files and the summary say so
    assert (summary["n_signal_train"], summary["n_signal_val"]) == (8, 2)
    top = _keys(first_of_class(root / "jetclass/train.h5", SIGNAL, None)[schema.H5_JETS])
    assert len(_keys(_read(tmp_path / "c/train.h5")[0]) & top) == 8
    assert len(_keys(_read(tmp_path / "c/val.h5")[0]) & top) == 2
    with h5py.File(tmp_path / "c/train.h5") as f:
        counts = (f.attrs["n_signal"], f.attrs["n_signal_train"], f.attrs["n_signal_val"])
    assert counts == (10, 8, 2)


def test_each_repeat_draws_its_own_halves_and_signal_nested_across_sizes(jetclass, tmp_path):
    root, _ = jetclass
    src = root / "jetclass"
    for n, seed in [(10, 0), (10, 1), (20, 0)]:
        _build(src, tmp_path / f"{n}-s{seed}", n, seed)
    s0, s1 = _signal(src, tmp_path / "10-s0"), _signal(src, tmp_path / "10-s1")
    assert s0 != s1  # another repeat injects other top jets ...
    trains = [_read(tmp_path / f"10-s{s}/train.h5") for s in (0, 1)]
    halves = [_keys(jets[labels == 0]) for jets, labels in trains]
    assert halves[0] != halves[1]  # ... into other QCD halves
    assert s0 <= _signal(src, tmp_path / "20-s0")  # a larger set adds to a smaller one's


def test_too_few_background_test_jets_at_the_working_point_is_an_error(jetclass, tmp_path):
    root, _ = jetclass
    n_qcd = len(first_of_class(root / "jetclass/test.h5", BACKGROUND, None)[schema.H5_LABELS])
    kwargs = {**KWARGS, "min_background_at_fpr": 50}
    with pytest.raises(InputError, match=r"finetune\.cwola\.min_background_at_fpr.*"
                       f"{n_qcd} QCD test jets"):  # fmt: skip
        build_cwola(root / "jetclass", tmp_path / "c", n_signal=10, seed=0, **kwargs)
    assert not (tmp_path / "c").exists()


def test_the_grids_datasets_are_the_single_datasets_with_one_test_file_all_or_none(
    jetclass, tmp_path
):
    root, _ = jetclass
    src = root / "jetclass"
    counts = build_cwola_datasets(src, tmp_path / "grid", n_signals=[10, 20], seeds=[0, 1],
                                  profile_seed=1, **KWARGS)  # fmt: skip
    assert sorted(counts) == ["10-s0", "10-s1", "20-s0", "20-s1"]
    for name in counts:
        n_signal, seed = name.split("-s")
        assert _build(src, tmp_path / "single" / name, int(n_signal), int(seed)) == counts[name]
        for split in ("train", "val", "test"):
            with h5py.File(tmp_path / "grid" / name / f"{split}.h5") as grid, \
                    h5py.File(tmp_path / "single" / name / f"{split}.h5") as single:
                assert grid.attrs[CONTENT_DIGEST] == single.attrs[CONTENT_DIGEST]
    digests = set()
    for name in counts:
        with h5py.File(tmp_path / "grid" / name / "test.h5") as file:
            digests.add(file.attrs[CONTENT_DIGEST])
    assert len(digests) == 1  # one test set for every dataset
    with pytest.raises(InputError, match="'finetune.grid.cwola_signal' asks for 100000 top"):
        build_cwola_datasets(src, tmp_path / "failed", n_signals=[10, 100000], seeds=[0],
                             profile_seed=1, **KWARGS)  # fmt: skip
    kwargs = {**KWARGS, "n_background": 10**6}  # more QCD jets than the set holds
    with pytest.raises(InputError, match="needed"):
        build_cwola_datasets(src, tmp_path / "failed", n_signals=[10], seeds=[0, 1],
                             profile_seed=1, **kwargs)  # fmt: skip
    assert not (tmp_path / "failed").exists()
