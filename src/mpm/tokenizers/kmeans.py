"""K-means tokenizer of the preprocessed continuous constituent features (all 7, or the
feature set of `model.encoder.features`).

Fitted with faiss on CPU or torchpq on CUDA (the paper's choice; it needs cupy, see
requirements-gpu.txt); either way the artifact is the same: the centroids [K, F] as float32
in a torch file. Tokens are nearest-centroid indices.
"""

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mpm.atomic import atomic_file
from mpm.data import schema
from mpm.data.h5io import open_jets
from mpm.data.preprocess import load_preprocessor
from mpm.errors import InputError
from mpm.models.encoder import feature_index

log = logging.getLogger(__name__)
BACKENDS = ("auto", "faiss", "torchpq")


def training_points(
    train_h5: Path, preprocessor: Path, n_jets: int, seed: int, features: str = "all"
) -> np.ndarray:
    """Preprocessed features [M, F] (the set `features`) of every constituent of the first
    `n_jets` jets (the file is shuffled at conversion, so the first jets are a random sample)."""
    pre = load_preprocessor(preprocessor)
    with open_jets(train_h5) as f:
        n = min(n_jets, len(f[schema.H5_LABELS]))
        csts, ids, mask = (
            f[k][:n] for k in (schema.H5_CONSTITUENTS, schema.H5_IDS, schema.H5_MASK)
        )
    points = pre(csts, ids, mask, np.random.default_rng(seed))[mask]
    return points[:, feature_index(features)]


def _fit_faiss(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    import faiss

    kmeans = faiss.Kmeans(points.shape[1], k, niter=iterations, seed=seed, verbose=False,
                          max_points_per_centroid=max(256, len(points) // k + 1))  # fmt: skip
    kmeans.train(np.ascontiguousarray(points, dtype=np.float32))
    return kmeans.centroids


def _fit_torchpq(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    from torchpq.clustering import KMeans

    torch.manual_seed(seed)
    kmeans = KMeans(n_clusters=k, max_iter=iterations, distance="euclidean")
    data = torch.from_numpy(points).cuda().T.contiguous()  # torchpq wants [dim, n]
    kmeans.fit(data)
    return kmeans.centroids.T.cpu().numpy()


def fit_kmeans(points: np.ndarray, k: int, iterations: int, seed: int, backend: str) -> np.ndarray:
    """Centroids [k, d] (float32)."""
    if backend == "auto":
        backend = "torchpq" if torch.cuda.is_available() else "faiss"
    if len(points) < k:
        raise InputError(f"k-means: {len(points)} points cannot make {k} centroids")
    log.info("k-means: %d centroids from %d points with %s", k, len(points), backend)
    fit = {"faiss": _fit_faiss, "torchpq": _fit_torchpq}[backend]
    return np.asarray(fit(points, k, iterations, seed), dtype=np.float32)


FORMAT = "mpm-kmeans/1"


def save_centroids(centroids: np.ndarray, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save({"format": FORMAT, "centroids": torch.from_numpy(centroids)}, tmp)


def load_centroids(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: k-means tokenizer file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        assert blob["format"] == FORMAT
        centroids = blob["centroids"].numpy()
    except Exception:
        raise InputError(f"{path}: not a k-means tokenizer file") from None
    if centroids.ndim != 2 or centroids.shape[1] > len(schema.CONTINUOUS_FEATURES):
        raise InputError(f"{path}: centroids have shape {centroids.shape}, expected [K, F<=7]")
    return centroids


class KMeansTokenizer(nn.Module):
    """Nearest-centroid token of each constituent: csts [..., F] -> tokens [...] (the mask
    argument of the tokenizer interface is not needed: tokens are per constituent)."""

    def __init__(self, centroids: np.ndarray):
        super().__init__()
        self.register_buffer("centroids", torch.as_tensor(centroids, dtype=torch.float32))

    @property
    def n_tokens(self) -> int:
        return len(self.centroids)

    @property
    def n_features(self) -> int:
        return self.centroids.shape[1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 does not change the argmin.
        scores = x.float() @ self.centroids.T - 0.5 * (self.centroids**2).sum(1)
        return scores.argmax(-1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [...] -> their centroids' features [..., F]."""
        return self.centroids[tokens]


def quantisation_score(
    centroids: np.ndarray, points: np.ndarray, chunk_points: int = 1 << 15
) -> tuple[float, np.ndarray]:
    """(mean squared distance of `points` [M, F] to their nearest centroid, how many points
    each centroid takes [K]), scored `chunk_points` at a time: one matmul of all points
    against all centroids is M x K floats (terabytes at the paper's 4e7 x 16384)."""
    tokenizer = KMeansTokenizer(centroids)
    squared_error, counts = 0.0, np.zeros(len(centroids), dtype=np.int64)
    for start in range(0, len(points), chunk_points):
        x = torch.from_numpy(np.ascontiguousarray(points[start : start + chunk_points]))
        tokens = tokenizer(x)
        squared_error += float(((x - tokenizer.centroids[tokens]) ** 2).sum(dtype=torch.float64))
        counts += np.bincount(tokens.numpy(), minlength=len(centroids))
    return squared_error / max(len(points), 1), counts
