"""slurm/job.sbatch and SLURM pre-emption, outside SLURM's scheduler: stand-in `srun` and
`scontrol` executables on PATH play the parts of the cluster."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO

JOB_SCRIPT = REPO / "slurm" / "job.sbatch"

# srun: starts the task the way SLURM does (one task, its rank in the environment), records
# its pid (the task's: it execs) and arguments. scontrol: records its arguments; `requeue`
# ends the running job as SLURM does, with SIGTERM to its tasks (SIGKILL after KillWait is the
# test's part).
SRUN = """#!/bin/bash
while [ "${1#-}" != "$1" ]; do shift; done  # srun's own options (--kill-on-bad-exit=1)
echo "$$ $*" >> "$STANDIN_LOG/srun.log"
export SLURM_NTASKS=1 SLURM_NTASKS_PER_NODE=1 SLURM_NNODES=1 SLURM_PROCID=0 SLURM_LOCALID=0 \\
    SLURM_NODEID=0 SLURM_STEP_ID=0 SLURM_NODELIST=localhost
exec "$@"
"""
SCONTROL = """#!/bin/bash
echo "$*" >> "$STANDIN_LOG/scontrol.log"
if [ "$1" = requeue ]; then
    while read -r pid _; do kill -TERM "$pid" 2>/dev/null || true; done < "$STANDIN_LOG/srun.log"
