"""CWoLa datasets: two QCD halves, signal injected into the second, a pure test set."""

import h5py
import numpy as np
import pytest

from mpm.data import schema
from mpm.downstream.cwola import BACKGROUND, SIGNAL, build_cwola, first_of_class
from mpm.errors import InputError


def _keys(jets: np.ndarray) -> set:
    return {tuple(row) for row in jets.round(4)}


def _read(path):
    with h5py.File(path) as f:
        return f[schema.H5_JETS][:], f[schema.H5_LABELS][:]


def test_cwola_mixes_labels_and_keeps_a_pure_test_set(jetclass, tmp_path):
    root, _ = jetclass
    src = root / "jetclass"
    kwargs = dict(n_signal=10, n_background=None, val_fraction=0.2, n_test_per_class=None)
    summary = build_cwola(src, tmp_path / "c", seed=1, **kwargs)
    qcd = _keys(first_of_class(src / "train.h5", BACKGROUND, None)[schema.H5_JETS])
    top = _keys(first_of_class(src / "train.h5", SIGNAL, 10)[schema.H5_JETS])
    half = len(qcd) // 2
    train, val = _read(tmp_path / "c/train.h5"), _read(tmp_path / "c/val.h5")
    jets = np.concatenate([train[0], val[0]])
    labels = np.concatenate([train[1], val[1]])
    assert len(val[1]) == round(0.2 * len(labels)) and summary["n_background_half"] == half
    # label 0: half of the QCD jets; label 1: the other half plus every signal jet
    assert _keys(jets[labels == 0]) <= qcd and len(jets[labels == 0]) == half
    assert top <= _keys(jets[labels == 1]) and (labels == 1).sum() == half + 10
    assert not top & _keys(jets[labels == 0])
    # the test set is pure, with the true labels
    test_jets, test_labels = _read(tmp_path / "c/test.h5")
    test_top = _keys(first_of_class(src / "test.h5", SIGNAL, None)[schema.H5_JETS])
    assert _keys(test_jets[test_labels == 1]) == test_top
    # seeded: the same split again; the files open as converted jets
    build_cwola(src, tmp_path / "again", seed=1, **kwargs)
    np.testing.assert_array_equal(_read(tmp_path / "again/train.h5")[0], train[0])
    with pytest.raises(InputError, match="jets of class Tbqq, 100000 needed"):
        build_cwola(src, tmp_path / "x", seed=1, **{**kwargs, "n_signal": 100_000})
    assert not (tmp_path / "x").exists()
