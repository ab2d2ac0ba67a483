"""A resumable Lightning fit shared by every training stage.

Checkpoints and the CSV log live in one `persist` folder that DVC keeps between runs, so a
killed stage resumes from its last checkpoint and its curve keeps the steps before the kill.
The folder is stamped with the run's configuration, its input files and the library's code:
a run with other settings, data or code starts afresh instead of resuming a stale checkpoint.
A run that reached its last step is marked `finished`: running the stage again (`dvc repro
--force`, or its outputs deleted) trains afresh instead of resuming at the end.
The curve is copied to the stage's plots output at the end.

Under DDP every rank runs the stage's script (Lightning's launcher, or `srun` through
$MPM_LAUNCHER): only rank 0 prepares the folder and writes outputs (`is_rank_zero`). On SLURM,
Lightning saves an `hpc_ckpt_<n>.ckpt` into the folder when the job is about to be pre-empted
and requeues it; the requeued job resumes from the newer of that and `last.ckpt`.
"""

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import mpm
from mpm.atomic import atomic_file
from mpm.data.loader import JetDataModule
from mpm.models.layers import LAYERS

log = logging.getLogger(__name__)
HASHED_BYTES = 64 << 20  # larger inputs are identified by size and mtime, not content
FINISHED = "finished"  # marker of a run folder whose run reached its last step


def _file_id(path: Path) -> str:
    stat = path.stat()
    if stat.st_size > HASHED_BYTES:
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha1(path.read_bytes()).hexdigest()


def run_fingerprint(config: dict, inputs: list[Path]) -> dict:
    """What a resumable run must share with its checkpoint: the configuration, every input
    file (folders: each file inside) and the source of the library."""
    files = sorted(f for p in inputs for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    code = hashlib.sha1()
    for source in sorted(Path(mpm.__file__).parent.rglob("*.py")):
        code.update(source.read_bytes())
    return {
        "config": config,
        "inputs": {str(f): _file_id(f) for f in files},
        "code": code.hexdigest(),
    }


def is_rank_zero() -> bool:
    """Whether this process is DDP rank 0 (or the only process): the one that writes."""
    return rank_zero_only.rank == 0


def trainer_kwargs(trainer_cfg: dict, distributed: bool = True) -> dict:
    """Lightning Trainer settings from the `trainer` params group; precision `auto` is bf16
    mixed on CUDA and fp32 elsewhere (bf16 autocast is far slower on CPUs). `distributed`
    False: one device (fine-tuning runs are small; a cluster runs many side by side)."""
    precision = trainer_cfg["precision"]
    if precision == "auto":
        precision = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    spread = {k: trainer_cfg[k] for k in ("devices", "num_nodes", "strategy")}
    if not distributed:
        spread = {"devices": 1, "num_nodes": 1, "strategy": "auto"}
    return {"accelerator": trainer_cfg["accelerator"], **spread, "precision": precision}


def compile_layers(module: torch.nn.Module) -> None:
    """torch.compile every transformer layer in place (parameter names are unchanged, so
    checkpoints and exported backbones are the same). Layers, not the whole step: masking and
    packing have data-dependent shapes, and sets vary in size from batch to batch."""
    for layer in module.modules():
        if isinstance(layer, tuple(LAYERS.values())):
            layer.compile(dynamic=True)


def _resumable(path: Path, fingerprint: dict) -> Path | None:
    """The newest checkpoint in `path` (periodic `last.ckpt` or SLURM's `hpc_ckpt_<n>.ckpt`)
    if the folder is stamped with `fingerprint` and its run did not finish."""
    stamp = path / "config.json"
    if (path / FINISHED).exists():
        return None
    try:
        if json.loads(stamp.read_text()) != fingerprint:
            return None
    except (OSError, ValueError):
        return None
    checkpoints = [path / "last.ckpt", *path.glob("hpc_ckpt_*.ckpt")]
    return max((c for c in checkpoints if c.is_file()), key=lambda c: c.stat().st_mtime_ns,
               default=None)  # fmt: skip


def prepare_run_dir(path: Path, fingerprint: dict) -> Path | None:
    """The checkpoint to resume from if `path` holds one of the same configuration; otherwise
    rank 0 empties the folder (a run with other params must not resume a stale checkpoint)."""
    resume = _resumable(path, fingerprint)
    if resume or not is_rank_zero():
        return resume
    stamp = path / "config.json"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    stamp.write_text(json.dumps(fingerprint, indent=2))
    return None


def _set_aside_curve(log_dir: Path, step: int) -> None:
    """Keep the curve logged before the checkpoint we resume from in `earlier.csv` (the CSV
    logger deletes metrics.csv when it starts; rows after the checkpoint are logged again)."""
    parts = [p for p in (log_dir / "earlier.csv", log_dir / "metrics.csv") if p.is_file()]
    if not parts:
        return
    curve = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    with atomic_file(log_dir / "earlier.csv") as tmp:
        curve[curve["step"] < step].to_csv(tmp, index=False)
    (log_dir / "metrics.csv").unlink(missing_ok=True)


def _whole_curve(log_dir: Path) -> pd.DataFrame:
    parts = [p for p in (log_dir / "earlier.csv", log_dir / "metrics.csv") if p.is_file()]
    return pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)


