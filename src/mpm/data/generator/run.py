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
from mpm.data.generator.detector import SPECIES, Detector
from mpm.data.generator.pythia import physics_settings, pythia_seed
from mpm.data.root_io import write_btag, write_jetclass
from mpm.errors import InputError
from mpm.params import fraction, get, non_negative_float, positive_float, positive_int

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
    vertex_merge_mm: float
    flatten_edges: dict


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
    _validate_detector(params, f"{name}.detector")
    positive_float(get(params, f"{name}.jetclass.pt_hat_min"), f"{name}.jetclass.pt_hat_min")
    key = f"{name}.btag.vertex_merge_mm"
    positive_float(get(params, key), key)
    for edges in ("pt_edges", "abs_eta_edges", "n_trks_edges"):
        key = f"{name}.btag.flatten.{edges}"
        _edges(get(params, key), key)
    for sample, key in (("jetclass", "jets_per_file"), ("btag", "jets_per_flavour")):
        sizes = get(params, f"{name}.{sample}.{key}")
        for split in SPLITS:
            positive_int(sizes.get(split), f"{name}.{sample}.{key}.{split}")
    return cfg


def _edges(value, name: str) -> list:
    """A non-empty, increasing list of positive numbers (bin edges)."""
    if not isinstance(value, list) or not value:
        raise InputError(f"params: '{name}' must be a non-empty list of numbers, got {value!r}")
    for i, v in enumerate(value):
        positive_float(v, f"{name}[{i}]")
    if any(b <= a for a, b in zip(value, value[1:])):
        raise InputError(f"params: '{name}' must be increasing, got {value!r}")
    return value


def _list(value, name: str, length: int) -> list:
    if not isinstance(value, list) or len(value) != length:
        raise InputError(f"params: '{name}' must be a list of {length} entries, got {value!r}")
    return value


def _validate_detector(params: dict, name: str) -> None:
    for key in ("track_pt_min", "tracker_radius", "tracker_half_length"):
        positive_float(get(params, f"{name}.{key}"), f"{name}.{key}")
    eff, res = f"{name}.track_efficiency", f"{name}.track_pt_resolution"
    n_eta = len(_edges(get(params, f"{eff}.abs_eta_edges"), f"{eff}.abs_eta_edges"))
    n_pt = len(_edges(get(params, f"{eff}.pt_edges"), f"{eff}.pt_edges")) + 1
    n_res = len(_edges(get(params, f"{res}.abs_eta_edges"), f"{res}.abs_eta_edges"))
    for species in SPECIES:
        table = f"{eff}.{species}"
        for i, row in enumerate(_list(get(params, table), table, n_eta)):
            for j, value in enumerate(_list(row, f"{table}[{i}]", n_pt)):
                fraction(value, f"{table}[{i}][{j}]", closed_upper=True)
        for term in ("a", "b"):
            key = f"{res}.{species}.{term}"
            for i, value in enumerate(_list(get(params, key), key, n_res)):
                non_negative_float(value, f"{key}[{i}]")
    for group in ("d0_resolution", "z0_resolution"):
        for term in ("a", "b"):
            positive_float(get(params, f"{name}.{group}.{term}"), f"{name}.{group}.{term}")
    for calo in ("ecal", "hcal"):
        _validate_calorimeter(params, f"{name}.{calo}")


def _validate_calorimeter(params: dict, name: str) -> None:
    n = len(_edges(get(params, f"{name}.abs_eta_edges"), f"{name}.abs_eta_edges"))
    terms = ("stochastic", "constant", "noise", "eta_shape.p0", "eta_shape.p1", "eta_shape.eta0")
    for term in terms:
        key = f"{name}.{term}"
        for i, value in enumerate(_list(get(params, key), key, n)):
            non_negative_float(value, f"{key}[{i}]")
    positive_float(get(params, f"{name}.threshold"), f"{name}.threshold")
    non_negative_float(get(params, f"{name}.significance_min"), f"{name}.significance_min")
    positive_float(get(params, f"{name}.cell.eta"), f"{name}.cell.eta")
    positive_int(get(params, f"{name}.cell.phi_bins"), f"{name}.cell.phi_bins")


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


def settings_from_config(cfg: dict, seed: int) -> Settings:
    return Settings(
        seed=seed,
        physics=tuple(physics_settings(cfg["physics"])),
        detector=Detector.from_params(cfg["detector"]),
        pt_hat_min=float(cfg["jetclass"]["pt_hat_min"]),
        events_per_batch=cfg["events_per_batch"],
        vertex_merge_mm=float(cfg["btag"]["vertex_merge_mm"]),
        flatten_edges=cfg["btag"]["flatten"],
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
            settings.vertex_merge_mm,
            settings.flatten_edges,
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


def generate(out_root: Path, cfg: dict, seed: int) -> dict:
    """Write every file of `plan(cfg)` under `out_root`; returns per-sample statistics."""
    settings = settings_from_config(cfg, seed)
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
