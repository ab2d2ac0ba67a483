"""A resumable Lightning fit shared by every training stage.

Checkpoints and the CSV log live in one `persist` folder that DVC keeps between runs, so a
killed stage resumes from its last checkpoint and its curve keeps the steps before the kill.
The folder is stamped with the run's fingerprint: what decides its result (its params, its input
files by content, the source of the code that builds its model, losses and batches; not
plotting, reporting or the stages' CLIs). A folder of another fingerprint is never resumed nor
deleted: it is moved aside (`<folder>.aside-<time>`, one log line saying why and where), unless
`trainer.force_resume` asks to resume it anyway. A run that reached its last step is marked
`finished`: running the stage again (`dvc repro --force`, or its outputs deleted) moves it aside
and trains afresh instead of resuming at the end.
Resuming is exact: the loader restarts at the batch after the checkpoint's step and every
training step seeds the random numbers (masks, noise) from the seed, the step and the rank, so
a run killed after step k and resumed takes the same steps from k+1 as an uninterrupted one.
The curve is copied to the stage's plots output at the end.

Under DDP every rank runs the stage's script (Lightning's launcher, or `srun` through
$MPM_LAUNCHER): only rank 0 prepares the folder and writes outputs (`is_rank_zero`). On SLURM,
Lightning saves an `hpc_ckpt_<n>.ckpt` into the folder when the job is about to be pre-empted
and requeues it; the requeued job resumes from the newer of that and `last.ckpt`.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import mpm
from mpm.atomic import atomic_file
from mpm.data.datamodule import JetDataModule
from mpm.data.h5io import CONTENT_DIGEST
from mpm.models.layers import LAYERS

log = logging.getLogger(__name__)
FINISHED = "finished"  # marker of a run folder whose run reached its last step
STAMP = "config.json"
# The code that decides a training run's result (paths in the package): its model, losses,
# tokenizers, training loop and batches. An edit elsewhere (plotting, reports, stage CLIs)
# keeps a checkpoint resumable.
RESULT_CODE = ("models", "tasks", "tokenizers", "training", "data/loader.py",
               "data/preprocess.py", "data/h5io.py", "data/schema.py")  # fmt: skip


def code_digest() -> str:
    """sha1 of the source of RESULT_CODE."""
    package = Path(mpm.__file__).parent
    digest = hashlib.sha1()
    for name in RESULT_CODE:
        path = package / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(source.relative_to(package).as_posix().encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


def content_id(path: Path) -> str:
    """A file's identity by content: the digest a converted HDF5 file records of its rows at
    conversion (hashing hundreds of GB at every start would take minutes), else the sha1 of
    its bytes. Unlike size and mtime, a `dvc checkout` or a copy does not change it."""
    if path.suffix == ".h5":
        with h5py.File(path, "r") as file:
            recorded = file.attrs.get(CONTENT_DIGEST)
        if recorded is not None:
            return f"rows:{recorded}"
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def run_fingerprint(config: dict, inputs: list[Path]) -> dict:
    """What a resumable run must share with its checkpoint: the configuration, every input
    file by content (folders: each file inside) and the code that decides the result."""
    files = sorted(f for p in inputs for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return {
        "config": config,
        "inputs": {str(f): content_id(f) for f in files},
        "code": code_digest(),
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the entries in which two fingerprints differ."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [prefix or "the whole stamp"]
    names = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}.{key}" if prefix else str(key)
        names += _differences(old.get(key), new.get(key), name)
    return names


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


def _newest_checkpoint(path: Path) -> Path | None:
    """The newer of the periodic `last.ckpt` and SLURM's `hpc_ckpt_<n>.ckpt` in `path`."""
    checkpoints = [path / "last.ckpt", *path.glob("hpc_ckpt_*.ckpt")]
    return max((c for c in checkpoints if c.is_file()), key=lambda c: c.stat().st_mtime_ns,
               default=None)  # fmt: skip


