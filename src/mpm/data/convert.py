"""ROOT -> HDF5 conversion of JetClass and BTag, one code path for both.

Each dataset has a reader that turns a chunk of ROOT branches into flat per-constituent arrays
(`Particles`); everything after that (lifetime signing, pT ordering, truncation, padding, the
seeded shuffle and the HDF5 layout of `mpm.data.schema`) is shared.

Conventions (documented in README "Data contract"):
- d_eta follows JetClass: sign(jet_eta) * (eta - jet_eta), for both datasets, so that a jet
  and its mirror image in eta look the same.
- d0 is lifetime-signed in the transverse plane: |d0| * sign(d0 * sin(phi_trk - phi_jet)), with
  the Delphes convention that the point of closest approach is d0 * (sin phi, -cos phi); the sign
  is positive when that point lies on the jet side of the beam line.
- z0 is lifetime-signed as |z0| * sign(z0 * (eta_jet - eta_trk)), with the true (unflipped) eta.
"""

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
from tqdm import tqdm

from mpm.atomic import atomic_dir, atomic_file
from mpm.data import schema
from mpm.data.h5io import CONTENT_DIGEST, append_rows
from mpm.data.root_io import iterate_tree, num_entries
from mpm.errors import InputError
from mpm.params import get, one_of, positive_float, positive_int

log = logging.getLogger(__name__)
BUCKET_COMPRESSION = "lzf"  # the shuffle's temporary buckets: fast, and bounds their disk


@dataclass
class Particles:
    """A chunk of jets as flat per-constituent arrays; `counts` marks the jet boundaries."""

    counts: np.ndarray  # [n_jets] constituents per jet
    features: np.ndarray  # [n_csts, 7] raw: pt, deta, dphi, d0, d0_err, z0, z0_err (unsigned IPs)
    ids: np.ndarray  # [n_csts] particle-ID class
    jets: np.ndarray  # [n_jets, len(JET_FEATURES)]
    labels: np.ndarray  # [n_jets]
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # flat per-constituent ints


def _flat(array: ak.Array, dtype=np.float32) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array)).astype(dtype, copy=False)


def _entry_of(counts: np.ndarray, flat_index: int, start: int) -> int:
    return start + int(np.searchsorted(np.cumsum(counts), flat_index, side="right"))


def _sign(x: np.ndarray) -> np.ndarray:
    """Sign with 0 -> +1, so that a value is never zeroed by signing."""
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def _wrap_angle(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def _jet_features(arrays: dict, mass_branch: str, counts: np.ndarray) -> np.ndarray:
    """[n_jets, len(JET_FEATURES)]: pT, eta, phi, mass and the number of constituents."""
    columns = [ak.to_numpy(arrays[b]) for b in ("jet_pt", "jet_eta", "jet_phi", mass_branch)]
    return np.stack([*columns, counts], axis=1).astype(np.float32)


def _onehot_labels(arrays: dict, names: list[str], path: Path, start: int) -> np.ndarray:
    # The label branches have mixed dtypes (float, bool, int32): cast before comparing.
    onehot = np.stack([ak.to_numpy(arrays[n]).astype(np.float64) for n in names], axis=1)
    bad = ~(np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1))
    if bad.any():
        raise InputError(
            f"{path}: label_* branches are not one-hot at entry {start + int(np.argmax(bad))}"
        )
    return onehot.argmax(axis=1)


