"""Benchmark of a pre-training step: the MAE pass (dropped constituents removed before the
encoder) against the BERT-style pass (mask tokens inside the encoder), same encoder, batch
and mask rate; training-step time, forward-only (inference) time and peak memory, on CPU and
on CUDA when there is one; with --compile also the MAE step with torch.compiled layers.

Each measurement runs in its own process so that peak memory is its own. Prints a table and
records it in results/bench/pretrain.json.

--profile instead records where a step's time goes (torch.profiler self times by kind of op,
and the loader by wall clock) in results/bench/profile_<profile>.json. --peer instead times
our MAE step against a plain nn.TransformerEncoder (norm_first, key-padding mask, linear
head, no decoder) of the same width, depth and heads over the same padded batches,
interleaved in one process; --baseline REV adds the MAE step of a git revision's code, timed
in the same interleaved rounds (results/bench/peer_<profile>.json). --loader measures the
loader's jets/s at batch 1000 against the step's (results/bench/loader_<profile>.json).

    python bench/bench_pretrain.py [--steps 5] [--batch-size 256] [--mask-rate 0.4] [--compile]
    python bench/bench_pretrain.py --profile [--params profiles/paper.yaml --batch-size 32]
    python bench/bench_pretrain.py --peer [--baseline 4f9aa31]
    python bench/bench_pretrain.py --loader
"""

import argparse
import itertools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def _dataset(args):
    from mpm.data.loader import JetDataset

    return JetDataset(
        REPO / "data/processed/jetclass/train.h5", REPO / "data/preprocessor/quantile.joblib",
        batch_size=args.batch_size, seed=0,
    )  # fmt: skip


def _module(variant: str, args):
    from mpm.training.pretrain import PretrainModule

    params = yaml.safe_load((REPO / args.params).read_text())
    model = params["model"] | {"variant": variant}
    return PretrainModule(
        "regression", model, params["pretrain"], args.mask_rate,
        params["convert"]["jetclass"]["max_constituents"],
    )  # fmt: skip


def _measure(variant: str, args) -> dict:
    """One process: `steps` timed training steps of `variant` (after one warm-up step)."""
    from mpm.training.fit import compile_layers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    batches = list(itertools.islice(iter(_dataset(args)), args.steps + 1))
    module = _module(variant.removesuffix("+compile"), args).to(device)
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


# Kinds of op by their aten names (self CPU time); what matches none is elementwise or other.
OP_KINDS = {
    "attention": ("attention",),
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "norm": ("layer_norm",),
    "packing/scatter": ("index", "nonzero", "aten::cat", "gather", "scatter", "masked",
                        "repeat_interleave", "cumsum", "sort", "aten::copy_", "aten::fill_",
                        "aten::zero_", "embedding", "aten::stack"),  # fmt: skip
}


def _kind(op: str) -> str:
    return next((k for k, names in OP_KINDS.items() if any(n in op for n in names)), "elementwise")


