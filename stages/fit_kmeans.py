"""DVC stage `fit_kmeans`: the k-means tokenizer of the k-means backbone.

Fits K centroids to the preprocessed features (the set of `model.encoder.features`, or of
--features: the Table 1 ablation's MPMv1 rows tokenize the kinematics only) of every
constituent of the first N JetClass training jets (faiss on CPU, torchpq on CUDA) and reports
the quantisation error and the codebook usage on validation jets.
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from mpm.atomic import atomic_file
from mpm.cli import run_stage
from mpm.models.encoder import FEATURE_SETS
from mpm.params import get, one_of, positive_int
from mpm.tokenizers.kmeans import (
    BACKENDS,
    fit_kmeans,
    quantisation_score,
    save_centroids,
    training_points,
)

log = logging.getLogger("fit_kmeans")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/processed/jetclass", help="converted JetClass")
    parser.add_argument("--preprocessor", default="data/preprocessor/quantile.joblib")
    parser.add_argument("--out", default="models/tokenizers/kmeans.pt")
    parser.add_argument("--metrics", default="results/tokenizers/kmeans.json")
    parser.add_argument("--features", help=f"one of {', '.join(FEATURE_SETS)} "
                        "(default: params model.encoder.features)")  # fmt: skip


def body(params: dict, args: argparse.Namespace) -> None:
    name = "tokenizers.kmeans"
    k = positive_int(get(params, f"{name}.k"), f"{name}.k")
    n_jets = positive_int(get(params, f"{name}.n_jets"), f"{name}.n_jets")
    iterations = positive_int(get(params, f"{name}.iterations"), f"{name}.iterations")
    backend = one_of(get(params, f"{name}.backend"), f"{name}.backend", BACKENDS)
    seed = get(params, "seed")
    if args.features is None:
        features = one_of(get(params, "model.encoder.features"), "model.encoder.features",
                          FEATURE_SETS)  # fmt: skip
    else:
        features = one_of(args.features, "--features", FEATURE_SETS)
    data, pre = Path(args.data), Path(args.preprocessor)
    points = training_points(data / "train.h5", pre, n_jets, seed, features)
    tic = time.perf_counter()
    centroids = fit_kmeans(points, k, iterations, seed, backend)
    fit_s = time.perf_counter() - tic
    val = training_points(data / "val.h5", pre, n_jets, seed + 1, features)
    error, counts = quantisation_score(centroids, val)
    usage = np.count_nonzero(counts) / k
    metrics = {
        "k": k,
        "n_points": len(points),
        "fit_s": round(fit_s, 1),
        "val_mse": round(float(error), 5),
        "val_codebook_usage": round(usage, 4),
    }
    log.info("%d centroids in %.1f s; validation MSE %.4f, codebook usage %.1f%%",
             k, fit_s, metrics["val_mse"], 100 * usage)  # fmt: skip
    save_centroids(centroids, Path(args.out))
    with atomic_file(args.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    run_stage("fit_kmeans", __doc__.splitlines()[0].split(": ", 1)[1], body, add_arguments)