def read_jetclass(arrays: dict, path: Path, start: int) -> Particles:
    counts = ak.to_numpy(ak.num(arrays["part_px"])).astype(np.int64)
    px, py = _flat(arrays["part_px"]), _flat(arrays["part_py"])
    charge = _flat(arrays["part_charge"])
    flags = {
        name: _flat(arrays[f"part_is{name}"]) != 0
        for name in ("Photon", "NeutralHadron", "ChargedHadron", "Electron", "Muon")
    }
    n_flags = sum(f.astype(np.int64) for f in flags.values())
    bad = n_flags != 1
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(
            f"{path}: entry {_entry_of(counts, i, start)}: a particle has {n_flags[i]} of the "
            "part_is* flags set, expected exactly 1"
        )
    charged = flags["ChargedHadron"] | flags["Electron"] | flags["Muon"]
    bad = charged & (charge == 0)
    if bad.any():
        raise InputError(
            f"{path}: entry {_entry_of(counts, int(np.argmax(bad)), start)}: "
            "charged particle with part_charge == 0"
        )
    positive = charge > 0
    ids = np.select(
        [flags["Photon"], flags["NeutralHadron"], flags["ChargedHadron"], flags["Electron"]],
        [0, 2, np.where(positive, 3, 1), np.where(positive, 5, 4)],
        default=np.where(positive, 7, 6),  # muons
    ).astype(np.int8)
    features = np.stack(
        [
            np.hypot(px, py),
            _flat(arrays["part_deta"]),  # already sign(jet_eta) * (eta - jet_eta)
            _flat(arrays["part_dphi"]),
            _flat(arrays["part_d0val"]),
            _flat(arrays["part_d0err"]),
            _flat(arrays["part_dzval"]),
            _flat(arrays["part_dzerr"]),
        ],
        axis=1,
    )
    jets = _jet_features(arrays, "jet_sdmass", counts)
    labels = _onehot_labels(arrays, [f"label_{c}" for c in schema.JETCLASS_CLASSES], path, start)
    return Particles(counts, features, ids, jets, labels)


def _heavy_flavour(pdg: ak.Array) -> tuple[ak.Array, ak.Array]:
    """(is c-hadron, is b-hadron) from PDG ids: mesons 4xx/5xx, baryons 4xxx/5xxx."""
    apdg = abs(pdg)
    is_c = ((apdg > 410) & (apdg < 436)) | ((apdg > 4120) & (apdg < 4445))
    is_b = ((apdg > 510) & (apdg < 546)) | ((apdg > 5120) & (apdg < 5555))
    return is_c, is_b


def track_origins(prod_z: ak.Array, hadron_pdgid: ak.Array, hadron_z: ak.Array, tol: float):
    """Flat origin labels (schema.TRACK_ORIGINS): b beats c beats primary beats other."""
    is_c, is_b = _heavy_flavour(hadron_pdgid)
    near = abs(prod_z[:, :, None] - hadron_z[:, None, :]) < tol  # [jet][track][hadron]
    from_c = _flat(ak.any(near & is_c[:, None, :], axis=2), bool)
    from_b = _flat(ak.any(near & is_b[:, None, :], axis=2), bool)
    primary = np.abs(_flat(prod_z)) < tol
    origin = np.full(len(primary), schema.TRACK_ORIGINS.index("other"), np.int8)
    origin[primary] = schema.TRACK_ORIGINS.index("primary")
    origin[from_c] = schema.TRACK_ORIGINS.index("c")
    origin[from_b] = schema.TRACK_ORIGINS.index("b")
    return origin


