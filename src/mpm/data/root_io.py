"""Reading and writing ROOT TTrees with uproot, with schema checks that name file and branch."""

import datetime
import logging
import types
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import awkward as ak
import numpy as np
import uproot

from mpm.data import schema
from mpm.errors import InputError

log = logging.getLogger(__name__)


def _branch_kind_ok(branch, kind: str) -> bool:
    interp = branch.interpretation
    jagged = isinstance(interp, uproot.AsJagged)
    if kind.startswith("jagged_"):
        if not jagged:
            return False
        dtype = interp.content.to_dtype
    else:
        if not isinstance(interp, uproot.AsDtype) or interp.to_dtype.shape != ():
            return False
        dtype = interp.to_dtype
    if kind.endswith("float"):
        return dtype.kind == "f"
    return dtype.kind in "fiub"


def open_tree(path: Path, tree_name: str, branches: dict[str, str]):
    """Open `path` and check that `tree_name` holds every branch with the expected kind."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        file = uproot.open(path)
    except Exception as err:  # uproot raises many types for corrupt or truncated files
        raise InputError(f"{path}: not a readable ROOT file ({type(err).__name__})") from None
    try:
        tree = file[tree_name]
    except Exception:
        file.close()
        raise InputError(f"{path}: no TTree '{tree_name}'") from None
    if not isinstance(tree, uproot.TTree):
        file.close()
        raise InputError(f"{path}: '{tree_name}' is a {type(tree).__name__}, not a TTree")
    keys = set(tree.keys())
    for name, kind in branches.items():
        if name not in keys:
            file.close()
            raise InputError(f"{path}: missing branch '{name}'")
        if not _branch_kind_ok(tree[name], kind):
            file.close()
            raise InputError(
                f"{path}: branch '{name}' has type {tree[name].typename}, expected {kind}"
            )
    return file, tree


def iterate_tree(
    path: Path,
    tree_name: str,
    branches: dict[str, str],
    step_size: int,
    entry_stop: int | None = None,
) -> Iterator[tuple[int, dict[str, ak.Array]]]:
    """Yield (first entry, {branch: array}) chunks; values must be finite.

    Decompression or truncation errors surface here, and are reported with the file name.
    """
    file, tree = open_tree(path, tree_name, branches)
    with file:
        start = 0
        try:
            for chunk in tree.iterate(
                list(branches), step_size=step_size, entry_stop=entry_stop, library="ak"
            ):
                arrays = {name: chunk[name] for name in branches}
                _check_finite(path, arrays, start)
                yield start, arrays
                start += len(chunk)
        except InputError:
            raise
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise InputError(
                f"{path}: corrupt or truncated, could not read entries from {start} "
                f"({type(err).__name__}: {reason})"
            ) from None


def _check_finite(path: Path, arrays: dict[str, ak.Array], start: int) -> None:
    for name, array in arrays.items():
        flat = ak.to_numpy(ak.flatten(array, axis=None))
        if flat.dtype.kind != "f":
            continue
        bad = ~np.isfinite(flat)
        if bad.any():
            # Locate the entry for the message: count elements per entry.
            sizes = ak.to_numpy(ak.num(array, axis=1)) if array.ndim > 1 else np.ones(len(array))
            entry = start + int(np.searchsorted(np.cumsum(sizes), np.argmax(bad), side="right"))
            raise InputError(f"{path}: branch '{name}' has NaN/inf values (entry {entry})")


def num_entries(path: Path, tree_name: str, branches: dict[str, str]) -> int:
    file, tree = open_tree(path, tree_name, branches)
    with file:
        return int(tree.num_entries)


# uproot stamps each file with the wall clock and a random UUID. Both are pinned so that the
# same content gives the same bytes, and DVC sees regenerated identical data as unchanged.
ROOT_TIMESTAMP = datetime.datetime(2024, 1, 1)


class _PinnedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return ROOT_TIMESTAMP


_UPROOT_MODULES_WITH_CLOCK = ("_cascade", "_cascadetree", "writable")


def _pinned_clock() -> ExitStack:
    stack = ExitStack()
    shim = types.SimpleNamespace(datetime=_PinnedDatetime)
    for name in _UPROOT_MODULES_WITH_CLOCK:
        module = getattr(uproot.writing, name)
        stack.enter_context(mock.patch.object(module, "datetime", shim))
    return stack


def write_tree(
    path: Path,
    tree_name: str,
    scalars: dict[str, np.ndarray],
    collections: dict[str, dict[str, ak.Array]],
    counters: dict[str, str],
) -> None:
    """Write a TTree (not an RNTuple) of scalar and jagged branches.

    `collections` groups jagged branches sharing one counter: {"part": {"px": ...}} gives the
    branch `part_px` with the counter named `counters["part"]`, as in the real files.
    """
    branch_types = {name: array.dtype for name, array in scalars.items()}
    data: dict = dict(scalars)
    for prefix, fields in collections.items():
        record = ak.zip(fields)
        branch_types[prefix] = record.type.content
        data[prefix] = record
    # Through a file object: uproot records a path's name in the file, and ours is a
    # temporary name (see mpm.atomic).
    file_uuid = uuid.uuid5(uuid.NAMESPACE_URL, tree_name)
    with (
        _pinned_clock(),
        open(path, "w+b") as sink,
        uproot.recreate(sink, uuid_function=lambda: file_uuid) as file,
    ):
        file.mktree(tree_name, branch_types, counter_name=lambda prefix: counters[prefix])
        file[tree_name].extend(data)


def _as(values, dtype):
    """Cast a numpy or jagged awkward array to `dtype`."""
    if isinstance(values, ak.Array):
        return ak.values_astype(values, dtype)
    return np.asarray(values, dtype=dtype)


def write_jetclass(path: Path, part: dict, jet: dict, label: str) -> None:
    """Write one JetClass-schema file: `part` maps is* / px ... names (without the `part_`
    prefix) to jagged arrays, `jet` maps jet_* names to arrays; `label` is the class of every
    jet in the file. Dtypes follow the real files, mixed label dtypes included."""
    flags = {"isChargedHadron", "isNeutralHadron", "isPhoton", "isElectron", "isMuon"}
    particles = {k: _as(v, np.int32 if k in flags else np.float32) for k, v in part.items()}
    n_jets = len(next(iter(jet.values())))
    scalars = {k: _as(v, np.float32) for k, v in jet.items()}
    label_dtypes = {"QCD": np.float32, "Zqq": np.int32, "Wqq": np.int32, "Tbqq": np.int32}
    label_dtypes["Tbl"] = np.int32
    for cls in schema.JETCLASS_CLASSES:
        scalars[f"label_{cls}"] = np.full(n_jets, cls == label, label_dtypes.get(cls, np.bool_))
    write_tree(path, schema.JETCLASS_TREE, scalars, {"part": particles}, {"part": "npart"})


def write_btag(path: Path, trk: dict, hadron: dict, jet: dict) -> None:
    """Write one BTag-schema file: `trk` (trk_ names without prefix), `hadron` (pdgid, z) and
    `jet` (jet_* and other per-jet names) as in the real files; the track counter is n_trks."""
    ints = {"charge", "pdg_id", "vtx_index", "pythia_i"}
    tracks = {k: _as(v, np.int32 if k in ints else np.float32) for k, v in trk.items()}
    hadrons = {"pdgid": _as(hadron["pdgid"], np.int32), "z": _as(hadron["z"], np.float32)}
    scalars = {k: _as(v, np.int32 if k == "jet_flav" else np.float32) for k, v in jet.items()}
    write_tree(
        path,
        schema.BTAG_TREE,
        scalars,
        {"trk": tracks, "hadron": hadrons},
        {"trk": "n_trks", "hadron": "n_hadrons"},
    )
