"""Downstream metrics against hand-computed cases."""

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score

from mpm.downstream.metrics import (
    joined_tracks,
    n_secondary_vertices,
    sic,
    sic_error,
    vertex_ari,
)


def test_sic_by_hand():
    # 100 background jets with scores 0..99, 10 signal jets scoring above all of them except
    # one, which sits below the top two background jets: at FPR = 1% (one background jet
    # passes) 9 of 10 signal jets pass (TPR 0.9), so SIC = 0.9 / 0.1 = 9.
    background = np.arange(100.0)
    signal = np.r_[np.full(9, 200.0), 97.5]
    labels = np.r_[np.zeros(100), np.ones(10)]
    assert sic(labels, np.r_[background, signal], fpr=0.01) == pytest.approx(9.0)
    # a useless tagger: signal scores like background, TPR = FPR, SIC = sqrt(FPR)
    rng = np.random.default_rng(0)
    scores = rng.random(200_000)
    labels = rng.random(200_000) < 0.5
    assert sic(labels, scores, fpr=0.04) == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="both signal"):
        sic(np.zeros(5), np.arange(5.0))


def test_sic_error_covers_the_spread_of_test_sets_and_shrinks_with_background():
    # A toy tagger (Gaussian scores, signal shifted by 1.5): the SIC of independent test sets
    # scatters as the bootstrap error of one of them says, and 10x the background shrinks it.
    rng = np.random.default_rng(1)

    def test_set(n_background, n_signal=500):
        scores = np.r_[rng.normal(size=n_background), rng.normal(1.5, size=n_signal)]
        return np.r_[np.zeros(n_background), np.ones(n_signal)], scores

    spread = np.std([sic(*test_set(500)) for _ in range(200)])
    errors = [sic_error(*test_set(500), n_boot=100, seed=s) for s in range(5)]
    assert 0.6 * spread < np.mean(errors) < 1.6 * spread
    assert sic_error(*test_set(5000), n_boot=100) < 0.6 * np.mean(errors)


def _one_jet(scores, truth):
    return scores[None], np.ones((1, len(truth)), bool), np.asarray(truth)[None]


def test_tracks_are_joined_transitively_and_ari_scores_the_partition():
    scores = np.zeros((5, 5))
    for i, j in [(0, 1), (1, 2), (3, 4)]:  # 0-1-2 chained, 3-4 paired
        scores[i, j] = scores[j, i] = 0.9
    joined = joined_tracks(*_one_jet(scores, np.zeros(5))[:2])[0]
    assert joined[0, 2] and joined[2, 0] and joined[3, 4] and not joined[0, 3]
    assert vertex_ari(*_one_jet(scores, [0, 0, 0, 1, 1])) == [1.0]
    # ARI by hand: truth {0,1},{2,3}, prediction {0,1,2,3}: index 2 (pairs within true
    # clusters), expected (2 * 6) / 6 = 2, max 0.5 (2 + 6) = 4 -> (2 - 2) / (4 - 2) = 0.
    assert vertex_ari(*_one_jet(np.ones((4, 4)), [0, 0, 1, 1])) == [0.0]
    assert not joined_tracks(*_one_jet(np.full((3, 3), 0.1), np.zeros(3))[:2])[0].any(
        where=~np.eye(3, dtype=bool))  # nothing joined


def test_batched_ari_is_scikit_learns_on_scipys_connected_components_of_each_jet():
    rng = np.random.default_rng(0)
    b, n = 300, 9
    lengths = rng.integers(0, n + 1, b)
    mask = np.arange(n)[None] < lengths[:, None]
    scores = rng.random((b, n, n)) ** 3  # sparse edges: components of varied sizes
    scores = (scores + scores.transpose(0, 2, 1)) / 2
    truth = rng.integers(0, 4, (b, n))
    ari = vertex_ari(scores, mask, truth)
    joined = joined_tracks(scores, mask)
    for k in range(b):
        m = lengths[k]
        _, predicted = connected_components(np.triu(scores[k, :m, :m] > 0.5, 1), directed=False)
        assert (joined[k, :m, :m] == (predicted[:, None] == predicted[None])).all()
        assert not joined[k, m:].any() and not joined[k, :, m:].any()
        assert ari[k] == pytest.approx(adjusted_rand_score(truth[k, :m], predicted), abs=1e-12)
    sv = n_secondary_vertices(truth, mask)
    assert list(sv) == [len(set(truth[k, : lengths[k]]) - {0}) for k in range(b)]


def test_secondary_vertex_count_and_balanced_accuracy():
    truth = np.array([[0, 0, 2, 1, 2], [0, 0, 3, 3, 3]])
    assert list(n_secondary_vertices(truth, np.arange(5) < np.array([[5], [2]]))) == [2, 0]
    # balanced accuracy: mean recall over classes, e.g. (1/2 + 1) / 2 = 0.75
    assert balanced_accuracy_score([0, 0, 1], [0, 1, 1]) == pytest.approx(0.75)