def read_btag(arrays: dict, path: Path, start: int, origin_tol_mm: float) -> Particles:
    counts = ak.to_numpy(ak.num(arrays["trk_pt"])).astype(np.int64)
    jet_eta = ak.to_numpy(arrays["jet_eta"]).astype(np.float32)
    jet_phi = ak.to_numpy(arrays["jet_phi"]).astype(np.float32)
    jet_idx = np.repeat(np.arange(len(counts)), counts)
    deta = (_flat(arrays["trk_eta"]) - jet_eta[jet_idx]) * _sign(jet_eta)[jet_idx]
    dphi = _wrap_angle(_flat(arrays["trk_phi"]) - jet_phi[jet_idx])

    apdg = np.abs(_flat(arrays["trk_pdg_id"], np.int64))
    positive = _flat(arrays["trk_charge"]) > 0
    negative = _flat(arrays["trk_charge"]) < 0
    ids = np.select(
        [apdg == 22, apdg == 11, apdg == 13, positive, negative],
        [0, np.where(positive, 5, 4), np.where(positive, 7, 6), 3, 1],
        default=2,
    ).astype(np.int8)

    flav = ak.to_numpy(arrays["jet_flav"]).astype(np.int64)
    known = np.isin(flav, list(schema.BTAG_FLAV_TO_LABEL))
    if not known.all():
        i = int(np.argmax(~known))
        raise InputError(
            f"{path}: branch 'jet_flav' has value {flav[i]} at entry {start + i}, "
            f"expected one of {sorted(schema.BTAG_FLAV_TO_LABEL)}"
        )
    labels = np.vectorize(schema.BTAG_FLAV_TO_LABEL.get, otypes=[np.int64])(flav)

    features = np.stack(
        [
            _flat(arrays["trk_pt"]),
            deta,
            dphi,
            _flat(arrays["trk_d0"]),
            _flat(arrays["trk_d0err"]),
            _flat(arrays["trk_z0"]),
            _flat(arrays["trk_z0err"]),
        ],
        axis=1,
    )
    jets = _jet_features(arrays, "jet_M", counts)
    extras = {
        schema.H5_VERTEX: _flat(arrays["trk_vtx_index"], np.int32),
        schema.H5_ORIGIN: track_origins(
            arrays["trk_prod_z"], arrays["hadron_pdgid"], arrays["hadron_z"], origin_tol_mm
        ),
    }
    return Particles(counts, features, ids, jets, labels, extras)


def sign_impact_parameters(particles: Particles) -> np.ndarray:
    """Lifetime-sign d0 and z0 (see module docstring); returns a new feature array."""
    feats = particles.features.copy()
    jet_idx = np.repeat(np.arange(len(particles.counts)), particles.counts)
    eta_rel = feats[:, 1] * _sign(particles.jets[:, 1])[jet_idx]  # undo the JetClass flip
    feats[:, 3] = np.abs(feats[:, 3]) * _sign(feats[:, 3] * np.sin(feats[:, 2]))
    feats[:, 5] = np.abs(feats[:, 5]) * _sign(-feats[:, 5] * eta_rel)
    return feats


def pack_jets(
    particles: Particles, max_constituents: int, clip_angle: float | None
) -> dict[str, np.ndarray]:
    """Sign, sort by pT (descending), truncate and pad: the HDF5 rows of a chunk."""
    counts = particles.counts
    n_jets, width = len(counts), max_constituents
    feats = sign_impact_parameters(particles)
    if clip_angle is not None:
        feats[:, 1:3] = np.clip(feats[:, 1:3], -clip_angle, clip_angle)

    jet_idx = np.repeat(np.arange(n_jets), counts)
    order = np.lexsort((-feats[:, 0], jet_idx))  # group by jet, pT descending inside
    pos = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = pos < width
    rows, cols, src = jet_idx[keep], pos[keep], order[keep]

    out = {
        schema.H5_CONSTITUENTS: np.zeros((n_jets, width, feats.shape[1]), np.float32),
        schema.H5_IDS: np.zeros((n_jets, width), np.int8),
        schema.H5_MASK: np.zeros((n_jets, width), bool),
        schema.H5_JETS: particles.jets.astype(np.float32),
        schema.H5_LABELS: particles.labels.astype(np.int64),
    }
    out[schema.H5_CONSTITUENTS][rows, cols] = feats[src]
    out[schema.H5_IDS][rows, cols] = particles.ids[src]
    out[schema.H5_MASK][rows, cols] = True
    for name, values in particles.extras.items():
        out[name] = np.full((n_jets, width), -1, values.dtype)
        out[name][rows, cols] = values[src]
    return out


def drop_empty_jets(particles: Particles, path: Path, start: int, policy: str) -> Particles:
    empty = particles.counts == 0
    if not empty.any():
        return particles
    if policy == "error":
        raise InputError(
            f"{path}: entry {start + int(np.argmax(empty))} has no constituents "
            "(set convert.empty_jets: drop to skip such jets)"
        )
    keep = ~empty  # empty jets own no constituents, so per-constituent arrays are unchanged
    return Particles(
        particles.counts[keep],
        particles.features,
        particles.ids,
        particles.jets[keep],
        particles.labels[keep],
        particles.extras,
    )


