"""Pre-training: schedule, backbone artifact, a tiny run end to end, resume after SIGKILL."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
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
from mpm.training.schedule import (
    PaperOptimizer,
    adamw_warmup_exponential,
    fused_adamw,
    warmup_exponential,
)
from mpm.training.vqvae import train_vqvae


def test_schedule_warms_up_then_halves_every_half_life():
    assert warmup_exponential(0, 10, 100) == pytest.approx(0.1)
    assert warmup_exponential(9, 10, 100) == pytest.approx(1.0)
    assert warmup_exponential(10, 10, 100) == pytest.approx(1.0)
    assert warmup_exponential(110, 10, 100) == pytest.approx(0.5)
    assert warmup_exponential(210, 10, 100) == pytest.approx(0.25)


class _FusedToyModule(PaperOptimizer, L.LightningModule):
    """A linear fit with the fused AdamW of the CUDA path (fused AdamW runs on CPU too)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.grad_norms = []

    def training_step(self, batch, batch_idx):
        return (self.layer(batch[0]) - 100.0).pow(2).mean()  # far from the target: big grads

    def configure_optimizers(self):
        cfg = {"lr": 1e-3, "warmup_steps": 1, "half_life_steps": 10}
        out = adamw_warmup_exponential(self.parameters(), cfg, 0.0, fused=True)
        out["optimizer"].register_step_post_hook(lambda *_: self.grad_norms.append(
            torch.nn.utils.get_total_norm([p.grad for p in self.parameters()]).item()))
        return out


def test_fused_adamw_only_on_cuda_and_without_the_fp16_scaler():
    on_cuda, on_cpu = SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)
    assert fused_adamw([on_cuda, on_cuda], "bf16-mixed") and fused_adamw([on_cuda], "32-true")
    assert not fused_adamw([on_cuda], "16-mixed")  # Lightning unscales fp16 gradients first
    assert not fused_adamw([on_cuda, on_cpu], "bf16-mixed") and not fused_adamw([], "32-true")


def test_fused_adamw_under_bf16_mixed_precision_clips_its_gradients(tmp_path):
    # Lightning's mixed-precision plugin raises for gradient clipping with a fused optimizer
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 4)),
                                       batch_size=8)  # fmt: skip
    module = _FusedToyModule()
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=3,
                        gradient_clip_val=0.5, default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)  # fmt: skip
    trainer.fit(module, data)
    assert trainer.optimizers[0].defaults["fused"]
    assert len(module.grad_norms) == 3 and max(module.grad_norms) <= 0.5 + 1e-4


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


def _stage(tmp_path, root, params, name):
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params))
    paths = _paths(tmp_path / name, "regression")
    cmd = [sys.executable, str(REPO / "stages/pretrain.py"), "--params",
           str(tmp_path / f"{name}.yaml"), "--backbone", "regression",
           "--data", str(root / "jetclass"), "--preprocessor", str(root / "pre.joblib"),
           *[f"--{k.replace('_', '-')}={v}" for k, v in paths.items()]]  # fmt: skip
    return cmd, paths


