"""Downstream metrics: significance improvement for CWoLa, vertex partitions scored by the
adjusted Rand index, balanced accuracy of track origins (scikit-learn where it has them)."""

import numpy as np
from sklearn.metrics import roc_curve


def sic(labels: np.ndarray, scores: np.ndarray, fpr: float = 0.01) -> float:
    """Significance improvement TPR / sqrt(FPR) at the background efficiency `fpr`, with the
    signal efficiency interpolated linearly along the ROC curve (labels: 1 = signal)."""
    labels = np.asarray(labels)
    if not (labels == 1).any() or not (labels == 0).any():
        raise ValueError("SIC needs both signal (1) and background (0) jets")
    fprs, tprs, _ = roc_curve(labels, scores)
    return float(np.interp(fpr, fprs, tprs) / np.sqrt(fpr))


def sic_error(
    labels: np.ndarray, scores: np.ndarray, fpr: float = 0.01, n_boot: int = 200, seed: int = 0
) -> float:
    """Standard deviation of the SIC over `n_boot` bootstrap resamples of the test set (signal
    and background resampled separately, so each keeps its size): the error of a SIC measured
    on a finite test set, where only fpr x n_background jets fix the working point."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in (0, 1)]
    draws = [sic(labels[idx], scores[idx], fpr)
             for idx in (np.concatenate([rng.choice(g, len(g)) for g in groups])
                         for _ in range(n_boot))]  # fmt: skip
    return float(np.std(draws, ddof=1))


def joined_tracks(scores: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Pair scores [B, N, N] of jets' tracks (mask [B, N]) -> [B, N, N], True where two real
    tracks share a predicted vertex: those joined by a score above `threshold`, transitively
    (each jet's connected components, by repeated squaring of its adjacency)."""
    real = mask[:, :, None] & mask[:, None, :]
    upper = np.triu(scores > threshold, k=1) & real
    reach = (upper | upper.transpose(0, 2, 1) | np.eye(scores.shape[1], dtype=bool)) & real
    for _ in range(max(int(np.ceil(np.log2(max(scores.shape[1], 2)))), 1)):
        reach = np.matmul(reach.astype(np.float32), reach.astype(np.float32)) > 0
    return reach


def vertex_ari(scores: np.ndarray, mask: np.ndarray, true_vertex: np.ndarray,
               threshold: float = 0.5) -> np.ndarray:  # fmt: skip
    """Adjusted Rand index [B] of each jet's predicted partition of its real tracks
    (`joined_tracks`) against its true vertices [B, N], from the counts of track pairs (as
    scikit-learn's adjusted_rand_score; 1 where the two agree on every pair)."""
    pairs = np.triu(mask[:, :, None] & mask[:, None, :], k=1)
    same = true_vertex[:, :, None] == true_vertex[:, None, :]
    joined = joined_tracks(scores, mask, threshold)
    tp, fn = (pairs & same & joined).sum((1, 2)), (pairs & same & ~joined).sum((1, 2))
    fp, tn = (pairs & ~same & joined).sum((1, 2)), (pairs & ~same & ~joined).sum((1, 2))
    tp, fn, fp, tn = (x.astype(np.float64) for x in (tp, fn, fp, tn))
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    agree = (fn == 0) & (fp == 0)
    return np.where(agree, 1.0, 2 * (tp * tn - fn * fp) / np.where(agree, 1.0, denominator))


def n_secondary_vertices(true_vertex: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Distinct secondary vertices [B] among jets' real tracks (vertex id 0 is the primary)."""
    ids = np.sort(np.where(mask & (true_vertex > 0), true_vertex, -1), axis=1)
    first = np.concatenate([np.ones_like(ids[:, :1], bool), ids[:, 1:] != ids[:, :-1]], 1)
    return ((ids > 0) & first).sum(1)
