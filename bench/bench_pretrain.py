"""Benchmark of a pre-training step: the MAE pass (dropped constituents removed before the
encoder) against the BERT-style pass (mask tokens inside the encoder), same encoder, batch
and mask rate; training-step time, forward-only (inference) time and peak memory, on CPU and
on CUDA when there is one; with --compile also the MAE step with torch.compiled layers.

Each measurement runs in its own process so that peak memory is its own. Prints a table and
records it in results/bench/pretrain.json.

    python bench/bench_pretrain.py [--steps 5] [--batch-size 256] [--mask-rate 0.4] [--compile]
"""

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def _measure(variant: str, args) -> dict:
    """One process: `steps` timed training steps of `variant` (after one warm-up step)."""
    from mpm.data.loader import JetDataset
    from mpm.training.fit import compile_layers
    from mpm.training.pretrain import PretrainModule

    params = yaml.safe_load((REPO / args.params).read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    dataset = JetDataset(
        REPO / "data/processed/jetclass/train.h5", REPO / "data/preprocessor/quantile.joblib",
        batch_size=args.batch_size, seed=0,
    )  # fmt: skip
    batches = list(itertools.islice(iter(dataset), args.steps + 1))
    model = params["model"] | {"variant": variant.removesuffix("+compile")}
    module = PretrainModule(
        "regression", model, params["pretrain"], args.mask_rate,
        params["convert"]["jetclass"]["max_constituents"],
    ).to(device)  # fmt: skip
    if variant.endswith("+compile"):
        compile_layers(module)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        tic = time.perf_counter()
        with torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):
            loss = module._losses(batch)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    forward_times = []
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            tic = time.perf_counter()
            with torch.autocast(device, torch.bfloat16, enabled=device == "cuda"):
                module._losses(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            forward_times.append(time.perf_counter() - tic)
    out = {
        "device": device,
        "step_ms": 1000 * sum(times[1:]) / args.steps,
        "forward_ms": 1000 * sum(forward_times[1:]) / args.steps,
    }
    if device == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:  # peak resident memory growth of this process during the steps (ru_maxrss in kB)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_memory_mb"] = (rss_after - rss_before) / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="profile whose model is timed")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mask-rate", type=float, default=0.4)
    parser.add_argument("--compile", action="store_true", help="also time compiled MAE layers")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--out", default=str(REPO / "results/bench/pretrain.json"))
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(_measure(args.variant, args)))
        return
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "params": args.params,
        "batch_size": args.batch_size,
        "mask_rate": args.mask_rate,
    }
    for variant in ("mae", "bert", *(["mae+compile"] if args.compile else [])):
        cmd = [sys.executable, __file__, "--variant", variant, "--params", args.params,
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--mask-rate", str(args.mask_rate)]  # fmt: skip
        line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(line.strip().splitlines()[-1])
        print(f"{variant:11s} {results[variant]}")
    results["bert_over_mae_step_time"] = round(
        results["bert"]["step_ms"] / results["mae"]["step_ms"], 2
    )
    results["bert_over_mae_forward_time"] = round(
        results["bert"]["forward_ms"] / results["mae"]["forward_ms"], 2
    )
    if args.compile:
        results["eager_over_compiled_step_time"] = round(
            results["mae"]["step_ms"] / results["mae+compile"]["step_ms"], 2
        )
    results["mae_over_bert_peak_memory"] = round(
        results["mae"]["peak_memory_mb"] / max(results["bert"]["peak_memory_mb"], 1e-9), 2
    )
    print(f"BERT-style / MAE step time: {results['bert_over_mae_step_time']}x; forward time: "
          f"{results['bert_over_mae_forward_time']}x; MAE / BERT-style peak memory: "
          f"{results['mae_over_bert_peak_memory']}x")  # fmt: skip
    if args.compile:
        print(f"eager / compiled MAE step time: {results['eager_over_compiled_step_time']}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