def test_killed_pretraining_resumes_exactly_where_it_stopped(jetclass, tmp_path):
    """SIGKILL after a checkpoint at step k, then a re-run: it resumes and from step k + 1
    on logs the same losses as an uninterrupted run (loader position and random numbers
    restored), and ends with the same weights. Two loader workers: their turns resume too."""
    root, params = jetclass
    params = {**params, "loader": {"num_workers": 2},
              "pretrain": {**params["pretrain"], "steps": 60, "val_every_steps": 10}}  # fmt: skip
    whole_cmd, whole = _stage(tmp_path, root, params, "whole")
    done = subprocess.run(whole_cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cmd, paths = _stage(tmp_path, root, params, "killed")
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
    assert 0 < step_at_kill < 50
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr
    assert json.loads(paths["metrics"].read_text())["steps"] == 60
    # The curve spans the whole run, each step once: the rows before the kill are kept and
    # those logged after the last checkpoint are not repeated.
    curve = pd.read_csv(paths["log_dir"] / "metrics.csv")
    steps = curve.dropna(subset=["train/total"])["step"]
    assert steps.is_unique and steps.is_monotonic_increasing
    assert steps.min() < step_at_kill <= steps.max() and steps.max() >= 50
    expected = pd.read_csv(whole["log_dir"] / "metrics.csv")
    after = lambda c: c[c["step"] > step_at_kill].dropna(subset=["train/total"])  # noqa: E731
    assert len(after(curve)) >= 3
    assert after(curve)["train/total"].tolist() == after(expected)["train/total"].tolist()
    resumed, _ = load_backbone(paths["out"])
    uninterrupted, _ = load_backbone(whole["out"])
    for (name, a), (_, b) in zip(resumed.state_dict().items(), uninterrupted.state_dict().items()):
        assert torch.equal(a, b), name


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


def _asides(run_dir):
    return sorted(run_dir.parent.glob(f"{run_dir.name}.aside-*"))


def test_a_checkpoint_of_other_inputs_or_settings_is_moved_aside_not_resumed(tmp_path, caplog):
    tokenizer = tmp_path / "tok.pt"
    tokenizer.write_bytes(b"first")
    run_dir = tmp_path / "run"
    first = run_fingerprint({"lr": 1}, [tokenizer])
    assert prepare_run_dir(run_dir, first) is None
    (run_dir / "last.ckpt").write_bytes(b"checkpoint")
    same = run_fingerprint({"lr": 1}, [tokenizer])
    assert prepare_run_dir(run_dir, same) == run_dir / "last.ckpt"
    tokenizer.write_bytes(b"second")  # e.g. a refitted tokenizer
    with caplog.at_level("WARNING"):
        assert prepare_run_dir(run_dir, run_fingerprint({"lr": 1}, [tokenizer])) is None
    # never deleted: moved aside, with one line saying why and where
    (aside,) = _asides(run_dir)
    assert (aside / "last.ckpt").read_bytes() == b"checkpoint"
    assert not (run_dir / "last.ckpt").exists()
    (line,) = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert str(aside) in line and f"inputs.{tokenizer}" in line
    assert run_fingerprint({"lr": 2}, [tokenizer]) != run_fingerprint({"lr": 1}, [tokenizer])
    # SLURM's pre-emption checkpoint, newer than last.ckpt, is the one resumed
    now = run_fingerprint({"lr": 1}, [tokenizer])
    (run_dir / "last.ckpt").write_bytes(b"periodic")
    (run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"pre-emption")
    stat = (run_dir / "last.ckpt").stat()
    os.utime(run_dir / "hpc_ckpt_1.ckpt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert prepare_run_dir(run_dir, now) == run_dir / "hpc_ckpt_1.ckpt"
    # trainer.force_resume resumes a folder of other settings, and stamps it with the new ones
    other = run_fingerprint({"lr": 3}, [tokenizer])
    assert prepare_run_dir(run_dir, other, force_resume=True) == run_dir / "hpc_ckpt_1.ckpt"
    assert prepare_run_dir(run_dir, other) == run_dir / "hpc_ckpt_1.ckpt"
    (run_dir / "finished").touch()  # a run that reached its last step is trained afresh
    assert prepare_run_dir(run_dir, other) is None and len(_asides(run_dir)) == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


def test_the_fingerprint_holds_content_and_result_code_not_mtimes_or_plotting(
    tmp_path, monkeypatch
):
    import shutil

    import mpm

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.bin").write_bytes(b"jets")
    before = run_fingerprint({"lr": 1}, [data])
    os.utime(data / "train.bin", ns=(1, 1))  # what a `dvc checkout` or a copy does
    assert run_fingerprint({"lr": 1}, [data]) == before
    (data / "train.bin").write_bytes(b"JETS")
    assert run_fingerprint({"lr": 1}, [data]) != before
    # a copy of the package: a plotting or report edit keeps the run resumable, a model edit not
    package = tmp_path / "pkg" / "mpm"
    shutil.copytree(Path(mpm.__file__).parent, package,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    monkeypatch.setattr(mpm, "__file__", str(package / "__init__.py"))
    base = run_fingerprint({}, [])["code"]
    for edited in ("plotting/style.py", "report.py", "cli.py"):
        (package / edited).write_text((package / edited).read_text() + "\n# edit\n")
    assert run_fingerprint({}, [])["code"] == base
    for edited in ("models/layers.py", "data/loader.py", "tasks/reconstruction.py"):
        source = (package / edited).read_text()
        (package / edited).write_text(source + "\n# edit\n")
        assert run_fingerprint({}, [])["code"] != base, edited
        (package / edited).write_text(source)


def test_a_converted_file_is_identified_by_the_digest_of_its_rows(jetclass, tmp_path):
    import h5py

    from mpm.training.fit import content_id

    root, _ = jetclass
    with h5py.File(root / "jetclass/train.h5") as f:
        recorded = f.attrs["content_sha1"]
    assert content_id(root / "jetclass/train.h5") == f"rows:{recorded}"
    ids = {content_id(root / f"jetclass/{split}.h5") for split in ("train", "val", "test")}
    assert len(ids) == 3


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
