"""Benchmark of the k-means tokenizer fit: seconds and points/s for the default profile's
settings (k, iterations) and the paper's k = 16384, on the CPU (faiss) and, where CUDA and
torchpq are installed, on the GPU (torchpq, the paper's choice).

Clusters constituents of the workspace's converted JetClass training jets (run the
pipeline's `convert@jetclass` and `fit_preprocessor` first); prints a table and records it
in results/bench/kmeans.json.

    python bench/bench_kmeans.py [--n-jets 5000] [--k 512 16384] [--iterations 20]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from mpm.tokenizers.kmeans import fit_kmeans, training_points

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jets", type=int, default=5000, help="jets whose constituents fit")
    parser.add_argument("--k", type=int, nargs="+", default=[512, 16384])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--data", default=str(REPO / "data/processed/jetclass/train.h5"))
    parser.add_argument("--preprocessor", default=str(REPO / "data/preprocessor/quantile.joblib"))
    parser.add_argument("--out", default=str(REPO / "results/bench/kmeans.json"))
    args = parser.parse_args()

    points = training_points(Path(args.data), Path(args.preprocessor), args.n_jets, 0, "all")
    backends = ["faiss"]
    if torch.cuda.is_available():
        try:
            import torchpq  # noqa: F401

            backends.append("torchpq")
        except ImportError:
            pass
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    results = {"machine": machine, "n_points": len(points), "dim": int(points.shape[1]),
               "iterations": args.iterations, "fits": []}  # fmt: skip
    print(f"{len(points)} constituents x {points.shape[1]} features, {args.iterations} iterations")
    print(f"{'backend':>8} {'k':>6} {'seconds':>8} {'points/s':>10}")
    for backend in backends:
        for k in args.k:
            if k > len(points):
                continue
            tic = time.perf_counter()
            fit_kmeans(points, k, args.iterations, 0, backend)
            seconds = time.perf_counter() - tic
            rate = len(points) * args.iterations / seconds
            results["fits"].append({"backend": backend, "k": k, "seconds": round(seconds, 2),
                                    "point_iterations_per_s": round(rate)})  # fmt: skip
            print(f"{backend:>8} {k:>6} {seconds:>8.2f} {rate:>10.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
