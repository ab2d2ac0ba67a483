"""The `generate` stage's engine: chunks of jets generated in parallel, written as ROOT files.

Work is cut into chunks of at most `chunk_jets` jets; each chunk is seeded from (profile seed,
sample, class, split, chunk number) alone, so the output does not depend on the number of
worker processes or on scheduling. Chunks are collected in order and each file is written
(atomically) as soon as its chunks are in.
"""

import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import awkward as ak
import numpy as np
from tqdm import tqdm

from mpm.atomic import atomic_file
from mpm.data import schema
from mpm.data.generator import btag, jetclass
from mpm.data.generator.detector import Detector
from mpm.data.generator.pythia import physics_settings, pythia_seed
from mpm.data.root_io import write_btag, write_jetclass
from mpm.errors import InputError
from mpm.params import fraction, get, positive_float, positive_int

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# File numbers per split, as in the real JetClass tars (train 000-, test 100-, val 120-).
JETCLASS_FIRST_FILE = {"train": 0, "test": 100, "val": 120}
BTAG_FILES = {"train": "train_small.root", "val": "validate_small.root", "test": "test_small.root"}
_SAMPLE_KEY = {"jetclass": 0, "btag": 1}


@dataclass(frozen=True)
class Chunk:
    sample: str  # jetclass | btag
    label: str  # JetClass class name; "" for BTag
    split: str
    index: int
    n_jets: int  # JetClass: jets; BTag: jets per flavour


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs, from the `generate` params group and the profile seed."""

    seed: int
    physics: tuple[str, ...]
    detector: Detector
    pt_hat_min: float
    events_per_batch: int
    origin_tol_mm: float


def validated_config(params: dict) -> dict:
    """The `generate` params group, checked; errors name the offending parameter."""
    cfg = get(params, "generate")
    name = "generate"
    positive_int(cfg.get("workers"), f"{name}.workers", allow_none=True)
    for key in ("chunk_jets", "events_per_batch"):
        positive_int(cfg.get(key), f"{name}.{key}")
    for key in ("mpi", "isr", "fsr"):
        if not isinstance(get(params, f"{name}.physics.{key}"), bool):
            raise InputError(f"params: '{name}.physics.{key}' must be true or false")
    detector = get(params, f"{name}.detector")
    for key in (
        "track_eta_max",
        "track_pt_min",
        "tracker_radius",
        "tracker_half_length",
        "calo_eta_max",
    ):
        positive_float(detector.get(key), f"{name}.detector.{key}")
    for key in ("low_pt", "barrel", "endcap"):
        fraction(
            detector["track_efficiency"].get(key),
            f"{name}.detector.track_efficiency.{key}",
            closed_upper=True,
        )
    for group, keys in _DETECTOR_NUMBERS.items():
        for key in keys:
            positive_float(
                get(params, f"{name}.detector.{group}.{key}"), f"{name}.detector.{group}.{key}"
            )
    positive_float(get(params, f"{name}.jetclass.pt_hat_min"), f"{name}.jetclass.pt_hat_min")
    for sample, key in (("jetclass", "jets_per_file"), ("btag", "jets_per_flavour")):
        sizes = get(params, f"{name}.{sample}.{key}")
        for split in SPLITS:
            positive_int(sizes.get(split), f"{name}.{sample}.{key}.{split}")
    return cfg


_DETECTOR_NUMBERS = {
    "track_pt_resolution": ("a", "b"),
    "d0_resolution": ("a", "b"),
    "z0_resolution": ("a", "b"),
    "ecal": ("stochastic", "constant", "threshold"),
    "hcal": ("stochastic", "constant", "threshold"),
}


def _chunks(sample: str, label: str, split: str, total: int, size: int) -> list[Chunk]:
    n = math.ceil(total / size)
    return [Chunk(sample, label, split, i, min(size, total - i * size)) for i in range(n)]


def plan(cfg: dict) -> list[tuple[Path, list[Chunk]]]:
    """(relative output file, its chunks) for every file, in writing order."""
    size = cfg["chunk_jets"]
    files = []
    for split in SPLITS:
        n = cfg["jetclass"]["jets_per_file"][split]
        folder = Path("jetclass") / schema.JETCLASS_SPLIT_DIRS[split]
        for process, label in schema.JETCLASS_PROCESSES.items():
            name = f"{process}_{JETCLASS_FIRST_FILE[split]:03d}.root"
            files.append((folder / name, _chunks("jetclass", label, split, n, size)))
    for split in SPLITS:
        n = cfg["btag"]["jets_per_flavour"][split]
        chunk_size = max(1, size // len(btag.FLAVOURS))
        files.append((Path("btag") / BTAG_FILES[split], _chunks("btag", "", split, n, chunk_size)))
    return files


def _seeds(settings: Settings, chunk: Chunk) -> tuple[int, np.random.Generator]:
    label = schema.JETCLASS_CLASSES.index(chunk.label) if chunk.label else 0
    keys = (settings.seed, _SAMPLE_KEY[chunk.sample], label, SPLITS.index(chunk.split), chunk.index)
    detector_rng = np.random.default_rng(np.random.SeedSequence([*keys, 1]))
    return pythia_seed(*keys), detector_rng


def settings_from_config(cfg: dict, seed: int, origin_tol_mm: float) -> Settings:
    return Settings(
        seed=seed,
        physics=tuple(physics_settings(cfg["physics"])),
        detector=Detector.from_params(cfg["detector"]),
        pt_hat_min=float(cfg["jetclass"]["pt_hat_min"]),
        events_per_batch=cfg["events_per_batch"],
        origin_tol_mm=origin_tol_mm,
    )


def run_chunk(settings: Settings, chunk: Chunk) -> tuple[dict, int, float]:
    """Generate one chunk: (table, events generated, CPU seconds)."""
    tic = time.process_time()
    seed, rng = _seeds(settings, chunk)
    if chunk.sample == "jetclass":
        part, jet, events = jetclass.generate_chunk(
            chunk.label,
            chunk.n_jets,
            seed,
            chunk.index,
            list(settings.physics),
            settings.detector,
            settings.pt_hat_min,
            settings.events_per_batch,
            rng,
        )
        table = {"part": part, "jet": jet}
    else:
        table, events = btag.generate_chunk(
            chunk.n_jets,
            seed,
            list(settings.physics),
            settings.detector,
            settings.origin_tol_mm,
            settings.events_per_batch,
            rng,
        )
    return table, events, time.process_time() - tic


def _run_chunk_star(args):
    return run_chunk(*args)


def _n_jets(chunk: Chunk) -> int:
    return chunk.n_jets * (len(btag.FLAVOURS) if chunk.sample == "btag" else 1)


def _write(path: Path, chunk: Chunk, tables: list[dict]) -> None:
    if chunk.sample == "jetclass":
        jet = {k: np.concatenate([t["jet"][k] for t in tables]) for k in tables[0]["jet"]}
        part = {
            k: ak.unflatten(np.concatenate([t["part"][k] for t in tables]), jet["jet_nparticles"])
            for k in tables[0]["part"]
        }
        with atomic_file(path) as tmp:
            write_jetclass(tmp, part, jet, chunk.label)
    else:
        table = btag.concatenate(tables)
        jagged = {
            name: {k: ak.unflatten(v, table["counts"][name]) for k, v in table[name].items()}
            for name in ("trk", "hadron")
        }
        with atomic_file(path) as tmp:
            write_btag(tmp, jagged["trk"], jagged["hadron"], table["jet"])


def generate(out_root: Path, cfg: dict, seed: int, origin_tol_mm: float) -> dict:
    """Write every file of `plan(cfg)` under `out_root`; returns per-sample statistics."""
    settings = settings_from_config(cfg, seed, origin_tol_mm)
    files = plan(cfg)
    chunks = [c for _, file_chunks in files for c in file_chunks]
    workers = cfg["workers"] or os.cpu_count()
    stats = {s: {"jets": 0, "events": 0, "cpu_s": 0.0} for s in _SAMPLE_KEY}
    log.info(
        "generating %d jets in %d files (%d chunks) on %d worker(s)",
        sum(map(_n_jets, chunks)),
        len(files),
        len(chunks),
        workers,
    )
    tic = time.perf_counter()
    with _executor(workers) as pool, tqdm(total=sum(map(_n_jets, chunks)), unit="jet") as bar:
        results = pool.map(_run_chunk_star, [(settings, c) for c in chunks])
        for rel_path, file_chunks in files:
            tables = []
            for chunk in file_chunks:
                table, events, cpu = next(results)
                tables.append(table)
                sample = stats[chunk.sample]
                sample["jets"] += _n_jets(chunk)
                sample["events"] += events
                sample["cpu_s"] += cpu
                bar.update(_n_jets(chunk))
            (out_root / rel_path).parent.mkdir(parents=True, exist_ok=True)
            _write(out_root / rel_path, file_chunks[0], tables)
    wall = time.perf_counter() - tic
    for name, sample in stats.items():
        sample["jets_per_s_per_core"] = round(sample["jets"] / max(sample["cpu_s"], 1e-9), 1)
        sample["cpu_s"] = round(sample["cpu_s"], 1)
        log.info(
            "%s: %d jets from %d events, %.0f jets/s per core",
            name,
            sample["jets"],
            sample["events"],
            sample["jets_per_s_per_core"],
        )
    total = sum(s["jets"] for s in stats.values())
    log.info("%d jets in %.0f s: %.0f jets/s on %d worker(s)", total, wall, total / wall, workers)
    return {**stats, "wall_s": round(wall, 1), "workers": workers}


class _InProcess:
    """A stand-in for a process pool when one worker is asked for (simpler to debug)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def _executor(workers: int):
    if workers == 1:
        return _InProcess()
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
