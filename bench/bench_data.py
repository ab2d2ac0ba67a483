"""Benchmark of the data layer: ROOT -> HDF5 conversion and loader throughput (jets/s).

Runs on freshly generated JetClass-like files (Pythia8 + FastJet, the default profile's
generator settings) in a temporary folder; prints a table and records it in
results/bench/data.json.

    python bench/bench_data.py [--jets-per-file 2000] [--batch-size 1000]
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mpm.data.convert import convert_split, dataset_spec
from mpm.data.generator.run import generate, validated_config
from mpm.data.loader import JetDataset, make_loader
from mpm.data.preprocess import fit_preprocessor, save_preprocessor

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets-per-file", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--out", default=str(REPO / "results/bench/data.json"))
    args = parser.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen = validated_config(params)
        gen["workers"] = None  # all cores
        gen["jetclass"]["jets_per_file"] = {"train": args.jets_per_file, "val": 1, "test": 1}
        gen["btag"]["jets_per_flavour"] = {"train": 1, "val": 1, "test": 1}
        generate(tmp / "raw", gen, seed=0)
        files = sorted((tmp / "raw/jetclass/train_100M").glob("*.root"))
        spec = dataset_spec("jetclass", params["convert"]["jetclass"])
        for compression in ("lzf", None):
            tic = time.perf_counter()
            summary = convert_split(
                files,
                spec,
                tmp / f"train_{compression}.h5",
                seed=0,
                step_size=params["convert"]["step_size"],
                max_jets_per_file=None,
                bucket_jets=params["convert"]["bucket_jets"],
                empty_jets="error",
                compression=compression,
            )
            rate = summary["n_jets"] / (time.perf_counter() - tic)
            results[f"convert_jets_per_s[{compression}]"] = round(rate)
        n_jets = summary["n_jets"]
        results["n_jets"] = n_jets
        save_preprocessor(
            fit_preprocessor(tmp / "train_lzf.h5", 20000, 500, 1_000_000, 0), tmp / "pre.joblib"
        )
        for compression in ("lzf", None):
            for workers in sorted({0, min(2, os.cpu_count())}):
                ds = JetDataset(
                    tmp / f"train_{compression}.h5",
                    tmp / "pre.joblib",
                    batch_size=args.batch_size,
                    seed=0,
                    drop_last=True,
                )
                loader = make_loader(ds, workers)
                rates = []
                for _ in range(3):  # first pass includes worker start-up
                    tic = time.perf_counter()
                    seen = sum(len(b["labels"]) for b in loader)
                    rates.append(seen / (time.perf_counter() - tic))
                results[f"loader_jets_per_s[{compression},workers={workers}]"] = round(
                    float(np.median(rates))
                )
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