fi
"""


def _standins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _launcher() -> str:
    """MPM_LAUNCHER as the job script exports it."""
    found = re.findall(r'^export MPM_LAUNCHER="([^"]*)"$', JOB_SCRIPT.read_text(), re.M)
    assert len(found) == 1, "slurm/job.sbatch exports MPM_LAUNCHER once"
    assert found[0].split()[0] == "srun"
    return found[0]


def _stage_command(stage: str, item: str) -> str:
    """The command of `stage@item` as dvc.yaml writes it (DVC runs it with a shell)."""
    entry = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    cmd = " ".join(entry["do"]["cmd"].split()).replace("${item}", item)
    assert cmd.startswith("$MPM_LAUNCHER python stages/"), cmd
    return cmd


def _pid(log: Path) -> int | None:
    lines = log.read_text().splitlines() if log.is_file() else []
    return int(lines[-1].split()[0]) if lines else None


def _wait_for(condition, proc: subprocess.Popen, log: Path, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the job ended ({proc.returncode}) before {what}:\n"
                        f"{log.read_text()[-3000:]}")  # fmt: skip
        if time.time() > deadline:
            pytest.fail(f"no {what} within {seconds} s")
        time.sleep(0.02)


@pytest.mark.slow  # two runs of a training stage: 11 s idle, 30 s on a busy machine
def test_a_preempted_training_stage_saves_requeues_and_resumes(jetclass, tmp_path):
    """SIGUSR1 (`--signal=SIGUSR1@120`) to a training stage started as the job script starts
    it (`$MPM_LAUNCHER python stages/pretrain.py ...` with the job's MPM_LAUNCHER, srun):
    Lightning saves hpc_ckpt_1.ckpt into the stage's checkpoint folder and calls `scontrol
    requeue <job id>`; the requeued job (same id, same clone) resumes from that checkpoint
    and finishes, with one training curve."""
    root, params = jetclass
    steps = 30
    params = {**params, "pretrain": {**params["pretrain"], "steps": steps, "batch_size": 25,
                                     "val_every_steps": 10}}  # fmt: skip
    clone = tmp_path / "jobs" / "4242"  # the job's clone: dvc.yaml's relative paths
    (clone / "data" / "processed").mkdir(parents=True)
    (clone / "data" / "preprocessor").mkdir()
    shutil.copytree(root / "jetclass", clone / "data/processed/jetclass")
    shutil.copy(root / "pre.joblib", clone / "data/preprocessor/quantile.joblib")
    (clone / "stages").symlink_to(REPO / "stages")
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    logs = tmp_path / "standin-logs"
    logs.mkdir()
    venv_bin = Path(sys.executable).parent
    host = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env = {**host, "PATH": f"{_standins(tmp_path)}:{venv_bin}:{os.environ['PATH']}",
           "STANDIN_LOG": str(logs), "MPM_LAUNCHER": _launcher(),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "mpm"}  # fmt: skip
    cmd = ["bash", "-c", _stage_command("pretrain", "regression")]
    run_dir = clone / "checkpoints/pretrain/regression"

    out = tmp_path / "slurm-mpm-4242.out"
    with out.open("w") as sink:
        job = subprocess.Popen(cmd, cwd=clone, env=env, stdout=sink, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        # the first periodic checkpoint: training runs, Lightning's handlers are installed
        _wait_for(lambda: (run_dir / "last.ckpt").is_file(), job, out, 120, "last.ckpt")
        os.kill(_pid(logs / "srun.log"), signal.SIGUSR1)  # SLURM signals the job's tasks
        _wait_for(lambda: (logs / "scontrol.log").is_file(), job, out, 60, "scontrol call")
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:  # SLURM's SIGKILL after KillWait
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    stderr = out.read_text()
    assert "Handling auto-requeue signal" in stderr, stderr[-3000:]
    assert (logs / "scontrol.log").read_text() == "requeue 4242\n"
    task = (logs / "srun.log").read_text().split(maxsplit=1)[1]  # what srun started
    assert task.startswith("python stages/pretrain.py --backbone regression")
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    assert sorted(p.name for p in run_dir.glob("hpc_ckpt_*.ckpt")) == [hpc.name]
    saved = torch.load(hpc, map_location="cpu", weights_only=False)["global_step"]
    periodic = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert 0 < periodic["global_step"] <= saved < steps
    assert not (clone / "models/backbones/regression.pt").exists()

    # The requeued job: same job id, same clone, the same command.
    requeued = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    resumed = [line for line in requeued.stderr.splitlines() if "pretrain: resuming" in line]
    assert len(resumed) == 1 and hpc.name in resumed[0], requeued.stderr[-3000:]
    assert re.search(rf"\bstep {saved}\b", resumed[0]), resumed[0]
    assert json.loads((clone / "results/pretrain/regression.json").read_text())["steps"] == steps
    assert (clone / "models/backbones/regression.pt").is_file()
    assert (logs / "scontrol.log").read_text() == "requeue 4242\n"  # not requeued again
    curve = pd.read_csv(clone / "results/pretrain/regression/metrics.csv")
    logged = curve.dropna(subset=["train/total"])["step"]
    assert logged.is_unique and logged.is_monotonic_increasing
    assert logged.min() < saved <= logged.max()


def _committed(path: str) -> str:
    """A file as the commit the job script clones (MPM_REPO's HEAD) holds it."""
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def test_slurm_job_script_clones_shares_the_cache_is_requeue_safe_and_hands_over(tmp_path):
    """slurm/job.sbatch outside SLURM's scheduler: a clone per job id with the shared cache
    and the profile, a second start of the same job (a requeue) reuses that clone, and a
    later job takes the dvc.lock entries of the earlier jobs it names, also when requeued."""
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "activate").is_file():
        pytest.skip("the tests do not run in a virtual environment (MPM_VENV)")
    env = {**os.environ, "SLURM_JOB_ID": "4242", "MPM_REPO": str(REPO),
           "MPM_CACHE": str(tmp_path / "cache"), "MPM_WORKDIR": str(tmp_path / "jobs"),
           "MPM_VENV": str(venv), "MPM_PROFILE": "smoke", "HOME": str(tmp_path)}  # fmt: skip
    job = ["bash", str(JOB_SCRIPT), "stage", "list", "--name-only"]
    first = subprocess.run(job, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    clone = tmp_path / "jobs" / "4242"
    assert "pretrain@regression" in first.stdout.split()
    assert (clone / "params.yaml").read_text() == _committed("profiles/smoke.yaml")
    assert str(tmp_path / "cache") in (clone / ".dvc" / "config.local").read_text()
    (clone / "checkpoints").mkdir()
    (clone / "checkpoints" / "marker").write_text("from before the requeue")
    again = subprocess.run(job, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (clone / "checkpoints" / "marker").is_file()  # same clone, checkpoints kept
    usage = subprocess.run(["bash", str(JOB_SCRIPT)], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert usage.returncode == 2 and "usage: sbatch slurm/job.sbatch" in usage.stderr

    # A later job (MPM_AFTER) takes the dvc.lock entries an earlier job's run produced.
    earlier = yaml.safe_load(_committed("dvc.lock"))
    trained = earlier["stages"]["pretrain@regression"]
    trained["params"]["params.yaml"]["seed"] = 7
    # one of its outputs in the shared cache, as that job's run left it
    backbone = b"the backbone job 4000 trained"
    md5 = hashlib.md5(backbone).hexdigest()
    (out,) = [o for o in trained["outs"] if o["path"] == "models/backbones/regression.pt"]
    out.update(md5=md5, size=len(backbone))
    (tmp_path / "cache" / "files" / "md5" / md5[:2]).mkdir(parents=True)
    (tmp_path / "cache" / "files" / "md5" / md5[:2] / md5[2:]).write_bytes(backbone)
    (tmp_path / "jobs" / "4000").mkdir()
    (tmp_path / "jobs" / "4000" / "dvc.lock").write_text(yaml.safe_dump(earlier))
    later_env = env | {"SLURM_JOB_ID": "4243", "MPM_AFTER": "4000"}
    later = subprocess.run(job, env=later_env, capture_output=True, text=True, timeout=300)
    assert later.returncode == 0, later.stderr[-2000:]
    assert "took 1 stage(s) from earlier jobs: pretrain@regression" in later.stderr
    lock_file = tmp_path / "jobs" / "4243" / "dvc.lock"
    lock = yaml.safe_load(lock_file.read_text())["stages"]
    assert lock["pretrain@regression"] == earlier["stages"]["pretrain@regression"]
    assert lock.keys() == earlier["stages"].keys()
    assert (tmp_path / "jobs/4243/models/backbones/regression.pt").read_bytes() == backbone
    # Requeued, the later job takes the earlier job's entries again and keeps the entries
    # its own first start produced (here: as if it had run `generate` with another seed),
    # which the earlier job's lock has as the commit has them.
    # Its pre-empted stage left checkpoints that no lock knows of: they stay for the resume.
    own = yaml.safe_load(lock_file.read_text())
    own["stages"]["generate"]["params"]["params.yaml"]["seed"] = 9
    lock_file.write_text(yaml.safe_dump(own, sort_keys=False))
    in_progress = tmp_path / "jobs" / "4243" / "checkpoints" / "pretrain" / "flow"
    in_progress.mkdir(parents=True)
    (in_progress / "hpc_ckpt_1.ckpt").write_text("saved at the pre-emption signal")
    requeued = subprocess.run(job, env=later_env, capture_output=True, text=True, timeout=300)
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert (in_progress / "hpc_ckpt_1.ckpt").read_text() == "saved at the pre-emption signal"
    lock = yaml.safe_load(lock_file.read_text())["stages"]
    assert lock["generate"] == own["stages"]["generate"] != earlier["stages"]["generate"]
    assert lock["pretrain@regression"] == earlier["stages"]["pretrain@regression"]
    lost = subprocess.run(job, env=env | {"SLURM_JOB_ID": "4244", "MPM_AFTER": "4001"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert lost.returncode != 0 and "4001/dvc.lock: no dvc.lock" in lost.stderr
