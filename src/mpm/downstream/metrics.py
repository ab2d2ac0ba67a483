"""Downstream metrics: significance improvement for CWoLa, vertex partitions scored by the
adjusted Rand index, balanced accuracy of track origins (scikit-learn where it has them)."""

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import adjusted_rand_score, roc_curve


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


def partition_from_edges(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Vertex label per track [N] from symmetric pair scores [N, N]: tracks joined by a score
    above `threshold` share a vertex, transitively (connected components)."""
    adjacency = csr_matrix(np.triu(scores > threshold, k=1))
    return connected_components(adjacency, directed=False)[1]


def vertex_ari(true_vertex: np.ndarray, predicted: np.ndarray) -> float:
    """Adjusted Rand index of one jet's predicted partition of its tracks."""
    return float(adjusted_rand_score(true_vertex, predicted))


def n_secondary_vertices(true_vertex: np.ndarray) -> int:
    """Distinct secondary vertices among a jet's tracks (vertex id 0 is the primary)."""
    return int(len(np.unique(true_vertex[true_vertex > 0])))
