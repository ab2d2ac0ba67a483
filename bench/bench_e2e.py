"""Benchmark of a whole profile end to end: `dvc repro` in a fresh clone with an empty DVC
cache, as a new user's `make` runs it (budgets on 2 cores: smoke 5 min, default 60 min).

Clones the repository's HEAD into a temporary folder, selects the profile, runs `dvc repro`
with every output line time-stamped, and records the wall time and each stage's time in
results/bench/e2e_<profile>.json. --log summarises a time-stamped log of such a run instead
(lines `HH:MM:SS <dvc output>`, as this script writes them).

    python bench/bench_e2e.py --profile smoke        # ~5 min
    python bench/bench_e2e.py --profile default      # ~1 hour

The machine's speed just before the run (import torch, a matmul) is recorded beside the
times: these machines differ by up to 2x from day to day. --keep DIR keeps the clone.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = re.compile(r"^(\d\d:\d\d:\d\d) Running stage '([^']+)'")


def stage_times(lines: list[str], end: str) -> dict[str, float]:
    """Seconds of each stage: from its `Running stage` line to the next one (or `end`)."""
    starts = [(m[2], m[1]) for line in lines if (m := STAGE.match(line))]
    clock = [datetime.datetime.strptime(t, "%H:%M:%S") for _, t in starts]
    clock.append(datetime.datetime.strptime(end, "%H:%M:%S"))
    seconds = {}
    for (name, _), a, b in zip(starts, clock, clock[1:]):
        seconds[name] = (b - a).total_seconds() % 86400  # a run past midnight
    return seconds


MACHINE_PROBE = """
import time; tic = time.perf_counter(); import torch; imported = time.perf_counter() - tic
torch.set_num_threads(2); a = torch.randn(2048, 2048); a @ a; tic = time.perf_counter()
for _ in range(10): a @ a
print(round(imported, 2), round(10 * 2 * 2048**3 / (time.perf_counter() - tic) / 1e9, 1))
"""


def machine_speed() -> dict:
    """How fast this machine is right now (its speed varies from day to day): seconds to
    import torch, and GFLOP/s of a 2048^2 float32 matmul on 2 threads."""
    out = subprocess.run([sys.executable, "-c", MACHINE_PROBE], capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    return {"import_torch_s": float(out[0]), "matmul_gflops": float(out[1])}


def run_profile(profile: str, log: Path, keep: Path | None = None) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        clone = keep or Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        if profile != "default":
            (clone / "params.yaml").write_text((clone / "profiles" / f"{profile}.yaml").read_text())
        env = {**os.environ, "PYTHONPATH": str(clone / "src")}  # the clone's code
        tic = time.perf_counter()
        with subprocess.Popen(["dvc", "repro"], cwd=clone, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc, log.open("w") as out:
            for line in proc.stdout:
                out.write(f"{time.strftime('%H:%M:%S')} {line}")
                out.flush()
        return time.perf_counter() - tic, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("smoke", "default", "paper"), required=True)
    parser.add_argument("--log", help="summarise this time-stamped log of a run instead")
    parser.add_argument("--wall-s", type=float, help="with --log: the run's wall time")
    parser.add_argument("--out", help="default: results/bench/e2e_<profile>.json (the log: "
                        "the same name, .log)")  # fmt: skip
    parser.add_argument("--keep", help="clone into this new folder and keep it (its dvc.lock "
                        "and outputs are a complete run to adopt)")  # fmt: skip
    args = parser.parse_args()
    # the commit the clone runs (HEAD when the run starts; the repository may move on meanwhile)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    out = Path(args.out or REPO / "results" / "bench" / f"e2e_{args.profile}.json")
    speed = None
    if args.log:
        log, wall, rc = Path(args.log), args.wall_s, 0
    else:
        log = out.with_suffix(".log")  # beside the result, so a trial run keeps the recorded one
        speed = machine_speed()
        wall, rc = run_profile(args.profile, log, Path(args.keep) if args.keep else None)
    lines = log.read_text().splitlines()
    if rc or not lines:
        sys.exit(f"error: bench_e2e: dvc repro failed (exit {rc}); see {log}")
    seconds = stage_times(lines, lines[-1][:8])
    families = defaultdict(float)
    for name, s in seconds.items():
        families[name.split("@")[0]] += s
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "machine_speed_before": speed,
        "profile": args.profile,
        "commit": commit,
        "wall_s": round(wall if wall is not None else sum(seconds.values())),
        "stages_run": len(seconds),
        "seconds_by_stage_family": {k: round(v) for k, v in
                                    sorted(families.items(), key=lambda kv: -kv[1])},
        "seconds_by_stage": {k: round(v) for k, v in seconds.items()},
    }  # fmt: skip
    print(f"{args.profile}: {result['wall_s'] / 60:.1f} min, {len(seconds)} stages")
    for name, s in result["seconds_by_stage_family"].items():
        print(f"  {name:<28} {s / 60:6.1f} min")
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