@dataclass
class DatasetSpec:
    """What differs between the datasets; everything else is shared."""

    name: str
    tree: str
    branches: dict[str, str]
    classes: tuple[str, ...]
    max_constituents: int
    clip_angle: float | None
    origin_tol_mm: float = 1e-6

    def read(self, arrays: dict, path: Path, start: int) -> Particles:
        if self.name == "jetclass":
            return read_jetclass(arrays, path, start)
        return read_btag(arrays, path, start, self.origin_tol_mm)


def resolve_inputs(source_root: Path, entries: list[str]) -> list[Path]:
    """Expand params entries (files, or folders of *.root files) to a sorted list of files."""
    files: list[Path] = []
    for entry in entries:
        path = source_root / entry
        if path.is_dir():
            found = sorted(path.glob("*.root"))
            if not found:
                raise InputError(f"{path}: folder holds no .root files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: input file or folder not found")
    return files


def convert_split(
    files: list[Path],
    spec: DatasetSpec,
    out_file: Path,
    *,
    seed: int | list[int],
    step_size: int,
    max_jets_per_file: int | None,
    bucket_jets: int,
    empty_jets: str,
    compression: str | None = "lzf",
) -> dict:
    """Convert `files` into one shuffled HDF5 file; returns a summary of what was written.

    The shuffle is an external two-pass one so memory stays bounded whatever the size: pass 1
    streams the inputs and scatters every jet into one of ceil(N / bucket_jets) temporary
    buckets at random; pass 2 loads one bucket at a time, permutes it and appends it. The
    buckets are lzf-compressed whatever `compression` says: padded jets are mostly zeros, and
    uncompressed buckets of the 100M JetClass training jets would take ~390 GB.
    The summary records the disk both took (`bucket_bytes`, `file_bytes`): the stage's peak
    is their sum, as the buckets are deleted only after the output is written.
    """
    sizes = [num_entries(f, spec.tree, spec.branches) for f in files]
    if max_jets_per_file is not None:
        sizes = [min(s, max_jets_per_file) for s in sizes]
    total = sum(sizes)
    n_buckets = max(1, math.ceil(total / bucket_jets))
    rng = np.random.default_rng(seed)
    tic = time.perf_counter()
    log.info("%s %s: %d jets from %d files", spec.name, out_file.stem, total, len(files))

    bucket_path = out_file.with_name(f".{out_file.stem}.buckets.h5")
    try:
        n_read = 0
        with h5py.File(bucket_path, "w") as buckets:
            groups = [buckets.create_group(str(b)) for b in range(n_buckets)]
            with tqdm(total=total, unit="jet", desc=f"{spec.name} {out_file.stem}") as bar:
                for path, size in zip(files, sizes):
                    for start, arrays in iterate_tree(
                        path, spec.tree, spec.branches, step_size, entry_stop=size
                    ):
                        particles = spec.read(arrays, path, start)
                        bar.update(len(particles.counts))
                        n_read += len(particles.counts)
                        particles = drop_empty_jets(particles, path, start, empty_jets)
                        rows = pack_jets(particles, spec.max_constituents, spec.clip_angle)
                        # Sort rows by random bucket once, then hand each bucket its slice.
                        assignment = rng.integers(n_buckets, size=len(particles.counts))
                        order = np.argsort(assignment, kind="stable")
                        bounds = np.cumsum(np.bincount(assignment, minlength=n_buckets))
                        for group, hi, lo in zip(groups, bounds, [0, *bounds[:-1]]):
                            part = {k: v[order[lo:hi]] for k, v in rows.items()}
                            append_rows(group, part, BUCKET_COMPRESSION)
            if n_read == 0:
                raise InputError(f"{files[0].parent}: no jets to convert in {len(files)} files")

            buckets.flush()
            bucket_bytes = bucket_path.stat().st_size
            with atomic_file(out_file) as tmp_out, h5py.File(tmp_out, "w") as out:
                n_written = 0
                digest = hashlib.sha1()
                for group in groups:
                    rows = {k: group[k][:] for k in group}
                    perm = rng.permutation(len(rows[schema.H5_LABELS]))
                    rows = {k: v[perm] for k, v in rows.items()}
                    append_rows(out, rows, compression, digest)
                    n_written += len(perm)
                counts = np.bincount(out[schema.H5_LABELS][:], minlength=len(spec.classes))
                out.attrs.update(
                    dataset=spec.name,
                    classes=list(spec.classes),
                    features=list(schema.CONTINUOUS_FEATURES),
                    particle_ids=list(schema.PARTICLE_IDS),
                    jet_features=list(schema.JET_FEATURES),
                    track_origins=list(schema.TRACK_ORIGINS),
                    sources=[f.name for f in files],
                    seed=np.atleast_1d(seed),
                )
                out.attrs[CONTENT_DIGEST] = digest.hexdigest()
    finally:
        bucket_path.unlink(missing_ok=True)

    elapsed = time.perf_counter() - tic
    log.info(
        "%s %s: wrote %d jets in %.1f s (%.0f jets/s)",
        spec.name,
        out_file.stem,
        n_written,
        elapsed,
        n_read / max(elapsed, 1e-9),
    )
    return {
        "n_jets": int(n_written),
        "n_dropped_empty": int(n_read - n_written),
        "per_class": {c: int(n) for c, n in zip(spec.classes, counts)},
        "bucket_bytes": int(bucket_bytes),
        "file_bytes": out_file.stat().st_size,
    }


