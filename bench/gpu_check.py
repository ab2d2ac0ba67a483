"""The GPU check, one command of at most ~8 minutes on one CUDA GPU: the CUDA-only tests,
torchpq's k-means at the paper's K, and the paper-size pre-training step timed.

1. The CUDA-only tests (pytest -k "cuda or torchpq"): the varlen attention kernel in bf16
   equal to each jet alone in fp32; token targets under bf16 autocast equal to fp32's; torchpq
   and faiss fitting the same k-means.
2. torchpq k-means, K=16384 on 1M points of 7 features, 20 iterations: fit time.
3. The pre-training step of the paper-size model (profiles/paper.yaml) at batch 1000, on
   synthetic jets of the data contract (multiplicities as JetClass's, ~N(53, 20) in 1..128):
   MAE and BERT-style, attention on packed jets (the varlen kernel) and padded (SDPA, one jet
   per row), eager and with compiled layers; bf16 autocast, fused AdamW, gradient clipping.
   Prints jets/s, peak memory, MFU (the step's matmul FLOPs, counted by FlopCounterMode, over
   its time and the chip's dense bf16 peak) and the graphs compiled after the warm-up steps
   (0: batches of other shapes do not recompile).
Records everything in --out (default results/bench/gpu_check.json).

The machine's Python needs PyTorch, Lightning and h5py; the rest travels as wheels
(bench/gpu_wheels.txt), fetched here and installed there (23 MB):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        -r bench/gpu_wheels.txt
    python3 -m pip wheel --no-deps -w .whl normflows==1.7.3   # no wheel on the index
  there:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:src python3 bench/gpu_check.py

--smoke runs the same code at toy size on the CPU (default-profile model, batch 16, two timed
steps, k-means K=8 on 2000 points with faiss; of the compiled variants the packed MAE only,
with the eager backend: dynamo alone, which decides the graphs): the test suite runs it.
"""

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Dense bf16 tensor-core peaks (FLOP/s) by the chip's name, for the MFU
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
MATMULS = ("mm", "addmm", "bmm", "baddbmm")


def synthetic_batch(batch_size: int, max_constituents: int, generator, device) -> dict:
    """Jets of the data contract (preprocessed features ~ N(0, 1), IDs, mask), pT-ordered
    padding at the end, trimmed to the longest jet as the loader does."""
    n = (torch.randn(batch_size, generator=generator) * 20 + 53).round().clamp(1, max_constituents)
    width = int(n.max())
    mask = torch.arange(width)[None] < n[:, None]
    csts = torch.randn(batch_size, width, 7, generator=generator) * mask[..., None]
    ids = torch.randint(0, 8, (batch_size, width), generator=generator) * mask
    labels = torch.zeros(batch_size, dtype=torch.long)
    batch = {"csts": csts, "csts_id": ids, "mask": mask, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def _module(params: dict, variant: str, device):
    from mpm.training.pretrain import PretrainModule

    model = params["model"] | {"variant": variant}
    module = PretrainModule("regression", model, params["pretrain"], params["mask_rate"],
                            params["convert"]["jetclass"]["max_constituents"])  # fmt: skip
    return module.to(device)


def _compile(module, backend: str) -> None:
    """The training stages' compile_layers, with the backend of this run."""
    from mpm.training.fit import compile_layers

    compile_with = functools.partialmethod(torch.nn.Module.compile, backend=backend)
    with mock.patch.object(torch.nn.Module, "compile", compile_with):
        compile_layers(module)


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _matmul_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    counts = counter.get_flop_counts().get("Global", {})
    return int(sum(v for op, v in counts.items() if str(op).split(".")[-1] in MATMULS))


def time_step(params, variant, layout, compiled, args, device) -> dict:
    """Warm-up steps (compiling, if asked), then timed ones, each on a batch of its own shape."""
    from mpm.models.layers import attention_layout
    from mpm.training.schedule import adamw_warmup_exponential, fused_adamw

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    module = _module(params, variant, device)
    parameters = list(module.parameters())
    fused = fused_adamw(parameters, "bf16-mixed" if device.type == "cuda" else "32-true")
    cfg = params["pretrain"]
    optimizer = adamw_warmup_exponential(parameters, cfg, cfg["weight_decay"], fused)
    optimizer = optimizer["optimizer"]
    n_max = params["convert"]["jetclass"]["max_constituents"]
    batches = [synthetic_batch(args.batch_size, n_max, generator, device)
               for _ in range(args.warmup + args.steps)]  # fmt: skip
    cuda = device.type == "cuda"

    def step(batch):
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
            loss = module._losses(batch)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), params["pretrain"]["grad_clip"])
        optimizer.step()

    with attention_layout(layout):
        flops = _matmul_flops(lambda: step(batches[0]))  # eager, before any compiling
        if compiled:
            _compile(module, args.backend)
        tic = time.perf_counter()
        for batch in batches[: args.warmup]:
            step(batch)
        warmup_s = time.perf_counter() - tic
        graphs = _graphs()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tic = time.perf_counter()
        for batch in batches[args.warmup :]:
            step(batch)
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - tic) / args.steps
    out = {
        "step_ms": round(1000 * seconds, 2),
        "jets_per_s": round(args.batch_size / seconds, 1),
        "matmul_gflop_per_step": round(flops / 1e9, 3),
        "warmup_s": round(warmup_s, 1),
    }
    if cuda:
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        peak = next((v for k, v in BF16_PEAK.items() if k in torch.cuda.get_device_name()), None)
        out["mfu"] = round(flops / seconds / peak, 3) if peak else None
    if compiled:
        out["graphs_compiled_after_warmup"] = _graphs() - graphs
    return out


