"""Pre-training: schedule, backbone artifact, a tiny run end to end, resume after SIGKILL."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO
from mpm.errors import InputError
from mpm.models.backbone import load_backbone, save_backbone
from mpm.models.encoder import JetEncoder
from mpm.training.fit import prepare_run_dir, run_fingerprint
from mpm.training.run import pretrain
from mpm.training.schedule import warmup_exponential
from mpm.training.vqvae import train_vqvae


def test_schedule_warms_up_then_halves_every_half_life():
    assert warmup_exponential(0, 10, 100) == pytest.approx(0.1)
    assert warmup_exponential(9, 10, 100) == pytest.approx(1.0)
    assert warmup_exponential(10, 10, 100) == pytest.approx(1.0)
    assert warmup_exponential(110, 10, 100) == pytest.approx(0.5)
    assert warmup_exponential(210, 10, 100) == pytest.approx(0.25)


def test_backbone_round_trip_and_errors(tmp_path):
    cfg = {"dim": 16, "depth": 1, "heads": 2, "registers": 2}
    encoder = JetEncoder(**cfg)
    save_backbone(encoder, cfg, {"backbone": "random", "steps": 0}, tmp_path / "b.pt")
    loaded, info = load_backbone(tmp_path / "b.pt")
    assert info == {"backbone": "random", "steps": 0}
    for a, b in zip(encoder.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="backbone file not found"):
        load_backbone(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(InputError, match="junk.pt: not a readable backbone file"):
        load_backbone(tmp_path / "junk.pt")


def _paths(tmp_path, name):
    return dict(
        out=tmp_path / f"{name}.pt",
        checkpoints=tmp_path / "ckpt" / name,
        log_dir=tmp_path / "logs" / name,
        metrics=tmp_path / f"{name}.json",
    )


def test_tiny_pretraining_run_lowers_the_loss_and_exports_a_backbone(jetclass, tmp_path):
    root, params = jetclass
    params = {**params, "pretrain": {**params["pretrain"], "steps": 60, "val_every_steps": 30}}
    paths = _paths(tmp_path, "regression")
    summary = pretrain("regression", params, root / "jetclass", root / "pre.joblib", **paths)
    assert summary["steps"] == 60 and 0 < summary["linear_probe_accuracy"] <= 1
    assert json.loads(paths["metrics"].read_text()) == summary
    curve = pd.read_csv(paths["log_dir"] / "metrics.csv")
    total = curve["train/total"].dropna().to_numpy()
    assert all(math.isfinite(v) for v in total)
    assert total[-3:].mean() < total[:3].mean()
    assert {"val/id", "val/regression"} <= set(curve.columns)
    encoder, info = load_backbone(paths["out"])
    assert info == {"backbone": "regression", "steps": 60}
    assert encoder.dim == params["model"]["encoder"]["dim"]


def test_killed_pretraining_resumes_from_its_checkpoint(jetclass, tmp_path):
    root, params = jetclass
    params = {**params, "pretrain": {**params["pretrain"], "steps": 120, "val_every_steps": 10}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    paths = _paths(tmp_path, "regression")
    cmd = [sys.executable, str(REPO / "stages/pretrain.py"), "--params",
           str(tmp_path / "params.yaml"), "--backbone", "regression",
           "--data", str(root / "jetclass"), "--preprocessor", str(root / "pre.joblib"),
           *[f"--{k.replace('_', '-')}={v}" for k, v in paths.items()]]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = paths["checkpoints"] / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let the checkpoint file be complete
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists() and not paths["out"].exists() and not paths["metrics"].exists()
    step_at_kill = torch.load(last, weights_only=False)["global_step"]
    assert 0 < step_at_kill < 120
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    assert json.loads(paths["metrics"].read_text())["steps"] == 120
    # The curve spans the whole run, each step once: the rows before the kill are kept and
    # those logged after the last checkpoint are not repeated.
    steps = pd.read_csv(paths["log_dir"] / "metrics.csv").dropna(subset=["train/total"])["step"]
    assert steps.is_unique and steps.is_monotonic_increasing
    assert steps.min() < step_at_kill <= steps.max() and steps.max() >= 110


def test_ddp_pretraining_on_two_cpu_processes(jetclass, tmp_path):
    """The trainer group's devices/strategy reach Lightning: two DDP ranks (gloo on the CPU)
    each read their own half of the data, and rank 0 alone writes the outputs."""
    root, params = jetclass
    params = {**params, "trainer": {**params["trainer"], "accelerator": "cpu", "devices": 2,
                                    "strategy": "ddp"},
              "pretrain": {**params["pretrain"], "steps": 20, "val_every_steps": 10,
                           "batch_size": 16}}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    paths = _paths(tmp_path, "regression")
    done = subprocess.run(
        [sys.executable, str(REPO / "stages/pretrain.py"),
         "--params", str(tmp_path / "params.yaml"), "--backbone", "regression",
         "--data", str(root / "jetclass"), "--preprocessor", str(root / "pre.joblib"),
         *[f"--{k.replace('_', '-')}={v}" for k, v in paths.items()]],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr
    summary = json.loads(paths["metrics"].read_text())
    assert summary["steps"] == 20 and "val/total" in summary["final"]
    assert load_backbone(paths["out"])[1] == {"backbone": "regression", "steps": 20}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ckpt", "logs", "params.yaml", "regression.json", "regression.pt"]
    )  # no temporary or second copy left by rank 1


def test_a_checkpoint_of_other_inputs_or_settings_is_not_resumed(tmp_path):
    tokenizer = tmp_path / "tok.pt"
    tokenizer.write_bytes(b"first")
    run_dir = tmp_path / "run"
    first = run_fingerprint({"lr": 1}, [tokenizer])
    assert prepare_run_dir(run_dir, first) is None
    (run_dir / "last.ckpt").write_bytes(b"checkpoint")
    same = run_fingerprint({"lr": 1}, [tokenizer])
    assert prepare_run_dir(run_dir, same) == run_dir / "last.ckpt"
    tokenizer.write_bytes(b"second")  # e.g. a refitted tokenizer
    assert prepare_run_dir(run_dir, run_fingerprint({"lr": 1}, [tokenizer])) is None
    assert not (run_dir / "last.ckpt").exists()
    assert run_fingerprint({"lr": 2}, [tokenizer]) != run_fingerprint({"lr": 1}, [tokenizer])
    # SLURM's pre-emption checkpoint, newer than last.ckpt, is the one resumed
    now = run_fingerprint({"lr": 1}, [tokenizer])
    (run_dir / "last.ckpt").write_bytes(b"periodic")
    (run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"pre-emption")
    stat = (run_dir / "last.ckpt").stat()
    os.utime(run_dir / "hpc_ckpt_1.ckpt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert prepare_run_dir(run_dir, now) == run_dir / "hpc_ckpt_1.ckpt"
    (run_dir / "finished").touch()  # a run that reached its last step is trained afresh
    assert prepare_run_dir(run_dir, now) is None and not (run_dir / "hpc_ckpt_1.ckpt").exists()


def test_vqvae_tokenizer_trains_and_feeds_the_vqvae_backbone(jetclass, tmp_path):
    root, params = jetclass
    vq = {**params["tokenizers"]["vqvae"], "steps": 40, "val_every_steps": 20, "n_val_jets": 100}
    params = {**params, "tokenizers": {**params["tokenizers"], "vqvae": vq},
              "pretrain": {**params["pretrain"], "steps": 10, "val_every_steps": 10}}  # fmt: skip
    paths = _paths(tmp_path, "vqvae_tokenizer")
    summary = train_vqvae(params, root / "jetclass", root / "pre.joblib", **paths)
    assert summary["steps"] == 40 and 0 < summary["final"]["val/codebook_usage"] <= 1
    assert 1 <= summary["final"]["val/perplexity"] <= vq["codebook_size"]
    curve = pd.read_csv(paths["log_dir"] / "metrics.csv")
    reconstruction = curve["train/reconstruction"].dropna().to_numpy()
    assert reconstruction[-2:].mean() < reconstruction[:2].mean()
    backbone = _paths(tmp_path, "vqvae")
    summary = pretrain("vqvae", params, root / "jetclass", root / "pre.joblib", **backbone,
                       tokenizer=paths["out"])  # fmt: skip
    assert summary["steps"] == 10 and math.isfinite(summary["final"]["train/vqvae"])
