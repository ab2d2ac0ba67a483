"""Fetch the real datasets from Zenodo: the JetClass tars and the BTag ROOT files.

Only the `paper` profile uses this (the default profile runs on generated data). Downloads go to
`<dest>.part`, resume with HTTP Range requests after an interruption, and take their final name
only once their md5 matches. Layout under `out_root`:

    manifest.json                      what was fetched, so a re-run can skip it
    jetclass/<split_dir>/<Proc>_<NNN>.root
    btag/<file>.root
    archives/<tar>                     only while extracting, or with keep_archives
"""

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from mpm import params as P
from mpm.atomic import atomic_file
from mpm.data import schema
from mpm.errors import InputError

log = logging.getLogger(__name__)

# Zenodo record 6619768 (see the JetClass section of the dataset notes): its archives, the only
# names `download.jetclass.archives` accepts, and their published md5s. The md5s used for the
# check come from the record API (`download.jetclass.record_api`), as for BTag, so a loopback
# copy of the record (mpm.rehearsal) runs the same verification; when the API is the real
# record's, its answer must also agree with this table.
JETCLASS_RECORD_API = "https://zenodo.org/api/records/6619768"
JETCLASS_MD5 = {
    "JetClass_Pythia_train_100M_part0.tar": "de4fd2dca2e68ab3c85d5cfd3bcc65c3",
    "JetClass_Pythia_train_100M_part1.tar": "9722a359c5ef697bea0fbf79bf50f003",
    "JetClass_Pythia_train_100M_part2.tar": "1e9f66cd1f915f9d10e90ae1d7761720",
    "JetClass_Pythia_train_100M_part3.tar": "47348fc8985319fa4806da87500482fa",
    "JetClass_Pythia_train_100M_part4.tar": "6b0ce16bd93b442a8d51914466990279",
    "JetClass_Pythia_train_100M_part5.tar": "416e347512e716de51d392bee327b8e9",
    "JetClass_Pythia_train_100M_part6.tar": "e9b9c1557b1b39bf0a16e4ab631ae451",
    "JetClass_Pythia_train_100M_part7.tar": "5bfc6cb285ccb7680cefa9ac82ad1a2e",
    "JetClass_Pythia_train_100M_part8.tar": "540c1a0d66dfad78d2b363c5740ccf86",
    "JetClass_Pythia_train_100M_part9.tar": "668f40b3275167ff7104c48317c0ae2a",
    "JetClass_Pythia_val_5M.tar": "7235ccb577ed85023ea3ab4d5e6160cf",
    "JetClass_Pythia_test_20M.tar": "64e5156d26d101adeb43b8388207d767",
}

_BACKOFF_S = 0.5  # wait this times the attempt number before a retry
# Statuses worth retrying (rate limits, overloaded servers); other HTTP errors are final.
_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_USER_AGENT = "mpm-download/0.1 (python urllib)"
_MANIFEST = "manifest.json"

# Exact file names inside the JetClass tars. Anchored alternatives, so `TTBar_000.root` never
# matches `TTBarLep_000.root` (a glob `TTBar*` would).
_MEMBER_RE = re.compile(r"(%s)_(\d{3})\.root" % "|".join(map(re.escape, schema.JETCLASS_PROCESSES)))
# The split of a JetClass tar, from its own name. The train parts hold their ROOT files at the top
# level (`HToBB_000.root` or `./HToBB_000.root`); the val and test tars under `val_5M/` and
# `test_20M/`.
_TAR_RE = re.compile(
    r"JetClass_Pythia_(%s)(?:_part\d+)?\.tar" % "|".join(schema.JETCLASS_SPLIT_DIRS.values())
)


class _Retry(Exception):
    """A transient failure (connection lost, truncated body, 5xx): worth another attempt."""


# --------------------------------------------------------------------------- HTTP plumbing


def _with_retries(
    action: Callable[[], Any], retries: int, url: str, note: Callable[[], str] = str
) -> Any:
    """Call `action` until it stops raising _Retry; InputError once `retries` are used up.

    `note()` is appended to that error's message.
    """
    last = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(_BACKOFF_S * attempt)
        try:
            return action()
        except _Retry as err:
            last = err
            log.warning("%s: %s (attempt %d of %d)", url, err, attempt + 1, retries + 1)
    raise InputError(f"{url}: failed after {retries + 1} attempts ({last}){note()}")