def _mismatch(path: Path, fingerprint: dict) -> str | None:
    """Why the run folder `path` cannot be resumed by a run of `fingerprint` (None: it can)."""
    if (path / FINISHED).exists():
        return "its run finished"
    try:
        stamp = json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return "it has no readable stamp"
    differences = _differences(stamp, fingerprint)
    if differences:
        shown = ", ".join(differences[:5]) + (" ..." if len(differences) > 5 else "")
        return f"its fingerprint differs in {shown}"
    return None


def _move_aside(path: Path, why: str) -> Path:
    aside = path.with_name(f"{path.name}.aside-{time.strftime('%Y%m%dT%H%M%S')}")
    n = 1
    while aside.exists():
        aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
        n += 1
    os.replace(path, aside)
    log.warning("%s: not resumed (%s); moved aside to %s (trainer.force_resume: true would "
                "resume it instead)", path, why, aside)  # fmt: skip
    return aside


def prepare_run_dir(path: Path, fingerprint: dict, force_resume: bool = False) -> Path | None:
    """The checkpoint to resume from if `path` holds one of the same fingerprint (or any, with
    `force_resume`); otherwise rank 0 moves a folder with checkpoints aside (never deletes it)
    and starts `path` afresh, stamped with `fingerprint`. Only rank 0 changes the folder."""
    checkpoint = _newest_checkpoint(path)
    why = _mismatch(path, fingerprint) if checkpoint else "no checkpoint"
    if checkpoint and force_resume and why:
        log.warning("%s: resumed although %s (trainer.force_resume)", path, why)
        why = None
    if not is_rank_zero():
        return None if why else checkpoint
    if not why:
        with atomic_file(path / STAMP) as tmp:
            tmp.write_text(json.dumps(fingerprint, indent=2))
        (path / FINISHED).unlink(missing_ok=True)
        return checkpoint
    if checkpoint:
        _move_aside(path, why)
    elif path.exists():  # a stamp and a curve at most: a run killed before its first checkpoint
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / STAMP).write_text(json.dumps(fingerprint, indent=2))
    return None


class StepSeeds(L.Callback):
    """Seed the random numbers of every training step from (seed, step, rank), and of every
    validation from (seed, rank): a resumed run draws the same masks and noise from its first
    step on as an uninterrupted one, and every validation draws the same."""

    def __init__(self, seed: int):
        self.seed = seed

    def _seed(self, *keys: int) -> None:
        torch.manual_seed(int(np.random.SeedSequence([self.seed, *keys]).generate_state(1)[0]))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._seed(0, trainer.global_step, trainer.global_rank)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._seed(1, trainer.global_rank)


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
    callbacks: tuple[L.Callback, ...] = (),
) -> dict:
    """Train `module` on the converted jets in `data_dir` as the run's params group `cfg`
    says (steps, batch_size, n_train_jets, n_val_jets, val_every_steps, grad_clip), resuming
    from `run_dir` when it holds a checkpoint of the same `config`, inputs and code; the curve
    ends up in `log_dir/metrics.csv`; `callbacks` join the trainer's. Returns {"steps",
    "final" (last logged metrics), "jets_per_s"}."""
    tic = time.perf_counter()
    fingerprint = run_fingerprint(config, [data_dir, preprocessor, *extra_inputs])
    resume = prepare_run_dir(run_dir, fingerprint, params["trainer"]["force_resume"])
    step = 0
    if resume:
        step = torch.load(resume, map_location="cpu", weights_only=False)["global_step"]
        log.info("resuming from %s (step %d)", resume, step)
        if is_rank_zero():
            _set_aside_curve(run_dir / "log", step)
    data = JetDataModule(
        data_dir, preprocessor, batch_size=cfg["batch_size"], n_train=cfg["n_train_jets"],
        n_val=cfg["n_val_jets"], seed=params["seed"],
        num_workers=params["loader"]["num_workers"], start_step=step,
    )  # fmt: skip
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
        callbacks=[ModelCheckpoint(run_dir, save_last=True, every_n_train_steps=every),
                   StepSeeds(params["seed"]), *callbacks],  # fmt: skip
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
