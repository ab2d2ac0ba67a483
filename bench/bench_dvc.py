"""Benchmark of DVC's bookkeeping on the whole default DAG: wall time of a no-op `dvc repro`
and of `dvc status` in an up-to-date workspace (budget: 5 s), median of --repeats runs.

Run it in the repository after `dvc repro` (it refuses a workspace that is not up to date,
where `dvc repro` would start training); records results/bench/dvc.json.

    python bench/bench_dvc.py [--repeats 3]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timed(cmd: list[str]) -> tuple[float, str]:
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    return time.perf_counter() - tic, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "results/bench/dvc.json"))
    args = parser.parse_args()
    _, status = _timed(["dvc", "status"])
    if "up to date" not in status:
        sys.exit("error: bench_dvc: the workspace is not up to date; run `dvc repro` first")
    stages = len(_timed(["dvc", "stage", "list", "--name-only"])[1].split())
    times = {"dvc status": [], "dvc repro (no-op)": []}
    for _ in range(args.repeats):
        times["dvc status"].append(_timed(["dvc", "status"])[0])
        seconds, out = _timed(["dvc", "repro"])
        assert "Running stage" not in out, "a stage ran: the workspace was not up to date"
        times["dvc repro (no-op)"].append(seconds)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "stages": stages,
               **{k: {"median_s": round(statistics.median(v), 2),
                      "runs_s": [round(x, 2) for x in v]} for k, v in times.items()}}  # fmt: skip
    for name, value in results.items():
        print(f"{name}: {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