def fit(
    module: L.LightningModule,
    cfg: dict,
    params: dict,
    data_dir: Path,
    preprocessor: Path,
    *,
    run_dir: Path,
    log_dir: Path,
    config: dict,
    extra_inputs: tuple[Path, ...] = (),
) -> dict:
    """Train `module` on the converted jets in `data_dir` as the run's params group `cfg`
    says (steps, batch_size, n_train_jets, n_val_jets, val_every_steps, grad_clip), resuming
    from `run_dir` when it holds a checkpoint of the same `config`, inputs and code; the curve
    ends up in `log_dir/metrics.csv`. Returns {"steps", "final" (last logged metrics),
    "jets_per_s"}."""
    tic = time.perf_counter()
    data = JetDataModule(
        data_dir, preprocessor, batch_size=cfg["batch_size"], n_train=cfg["n_train_jets"],
        n_val=cfg["n_val_jets"], seed=params["seed"],
        num_workers=params["loader"]["num_workers"],
    )  # fmt: skip
    fingerprint = run_fingerprint(config, [data_dir, preprocessor, *extra_inputs])
    resume = prepare_run_dir(run_dir, fingerprint)
    if resume:
        step = torch.load(resume, map_location="cpu", weights_only=False)["global_step"]
        log.info("resuming from %s (step %d)", resume, step)
        if is_rank_zero():
            _set_aside_curve(run_dir / "log", step)
    every = cfg["val_every_steps"]
    trainer = L.Trainer(
        **trainer_kwargs(params["trainer"]),
        default_root_dir=run_dir,  # where SLURM's pre-emption checkpoint goes
        max_steps=cfg["steps"],
        max_epochs=-1,
        val_check_interval=every,
        check_val_every_n_epoch=None,
        gradient_clip_val=cfg["grad_clip"],
        # flushed at every checkpoint, so a resumed run keeps the curve up to its checkpoint
        logger=CSVLogger(run_dir, name="log", version="", flush_logs_every_n_steps=every),
        callbacks=[ModelCheckpoint(run_dir, save_last=True, every_n_train_steps=every)],
        log_every_n_steps=10,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    if params["trainer"]["compile"]:
        compile_layers(module)
    trainer.fit(module, datamodule=data, ckpt_path=resume)
    if trainer.is_global_zero:  # the only rank that logs
        with atomic_file(log_dir / "metrics.csv") as tmp:
            _whole_curve(run_dir / "log").to_csv(tmp, index=False)
        (run_dir / FINISHED).touch()
    steps = trainer.global_step
    jets = steps * cfg["batch_size"] * trainer.world_size  # batch_size is per rank
    return {
        "steps": steps,
        "final": {k: round(float(v), 5) for k, v in trainer.callback_metrics.items()},
        "jets_per_s": round(jets / (time.perf_counter() - tic), 1),
    }