def dataset_spec(name: str, cfg: dict) -> DatasetSpec:
    """Build the spec of `name` from its `convert.<name>` params group."""
    width = positive_int(cfg.get("max_constituents"), f"convert.{name}.max_constituents")
    clip = cfg.get("clip_angle")
    if clip is not None:
        clip = positive_float(clip, f"convert.{name}.clip_angle")
    if name == "jetclass":
        return DatasetSpec(
            name,
            schema.JETCLASS_TREE,
            schema.JETCLASS_BRANCHES,
            schema.JETCLASS_CLASSES,
            width,
            clip,
        )
    tol = positive_float(cfg.get("origin_tol_mm"), "convert.btag.origin_tol_mm")
    return DatasetSpec(
        name, schema.BTAG_TREE, schema.BTAG_BRANCHES, schema.BTAG_CLASSES, width, clip, tol
    )


SPLITS = ("train", "val", "test")
DATASETS = ("jetclass", "btag")


def convert_dataset(params: dict, name: str, source_root: Path, out_dir: Path) -> dict:
    """Convert every split of dataset `name`; returns the per-split summary (the metrics)."""
    one_of(name, "dataset", DATASETS)
    cfg = get(params, f"convert.{name}")
    spec = dataset_spec(name, cfg)
    seed = get(params, "seed")
    common = dict(
        step_size=positive_int(get(params, "convert.step_size"), "convert.step_size"),
        max_jets_per_file=positive_int(
            cfg.get("max_jets_per_file"), f"convert.{name}.max_jets_per_file", allow_none=True
        ),
        bucket_jets=positive_int(get(params, "convert.bucket_jets"), "convert.bucket_jets"),
        empty_jets=one_of(
            get(params, "convert.empty_jets"), "convert.empty_jets", ["error", "drop"]
        ),
        compression=one_of(
            get(params, "convert.compression"), "convert.compression", ["lzf", "gzip", None]
        ),
    )
    inputs = get(params, f"convert.{name}.inputs")
    if not isinstance(inputs, dict) or set(inputs) != set(SPLITS):
        raise InputError(f"params: 'convert.{name}.inputs' must map each of {SPLITS} to a list")
    summary = {}
    with atomic_dir(out_dir) as tmp_dir:
        for i, split in enumerate(SPLITS):
            if not isinstance(inputs[split], list) or not inputs[split]:
                raise InputError(
                    f"params: 'convert.{name}.inputs.{split}' must be a non-empty list"
                )
            files = resolve_inputs(source_root, inputs[split])
            summary[split] = convert_split(
                files, spec, tmp_dir / f"{split}.h5", seed=[seed, DATASETS.index(name), i], **common
            )
    return summary