def kmeans_check(args) -> dict:
    from mpm.tokenizers.kmeans import fit_kmeans

    rng = torch.Generator().manual_seed(0)
    points = torch.randn(args.kmeans_points, 7, generator=rng).numpy()
    tic = time.perf_counter()
    centroids = fit_kmeans(points, args.kmeans_k, 20, seed=0, backend=args.kmeans_backend)
    return {
        "backend": args.kmeans_backend, "k": args.kmeans_k, "points": args.kmeans_points,
        "iterations": 20, "fit_s": round(time.perf_counter() - tic, 2),
        "centroids_finite": bool(torch.isfinite(torch.from_numpy(centroids)).all()),
    }  # fmt: skip


def cuda_tests() -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/test_packing.py", "tests/test_models.py", "-k", "cuda or torchpq"]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    return {"returncode": run.returncode, "summary": run.stdout.strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU")
    parser.add_argument("--out", default=str(REPO / "results/bench/gpu_check.json"))
    parser.add_argument("--budget-s", type=float, default=420,
                        help="skip the step variants left after this many seconds")  # fmt: skip
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (use --smoke for the CPU run of the same code)")
    profile = "params.yaml" if args.smoke else "profiles/paper.yaml"
    params = yaml.safe_load((REPO / profile).read_text())
    args.batch_size, args.warmup, args.steps = (16, 2, 2) if args.smoke else (1000, 3, 10)
    args.backend = "eager" if args.smoke else "inductor"
    args.kmeans_k, args.kmeans_points = (8, 2000) if args.smoke else (16384, 1_000_000)
    args.kmeans_backend = "faiss" if args.smoke else "torchpq"
    start = time.perf_counter()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "profile": profile, "batch_size": args.batch_size,
    }  # fmt: skip
    if not args.smoke:
        results["cuda_tests"] = cuda_tests()
        print("CUDA-only tests:", results["cuda_tests"], flush=True)
    # a failing part is recorded and the rest still runs: a GPU lease is short
    try:
        results["kmeans"] = kmeans_check(args)
    except Exception as error:  # torchpq or faiss absent, or cupy without a matching CUDA
        results["kmeans"] = {"error": f"{type(error).__name__}: {error}"}
    print("k-means:", results["kmeans"], flush=True)
    results["steps"] = {}
    # eager first (fast), then compiled; padded last: the variants a short budget can drop
    variants = [(c, lay, v) for c in (False, True) for lay in ("packed", "padded")
                for v in ("mae", "bert")]  # fmt: skip
    if args.smoke:  # compiling is slow on a CPU: one compiled variant covers the code
        variants = [v for v in variants if not v[0] or v[1:] == ("packed", "mae")]
    for compiled, layout, variant in variants:
        name = f"{variant}, {layout}, {'compiled' if compiled else 'eager'}"
        if time.perf_counter() - start > args.budget_s:
            results["steps"][name] = {"skipped": "time budget"}
        else:
            torch._dynamo.reset()
            try:
                results["steps"][name] = time_step(params, variant, layout, compiled, args,
                                                   device)  # fmt: skip
            except Exception as error:
                results["steps"][name] = {"error": f"{type(error).__name__}: {error}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"{name:28s} {results['steps'][name]}", flush=True)
    timed = {k: v for k, v in results["steps"].items() if "jets_per_s" in v}
    if timed:
        best = max(timed, key=lambda k: timed[k]["jets_per_s"])
        results["best"] = {"variant": best, "jets_per_s": timed[best]["jets_per_s"],
                           "bar 12k jets/s met": timed[best]["jets_per_s"] >= 12_000}  # fmt: skip
    for variant in ("mae", "bert"):
        packed, padded = (timed.get(f"{variant}, {lay}, eager") for lay in ("packed", "padded"))
        if packed and padded:
            results[f"{variant}: packed over padded, jets/s"] = round(
                packed["jets_per_s"] / padded["jets_per_s"], 2)
    mae, bert = timed.get("mae, packed, eager"), timed.get("bert, packed, eager")
    if mae and bert:
        results["bert over mae, step time"] = round(bert["step_ms"] / mae["step_ms"], 2)
        if "peak_memory_gb" in mae:
            results["mae over bert, peak memory"] = round(
                mae["peak_memory_gb"] / bert["peak_memory_gb"], 2)
    results["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps({k: v for k, v in results.items() if k != "steps"}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    if results.get("cuda_tests", {}).get("returncode"):
        sys.exit("gpu_check: CUDA-only tests failed: " + " ".join(results["cuda_tests"]["summary"]))


if __name__ == "__main__":
    main()
