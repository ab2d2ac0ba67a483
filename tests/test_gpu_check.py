"""bench/gpu_check.py, the one-command GPU check, run on the CPU at toy size (--smoke): every
line it runs on a GPU runs here too, with the CPU's stand-ins (faiss for torchpq, the eager
compile backend (dynamo alone) for inductor, padded-group attention for the varlen kernel)."""

import json
import subprocess
import sys

from conftest import REPO


def test_the_gpu_check_runs_every_step_variant_and_counts_recompiles(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench/gpu_check.py"), "--smoke", "--out", str(out),
         "--budget-s", "1e9"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["kmeans"]["k"] == 8 and results["kmeans"]["centroids_finite"]
    timed = {name: step for name, step in results["steps"].items() if "jets_per_s" in step}
    # every eager variant; of the compiled ones (slow to compile on a CPU) the packed MAE
    assert set(results["steps"]) == set(timed) == {
        f"{v}, {lay}, eager" for v in ("mae", "bert") for lay in ("packed", "padded")
    } | {"mae, packed, compiled"}
    for step in timed.values():
        assert step["jets_per_s"] > 0 and step["matmul_gflop_per_step"] > 0
    # the encoder sees every constituent in the BERT-style pass, only the kept ones in the MAE's
    assert timed["bert, packed, eager"]["matmul_gflop_per_step"] > timed["mae, packed, eager"][
        "matmul_gflop_per_step"]  # fmt: skip
    # warm-up batches and timed ones differ in shape: no graph is compiled after the warm-up
    assert timed["mae, packed, compiled"]["graphs_compiled_after_warmup"] == 0
    assert results["best"]["variant"] in timed