def _profile(args) -> dict:
    """Shares of the wall time of `steps` training steps, batches read from the loader in the
    loop (num_workers 0): the loader and the optimizer (zero_grad, clipping, AdamW) by wall
    clock; forward + backward split by kind of torch op (profiler self CPU time), the rest of
    it being Python and dispatch overhead."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    batches = iter(_dataset(args))
    module = _module("mae", args)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)

    def update():
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    module._losses(next(batches))["total"].backward()  # warm-up
    update()
    wall = defaultdict(float)
    by_kind = defaultdict(float)
    top = defaultdict(float)
    for _ in range(args.steps):
        tic = time.perf_counter()
        batch = next(batches)
        wall["loader"] += time.perf_counter() - tic
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            tic = time.perf_counter()
            module._losses(batch)["total"].backward()
            wall["forward + backward"] += time.perf_counter() - tic
        for event in prof.key_averages():
            by_kind[_kind(event.key)] += event.self_cpu_time_total / 1e6
            top[event.key] += event.self_cpu_time_total / 1e6
        tic = time.perf_counter()
        update()
        wall["optimizer"] += time.perf_counter() - tic
    total = sum(wall.values())
    shares = {k: v / total for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}
    overhead = wall["forward + backward"] - sum(by_kind.values())
    shares["python/dispatch overhead"] = overhead / total
    shares["optimizer"] = wall["optimizer"] / total
    shares["loader"] = wall["loader"] / total
    return {
        "step_ms (with the profiler on)": 1000 * total / args.steps,
        "shares": {k: round(v, 3) for k, v in shares.items()},
        "top_ops_ms_per_step": {k: round(1000 * v / args.steps, 2)
                                for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:12]},
    }  # fmt: skip


class PlainTransformer(torch.nn.Module):
    """The peer: nn.TransformerEncoder (norm_first, key-padding mask) over the whole padded
    jets, a linear head; the same width, depth, heads and feed-forward width as ours."""

    def __init__(self, encoder_cfg: dict):
        super().__init__()
        dim = encoder_cfg["dim"]
        self.embed = torch.nn.Linear(7, dim)
        layer = torch.nn.TransformerEncoderLayer(dim, encoder_cfg["heads"], 2 * dim, dropout=0.0,
                                                 batch_first=True, norm_first=True)  # fmt: skip
        self.encoder = torch.nn.TransformerEncoder(layer, encoder_cfg["depth"],
                                                   enable_nested_tensor=False)  # fmt: skip
        self.head = torch.nn.Linear(dim, 7)

    def loss(self, batch):
        out = self.head(self.encoder(self.embed(batch["csts"]),
                                     src_key_padding_mask=~batch["mask"]))  # fmt: skip
        return (out - batch["csts"]).pow(2)[batch["mask"]].mean()


def _peer_step_ms(args) -> dict:
    """One process: interleaved rounds of the peer's and our MAE step on the same batches;
    median step time of each."""
    params = yaml.safe_load((REPO / args.params).read_text())
    torch.manual_seed(0)
    batches = list(itertools.islice(iter(_dataset(args)), args.steps + 1))
    ours = _module("mae", args)
    peer = PlainTransformer(params["model"]["encoder"])
    runs = {"ours": (ours, lambda b: ours._losses(b)["total"]), "peer": (peer, peer.loss)}
    times = defaultdict(list)
    for i, batch in enumerate(batches):
        for name, (module, loss_of) in runs.items():
            optimizer = torch.optim.SGD(module.parameters(), lr=0.0)
            tic = time.perf_counter()
            loss = loss_of(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i:  # the first batch warms up
                times[name].append(time.perf_counter() - tic)
    return {name: 1000 * sorted(t)[len(t) // 2] for name, t in times.items()}


def _peer(args) -> dict:
    """Rounds of (ours and peer in one process) and, with --baseline, (the baseline
    revision's code and peer in one process), alternating; medians over rounds."""
    rounds = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"ours": REPO / "src"}
        if args.baseline:
            archive = subprocess.run(["git", "archive", args.baseline, "src"], cwd=REPO,
                                     capture_output=True, check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            sources[f"baseline {args.baseline}"] = Path(tmp) / "src"
        for _ in range(args.rounds):
            for label, src in sources.items():
                cmd = [sys.executable, __file__, "--peer-worker", "--params", args.params,
                       "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                       "--mask-rate", str(args.mask_rate)]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": str(src)}
                line = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                      env=env).stdout.strip().splitlines()[-1]  # fmt: skip
                ms = json.loads(line)
                rounds[f"{label}: MAE step ms"].append(ms["ours"])
                rounds[f"{label}: peer step ms"].append(ms["peer"])
    out = {k: sorted(v)[len(v) // 2] for k, v in rounds.items()}
    out["peer over ours (same process)"] = round(
        out["ours: peer step ms"] / out["ours: MAE step ms"], 2
    )
    if args.baseline:
        base = f"baseline {args.baseline}"
        out["ours over baseline, jets/s"] = round(
            out[f"{base}: MAE step ms"] / out["ours: MAE step ms"], 2
        )
        out["baseline: peer over baseline"] = round(
            out[f"{base}: peer step ms"] / out[f"{base}: MAE step ms"], 2
        )
    out["MAE jets/s"] = round(1000 * args.batch_size / out["ours: MAE step ms"])
    return out


def _loader(args) -> dict:
    """Loader jets/s at batch 1000 (0, 1 and 2 workers, the second pass over the training file,
    after the workers' start) against the jets/s our MAE step consumes at --batch-size; the
    workers a GPU step needs at the paper's bar and goal (and at the measured GPU rate, when
    results/bench/gpu_check.json holds one) if each worker keeps its share of the 2-worker
    rate."""
    from mpm.data.loader import JetDataset, make_loader

    out = {}
    for workers in (0, 1, 2):
        dataset = JetDataset(
            REPO / "data/processed/jetclass/train.h5", REPO / "data/preprocessor/quantile.joblib",
            batch_size=1000, seed=0, drop_last=True,
        )  # fmt: skip
        loader = make_loader(dataset, workers)
        for _ in range(2):  # the first pass starts the workers
            tic = time.perf_counter()
            jets = sum(len(batch["labels"]) for batch in loader)
            rate = jets / (time.perf_counter() - tic)
        out[f"loader jets/s, batch 1000, {workers} workers"] = round(rate)
        del loader
    step = _peer_step_ms(args)["ours"]
    out["MAE step jets/s (batch %d)" % args.batch_size] = round(1000 * args.batch_size / step)
    two = out["loader jets/s, batch 1000, 2 workers"]
    out["loader (2 workers) over the step"] = round(two * step / (1000 * args.batch_size), 1)
    per_worker = two / 2
    targets = {"bar 12k jets/s": 12_000, "goal 30k jets/s": 30_000}
    gpu = REPO / "results/bench/gpu_check.json"
    if gpu.exists():
        rates = json.loads(gpu.read_text()).get("steps", {})
        best = max((r["jets_per_s"] for r in rates.values() if "jets_per_s" in r), default=None)
        if best:
            targets[f"measured GPU step {best:.0f} jets/s"] = best
    for name, rate in targets.items():
        out[f"workers a GPU step needs at the {name}"] = math.ceil(rate / per_worker)
    return out


def _record(kind: str, args, results: dict) -> None:
    profile_name = Path(args.params).stem.replace("params", "default")
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "params": args.params, "batch_size": args.batch_size, "steps": args.steps, **results,
    }  # fmt: skip
    print(json.dumps(results, indent=2))
    out = Path(args.out or REPO / "results/bench" / f"{kind}_{profile_name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="profile whose model is timed")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mask-rate", type=float, default=0.4)
    parser.add_argument("--compile", action="store_true", help="also time compiled MAE layers")
    parser.add_argument("--profile", action="store_true", help="where a step's time goes")
    parser.add_argument("--peer", action="store_true",
                        help="our MAE step vs a plain nn.TransformerEncoder")  # fmt: skip
    parser.add_argument("--baseline", help="with --peer: also time this git revision's code")
    parser.add_argument("--loader", action="store_true",
                        help="loader jets/s at batch 1000 vs the step's")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="with --peer: interleaved rounds")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="default: results/bench/<pretrain|profile_*|peer_*|"
                        "loader_*>.json")  # fmt: skip
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(_measure(args.variant, args)))
        return
    if args.peer_worker:
        print(json.dumps(_peer_step_ms(args)))
        return
    if args.profile:
        _record("profile", args, _profile(args))
        return
    if args.peer:
        _record("peer", args, _peer(args))
        return
    if args.loader:
        _record("loader", args, _loader(args))
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
    out = Path(args.out or REPO / "results/bench/pretrain.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