def _open(url: str, timeout_s: float, headers: dict[str, str] | None = None):
    """urlopen that sorts errors: transient -> _Retry, other HTTP errors -> InputError.

    Returns None for 416 (range not satisfiable): the caller asked for bytes past the end.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416:
            return None
        if err.code in _TRANSIENT_HTTP:
            raise _Retry(f"HTTP {err.code} {err.reason}") from None
        raise InputError(f"{url}: HTTP error {err.code} ({err.reason})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _Retry(f"cannot connect ({getattr(err, 'reason', err)})") from None


def _read(response, n: int) -> bytes:
    try:
        return response.read(n)
    except (http.client.HTTPException, OSError) as err:  # resets, timeouts, bad chunking
        raise _Retry(f"connection lost ({err!r})") from None


def md5sum(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _join_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(name)


# --------------------------------------------------------------------------- one file


def download_file(
    url: str,
    dest: str | os.PathLike,
    md5: str,
    *,
    retries: int = 5,
    timeout_s: float = 60,
    chunk_bytes: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part` if present, and verify its md5.

    An existing `dest` with the right md5 is kept as is. On an md5 mismatch the download is
    deleted (resuming a corrupt file would only repeat the mismatch) and InputError is raised.
    """
    dest = Path(dest)
    md5 = md5.lower()
    if dest.exists():
        if md5sum(dest, chunk_bytes) == md5:
            log.info("%s: present and verified, skipping the download", dest)
            return dest
        log.warning("%s: md5 does not match, downloading it again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    def kept() -> str:
        return f"; the partial download {part} is kept for resuming" if part.exists() else ""

    _with_retries(
        lambda: _fetch_into(url, part, timeout_s, chunk_bytes, progress), retries, url, kept
    )
    _verify_and_rename(part, dest, md5, chunk_bytes)
    return dest


def _fetch_into(url: str, part: Path, timeout_s: float, chunk_bytes: int, progress: bool) -> None:
    """One attempt: append the missing bytes to `part`; _Retry if the body comes up short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = _open(url, timeout_s, headers)
    if response is None:  # 416: nothing past the end of .part, so it is complete; md5 decides
        if not offset:
            raise InputError(f"{url}: HTTP error 416 on a request without a range")
        return
    with response:
        if response.status == 206:
            if _content_range_start(response) != offset:
                part.unlink()  # the server sent some other range: start again from zero
                raise _Retry("server answered with an unexpected Content-Range")
            mode = "ab"
        else:  # 200: the server ignored the Range header and sends everything
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        if offset:
            log.info("%s: resuming at byte %d", url, offset)
        _copy_body(response, part, mode, offset, total, chunk_bytes, progress)


def _content_range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _copy_body(response, part, mode, offset, total, chunk_bytes, progress) -> None:
    received = offset
    bar = tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        disable=not progress,
    )
    with bar, open(part, mode) as out:
        while chunk := _read(response, chunk_bytes):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    # http.client returns b"" (no error) when a server closes mid-body: check the length.
    if total is not None and received < total:
        raise _Retry(f"connection closed after {received} of {total} bytes")


def _verify_and_rename(part: Path, dest: Path, md5: str, chunk_bytes: int) -> None:
    got = md5sum(part, chunk_bytes)
    if got != md5:
        part.unlink()
        raise InputError(
            f"{dest.name}: md5 mismatch (expected {md5}, got {got}); the download was deleted"
        )
    os.replace(part, dest)
    log.info("%s: downloaded and verified", dest)


# --------------------------------------------------------------------------- Zenodo checksums


def fetch_zenodo_checksums(
    record_api_url: str, timeout_s: float = 60, *, required: Iterable[str] = (), retries: int = 3
) -> dict[str, str]:
    """{file name: md5} from a Zenodo records API answer (e.g. .../api/records/13350327).

    InputError if the answer is not a readable record or lacks one of `required`.
    """
    record = _with_retries(lambda: _get_json(record_api_url, timeout_s), retries, record_api_url)
    checksums = _zenodo_md5s(record, record_api_url)
    missing = [name for name in required if name not in checksums]
    if missing:
        raise InputError(
            f"{record_api_url}: file(s) {missing} not in the record (it has {sorted(checksums)})"
        )
    return checksums


def _get_json(url: str, timeout_s: float) -> Any:
    response = _open(url, timeout_s, {"Accept": "application/json"})
    if response is None:
        raise InputError(f"{url}: HTTP error 416")
    with response:
        body = b"".join(iter(lambda: _read(response, 1 << 16), b""))
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{url}: not a readable Zenodo record ({err})") from None


def _zenodo_md5s(record: Any, url: str) -> dict[str, str]:
    """Accept both `"files": [...]` and `"files": {"entries": {...}}` (the API has used both)."""
    files = record.get("files") if isinstance(record, dict) else None
    if isinstance(files, dict):
        files = files.get("entries")
    if isinstance(files, dict):
        files = list(files.values())
    if not isinstance(files, list):
        raise InputError(f"{url}: not a readable Zenodo record (no 'files' list)")
    checksums = {}
    for entry in files:
        if not isinstance(entry, dict):
            continue
        name = entry.get("key") or entry.get("filename")
        algo, _, digest = str(entry.get("checksum", "")).rpartition(":")
        if name and algo in ("md5", "") and re.fullmatch(r"[0-9a-fA-F]{32}", digest):
            checksums[name] = digest.lower()
    return checksums


# --------------------------------------------------------------------------- JetClass tars


def extract_jetclass(
    tar_path: str | os.PathLike,
    out_root: str | os.PathLike,
    classes: Iterable[str],
    max_files_per_class: int | None = None,
) -> list[Path]:
    """Stream `tar_path` and write the ROOT files of `classes` to out_root/jetclass/<split>/.

    The tar is read front to back once (tens of GB: no random access, nothing held in memory).
    Streaming allows no look-ahead, so `max_files_per_class=N` takes the first N files of each
    class in tar order, which need not be the lowest file numbers. Returns the written paths.
    """
    tar_path, out_root = Path(tar_path), Path(out_root)
    counts = dict.fromkeys(classes, 0)
    cap = max_files_per_class
    written = []
    try:
        with tarfile.open(tar_path, mode="r|") as tar:
            for member in tar:
                cls = _member_class(member)
                if cls not in counts or (cap is not None and counts[cls] >= cap):
                    continue
                dest = out_root / "jetclass" / _split_dir(tar_path, member)
                written.append(_extract_member(tar, member, dest / _basename(member)))
                counts[cls] += 1
                if cap is not None and min(counts.values()) >= cap:
                    break  # every class is full: no need to read the rest of the tar
    except (tarfile.TarError, EOFError) as err:
        raise InputError(f"{tar_path}: not a readable tar archive ({err})") from None
    log.info("%s: extracted %d files %s", tar_path.name, len(written), counts)
    return written


def _basename(member: tarfile.TarInfo) -> str:
    return PurePosixPath(member.name).name


def _member_class(member: tarfile.TarInfo) -> str | None:
    match = _MEMBER_RE.fullmatch(_basename(member)) if member.isfile() else None
    return schema.JETCLASS_PROCESSES[match.group(1)] if match else None


def _split_dir(tar_path: Path, member: tarfile.TarInfo) -> str:
    """The split folder of `member`: its parent folder, else the split in the tar's name."""
    folder = PurePosixPath(member.name).parent.name  # "" for `x.root` and `./x.root`
    named = _TAR_RE.fullmatch(tar_path.name)
    from_name = named.group(1) if named else None
    known = list(schema.JETCLASS_SPLIT_DIRS.values())
    if folder and folder not in known:
        raise InputError(f"{tar_path}: member {member.name!r} is not under one of {known}")
    if folder and from_name and folder != from_name:
        raise InputError(
            f"{tar_path}: member {member.name!r} is under {folder}/, but the tar's name says "
            f"{from_name}"
        )
    if not folder and not from_name:
        raise InputError(
            f"{tar_path}: member {member.name!r} has no split folder ({known}) and the tar's "
            "name (JetClass_Pythia_<split>[_partN].tar) names none"
        )
    return folder or from_name


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> Path:
    # Built from a validated split dir and base name, so a crafted member name cannot escape.
    with tar.extractfile(member) as src, atomic_file(dest) as tmp, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return dest


# --------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class _Settings:
    jetclass_url: str
    jetclass_record_api: str
    archives: list[str]
    classes: list[str]
    max_files_per_class: int | None
    btag_url: str
    btag_record_api: str
    btag_files: list[str]
    keep_archives: bool
    retries: int
    timeout_s: float


def _settings(cfg: Any) -> _Settings:
    """Validate the `download` params group; errors name the parameter."""

    def get(key):
        return P.get({"download": cfg}, f"download.{key}")

    classes = _names(get("jetclass.classes"), "download.jetclass.classes", schema.JETCLASS_CLASSES)
    if not classes:
        raise InputError("params: 'download.jetclass.classes' must not be empty")
    return _Settings(
        jetclass_url=_url(get("jetclass.url"), "download.jetclass.url"),
        jetclass_record_api=_url(get("jetclass.record_api"), "download.jetclass.record_api"),
        archives=_names(get("jetclass.archives"), "download.jetclass.archives", JETCLASS_MD5),
        classes=sorted(classes, key=schema.JETCLASS_CLASSES.index),
        max_files_per_class=P.positive_int(
            get("jetclass.max_files_per_class"),
            "download.jetclass.max_files_per_class",
            allow_none=True,
        ),
        btag_url=_url(get("btag.url"), "download.btag.url"),
        btag_record_api=_url(get("btag.record_api"), "download.btag.record_api"),
        btag_files=_names(get("btag.files"), "download.btag.files"),
        keep_archives=_bool(get("keep_archives"), "download.keep_archives"),
        retries=P.non_negative_int(get("retries"), "download.retries"),
        timeout_s=P.positive_float(get("timeout_s"), "download.timeout_s"),
    )


def _names(value: Any, name: str, allowed: Iterable[str] | None = None) -> list[str]:
    """A list of distinct plain file/class names, each in `allowed` when given."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"params: '{name}' must be a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise InputError(f"params: '{name}' lists a name twice: {value!r}")
    allowed = None if allowed is None else list(allowed)
    for v in value:
        if allowed is not None and v not in allowed:
            raise InputError(f"params: '{name}' has unknown entry {v!r}; known: {allowed}")
        if "/" in v or "\\" in v or v in (".", ".."):
            raise InputError(f"params: '{name}' entry {v!r} must be a plain file name")
    return list(value)


def _url(value: Any, name: str) -> str:
    if not isinstance(value, str) or not re.match(r"https?://", value):
        raise InputError(f"params: '{name}' must be an http(s) URL, got {value!r}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"params: '{name}' must be true or false, got {value!r}")
    return value


def download_all(cfg: dict, out_root: str | os.PathLike, *, progress: bool = True) -> dict:
    """Fetch what the `download` params group asks for into `out_root`; returns the manifest.

    All params are validated before any network access. Empty lists touch no network and
    leave just `manifest.json`. The manifest is rewritten after each file, so an interrupted
    run skips what it already finished.
    """
    s = _settings(cfg)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out_root)

    def record(section: str, name: str, entry: dict) -> None:
        manifest[section][name] = entry
        _write_manifest(out_root, manifest)

    _jetclass_archives(s, out_root, manifest, record, progress)
    _btag_files(s, out_root, manifest, record, progress)

    # Keep only what the current params ask for: `convert` reads whole folders, so files of
    # archives or classes dropped from the params must not linger there.
    final = {
        "jetclass": {n: manifest["jetclass"][n] for n in s.archives},
        "btag": {n: manifest["btag"][n] for n in s.btag_files},
    }
    _write_manifest(out_root, final)
    _prune(out_root, final)
    return final


def _prune(out_root: Path, manifest: dict) -> None:
    wanted = {f for entry in manifest["jetclass"].values() for f in entry["files"]}
    wanted |= {entry["file"] for entry in manifest["btag"].values()}
    for path in [*out_root.glob("jetclass/*/*.root"), *out_root.glob("btag/*.root")]:
        if path.relative_to(out_root).as_posix() not in wanted:
            log.info("%s: no longer asked for by the params, removing it", path)
            path.unlink()


def _jetclass_archives(s: _Settings, out_root: Path, manifest: dict, record, progress) -> None:
    todo = []
    for name in s.archives:
        if _archive_done(manifest["jetclass"].get(name), name, s, out_root):
            log.info("%s: already extracted (manifest), skipping", name)
        else:
            todo.append(name)
    if not todo:
        return
    md5s = jetclass_checksums(s.jetclass_record_api, s.timeout_s, todo, s.retries)
    for name in todo:
        record("jetclass", name, _jetclass_archive(name, md5s[name], s, out_root, progress))


def jetclass_checksums(
    record_api_url: str, timeout_s: float, required: Iterable[str], retries: int
) -> dict[str, str]:
    """The record API's md5s of `required`; for the real record, checked against JETCLASS_MD5."""
    md5s = fetch_zenodo_checksums(record_api_url, timeout_s, required=required, retries=retries)
    if record_api_url.rstrip("/") == JETCLASS_RECORD_API:
        for name in required:
            if md5s[name] != JETCLASS_MD5[name]:
                raise InputError(
                    f"{record_api_url}: md5 of {name} is {md5s[name]}, but the published one "
                    f"is {JETCLASS_MD5[name]} (has the record changed?)"
                )
    return md5s


def _jetclass_archive(name: str, md5: str, s: _Settings, out_root: Path, progress) -> dict:
    url = _join_url(s.jetclass_url, name)
    archive = download_file(
        url,
        out_root / "archives" / name,
        md5,
        retries=s.retries,
        timeout_s=s.timeout_s,
        progress=progress,
    )
    files = extract_jetclass(archive, out_root, s.classes, s.max_files_per_class)
    if not files:
        log.warning("%s: no files of classes %s in the archive", name, s.classes)
    if not s.keep_archives:
        archive.unlink()
        _remove_if_empty(archive.parent)
    return {
        "name": name,
        "url": url,
        "md5": md5,
        "classes": s.classes,
        "max_files_per_class": s.max_files_per_class,
        "files": [f.relative_to(out_root).as_posix() for f in files],
    }


def _archive_done(previous: dict | None, name: str, s: _Settings, out_root: Path) -> bool:
    # No md5 here (it needs the record API, and the archive is gone): the URL it came from,
    # whose md5 download_file verified, and the selection of files must be the same.
    return (
        isinstance(previous, dict)
        and previous.get("url") == _join_url(s.jetclass_url, name)
        and previous.get("classes") == s.classes
        and previous.get("max_files_per_class") == s.max_files_per_class
        and isinstance(previous.get("files"), list)
        and all((out_root / f).is_file() for f in previous["files"])
    )


def _btag_files(s: _Settings, out_root: Path, manifest: dict, record, progress) -> None:
    todo = [n for n in s.btag_files if not _btag_done(manifest["btag"].get(n), out_root)]
    if not todo:
        return
    # Their md5s are only published in the record's API answer, not in advance.
    md5s = fetch_zenodo_checksums(s.btag_record_api, s.timeout_s, required=todo, retries=s.retries)
    for name in todo:
        dest = download_file(
            _join_url(s.btag_url, name),
            out_root / "btag" / name,
            md5s[name],
            retries=s.retries,
            timeout_s=s.timeout_s,
            progress=progress,
        )
        entry = {
            "name": name,
            "md5": md5s[name],
            "file": f"btag/{name}",
            "size": dest.stat().st_size,
        }
        record("btag", name, entry)


def _btag_done(previous: dict | None, out_root: Path) -> bool:
    # A size check, not an md5 (GBs to hash); download_file verified it when it was written.
    if not isinstance(previous, dict) or not isinstance(previous.get("file"), str):
        return False
    path = out_root / previous["file"]
    return path.is_file() and path.stat().st_size == previous.get("size")


def _read_manifest(out_root: Path) -> dict:
    manifest = {"jetclass": {}, "btag": {}}
    path = out_root / _MANIFEST
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            for section in manifest:
                if isinstance(loaded.get(section), dict):
                    manifest[section] = loaded[section]
        except (ValueError, AttributeError) as err:
            log.warning("%s: unreadable (%s); ignoring it", path, err)
    return manifest


def _write_manifest(out_root: Path, manifest: dict) -> None:
    with atomic_file(out_root / _MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # not empty (kept archives, other .part files): leave it
