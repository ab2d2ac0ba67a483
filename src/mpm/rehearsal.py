"""A dress rehearsal of the paper profile against a loopback copy of the two Zenodo records.

The paper profile is the one that downloads (JetClass, record 6619768; BTag, record 13350327)
and its runs take days, so a defect in its real-data path would otherwise show after a 15 GB
download. The rehearsal runs that path end to end in minutes:

1. writes small files in the real schemas and layouts: every JetClass tar of the record with
   its real name and member layout (train parts: members at the top level; val and test:
   under val_5M/ and test_20M/), the three reduced BTag files (one with float64 kinematics),
   and both records' API answers in Zenodo's format, with md5 checksums;
2. serves them on 127.0.0.1 with HTTP Range support, as zenodo.org would;
3. git-clones the repository into a work folder, copies profiles/paper.yaml to params.yaml and
   applies the URL and scale overrides of rehearsal.yaml (one place: nothing else changes);
4. runs `dvc repro` (download, convert, tokenizers, every pre-training stage, ablations,
   downstream, figures and the report) and checks that every stage of dvc.yaml is in dvc.lock,
   that `dvc status` is clean and that results/REPORT.md names the paper profile.

    python -m mpm.rehearsal --work /tmp/rehearsal       # rehearses the committed HEAD

The clone is of the committed state: uncommitted edits are not rehearsed (a warning says so).
"""

import argparse
import copy
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import awkward as ak
import numpy as np
import yaml

from mpm.data import schema
from mpm.data.download import JETCLASS_MD5
from mpm.data.root_io import write_jetclass, write_tree
from mpm.errors import InputError

log = logging.getLogger("rehearsal")

ZENODO = "https://zenodo.org"
JETCLASS_RECORD = 6619768
BTAG_RECORD = 13350327
BTAG_FILES = {"train": "train_small.root", "val": "validate_small.root", "test": "test_small.root"}
OVERRIDES = Path(__file__).with_name("rehearsal.yaml")  # in the clone: src/mpm/rehearsal.yaml
# File numbers of the real record: train 000-099 (10 per part), test 100-119, val 120-124.
_FIRST_FILE = {"val_5M": 120, "test_20M": 100}
# Soft-drop masses (GeV) of the processes, so that the classes differ a little.
_MASS = {"QCD": 60, "Hbb": 125, "Hcc": 125, "Hgg": 125, "H4q": 125, "Hqql": 110, "Zqq": 91,
         "Wqq": 80, "Tbqq": 173, "Tbl": 150}  # fmt: skip


# --------------------------------------------------------------------------- fixture files


def write_jetclass_file(path: Path, process: str, n_jets: int, seed: int) -> Path:
    """A JetClass-schema file of `process` (e.g. HToBB): synthetic jets, real branches/dtypes.

    part_deta is sign(jet_eta) * (eta - jet_eta) as in the real files; neutral particles have
    zero impact parameters and errors; some jets have more than 128 particles, some particles
    lie beyond the 0.8 clip.
    """
    cls = schema.JETCLASS_PROCESSES[process]
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.poisson(30 if cls == "QCD" else 50, n_jets), 2, None)
    counts[:: max(1, n_jets // 3)] += 100  # a few over the 128 kept
    n = int(counts.sum())
    jet_idx = np.repeat(np.arange(n_jets), counts)
    jet_pt = rng.uniform(500, 1000, n_jets)
    jet_eta = rng.uniform(-2, 2, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    weight = rng.exponential(1.0, n)
    pt = jet_pt[jet_idx] * weight / np.bincount(jet_idx, weight)[jet_idx]
    deta, dphi = rng.normal(0, 0.25, n), rng.normal(0, 0.25, n)
    eta, phi = jet_eta[jet_idx] + deta, jet_phi[jet_idx] + dphi
    kind = rng.choice(5, n, p=[0.3, 0.1, 0.55, 0.025, 0.025])  # photon neutral hadron e mu
    charged = kind >= 2
    charge = np.where(charged, rng.choice([-1.0, 1.0], n), 0.0)
    ip = rng.normal(0, 0.05, (2, n)) * charged
    err = rng.uniform(0.01, 0.05, (2, n)) * charged

    def jagged(values):
        return ak.unflatten(values, counts)

    part = {
        "px": pt * np.cos(phi),
        "py": pt * np.sin(phi),
        "pz": pt * np.sinh(eta),
        "energy": pt * np.cosh(eta),
        "deta": np.sign(jet_eta)[jet_idx] * deta,
        "dphi": dphi,
        "d0val": ip[0],
        "d0err": err[0],
        "dzval": ip[1],
        "dzerr": err[1],
        "charge": charge,
        "isPhoton": kind == 0,
        "isNeutralHadron": kind == 1,
        "isChargedHadron": kind == 2,
        "isElectron": kind == 3,
        "isMuon": kind == 4,
    }
    energy = np.bincount(jet_idx, part["energy"], n_jets)
    jet = {
        "jet_pt": jet_pt,
        "jet_eta": jet_eta,
        "jet_phi": jet_phi,
        "jet_energy": energy,
        "jet_nparticles": counts.astype(np.float32),
        "jet_sdmass": np.abs(rng.normal(_MASS[cls], 10, n_jets)),
        **{f"jet_tau{i}": rng.uniform(0, 1, n_jets) / i for i in range(1, 5)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jetclass(path, {k: jagged(v) for k, v in part.items()}, jet, cls)
    return path


def write_btag_file(path: Path, n_jets: int, seed: int, float_dtype=np.float32) -> Path:
    """A BTag-schema file with the record's branch names; light, c and b jets in turn.

    `float_dtype` is that of the kinematics (jet_pt/eta/phi/M, trk_pt/eta/phi): the record does
    not publish its dtypes, so the reader must take float32 and float64 alike.
    """
    rng = np.random.default_rng(seed)
    flav = np.resize(np.array([0, 4, 5], np.int32), n_jets)
    counts = rng.integers(1, 21, n_jets)  # more than the 15 kept, now and then
    n = int(counts.sum())
    jet_idx = np.repeat(np.arange(n_jets), counts)
    jet_pt = rng.uniform(20, 300, n_jets)
    jet_eta = rng.uniform(-2.5, 2.5, n_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets)
    heavy = flav != 0
    n_hadrons = heavy.astype(np.int64)
    hadron_pdgid = np.where(flav == 5, 521, 421)[heavy] * rng.choice([-1, 1], int(heavy.sum()))
    hadron_z = rng.normal(0, 30, n_jets)
    from_hadron = heavy[jet_idx] & (rng.uniform(size=n) < 0.5)
    prod_z = np.where(from_hadron, hadron_z[jet_idx], 0.0)
    prod_z = np.where(~from_hadron & (rng.uniform(size=n) < 0.1), rng.normal(0, 5, n), prod_z)
    pdg = rng.choice([211, 321, 2212, 11, 13], n, p=[0.7, 0.15, 0.05, 0.05, 0.05])
    charge = rng.choice([-1, 1], n)
    lepton = (pdg == 11) | (pdg == 13)
    pdg = np.where(lepton, -charge * pdg, charge * pdg)  # e-/mu- have positive ids
    trk_eta = jet_eta[jet_idx] + rng.normal(0, 0.1, n)
    theta = 2 * np.arctan(np.exp(-trk_eta))
    trk = {
        "pt": jet_pt[jet_idx] * rng.uniform(0.02, 0.4, n),
        "eta": trk_eta,
        "phi": jet_phi[jet_idx] + rng.normal(0, 0.1, n),
        "ctgtheta": 1 / np.tan(theta),
        "d0": rng.normal(0, np.where(from_hadron, 0.5, 0.02)),
        "z0": rng.normal(0, np.where(from_hadron, 0.5, 0.05)),
        "d0err": rng.uniform(0.005, 0.05, n),
        "z0err": rng.uniform(0.01, 0.1, n),
        "phierr": rng.uniform(1e-4, 1e-3, n),
        "ctgthetaerr": rng.uniform(1e-4, 1e-3, n),
        "pterr": rng.uniform(0.01, 0.1, n),
        "charge": charge,
        "pdg_id": pdg,
        "pythia_i": rng.integers(0, 1000, n),
        "vtx_index": np.where(from_hadron, 1, 0),
        "prod_x": rng.normal(0, 0.01, n),
        "prod_y": rng.normal(0, 0.01, n),
        "prod_z": prod_z,
        "dec_x": rng.normal(0, 100, n),
        "dec_y": rng.normal(0, 100, n),
        "dec_z": rng.normal(0, 100, n),
    }
    kinematic = {"pt", "eta", "phi"}
    ints = {"charge", "pdg_id", "pythia_i", "vtx_index"}
    tracks = {
        k: ak.unflatten(v.astype(np.int32 if k in ints else (
            float_dtype if k in kinematic else np.float32)), counts)
        for k, v in trk.items()
    }  # fmt: skip
    hadrons = {
        "pdgid": ak.unflatten(hadron_pdgid.astype(np.int32), n_hadrons),
        "z": ak.unflatten(hadron_z[heavy].astype(np.float32), n_hadrons),
    }
    vertices = {
        k: ak.unflatten(rng.normal(0, 1, int(n_hadrons.sum())).astype(np.float32), n_hadrons)
        for k in ("x", "y", "z", "L3D")
    }
    scalars = {
        "jet_pt": jet_pt.astype(float_dtype),
        "jet_eta": jet_eta.astype(float_dtype),
        "jet_phi": jet_phi.astype(float_dtype),
        "jet_M": rng.uniform(2, 30, n_jets).astype(float_dtype),
        "jet_flav": flav,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tree(
        path,
        schema.BTAG_TREE,
        scalars,
        {"trk": tracks, "hadron": hadrons, "true_vtx": vertices},
        {"trk": "n_trks", "hadron": "n_hadrons", "true_vtx": "n_true_vtx"},
    )
    return path


def _tar(path: Path, members: list[tuple[str, Path]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, source in members:
            info = tar.gettarinfo(source, arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(source, "rb") as f:
                tar.addfile(info, f)
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def build_records(out: Path, served: dict) -> dict[int, list[Path]]:
    """Write the files of both records under `out` ({record id: [files]})."""
    jc, bt = served["jetclass"], served["btag"]
    per_class = int(jc["files_per_class"])
    scratch = out / "members"
    records: dict[int, list[Path]] = {JETCLASS_RECORD: [], BTAG_RECORD: []}
    seed = 0
    for name in JETCLASS_MD5:
        split = re.fullmatch(r"JetClass_Pythia_(\w+?)(?:_part(\d+))?\.tar", name)
        split_dir, part = split.group(1), split.group(2)
        short = next(k for k, v in schema.JETCLASS_SPLIT_DIRS.items() if v == split_dir)
        first = 10 * int(part) if part is not None else _FIRST_FILE[split_dir]
        members = []
        for process in schema.JETCLASS_PROCESSES:
            for j in range(per_class):
                seed += 1
                base = f"{process}_{first + j:03d}.root"
                file = write_jetclass_file(
                    scratch / name / base, process, int(jc["jets_per_file"][short]), seed
                )
                if part is None:
                    member = f"{split_dir}/{base}"
                else:  # top level; the odd parts as `./x.root`, the other form tar writes
                    member = f"./{base}" if int(part) % 2 else base
                members.append((member, file))
        records[JETCLASS_RECORD].append(_tar(out / name, members))
    shutil.rmtree(scratch)
    float64 = set(bt.get("float64", []))
    for i, (split, name) in enumerate(BTAG_FILES.items()):
        dtype = np.float64 if name in float64 else np.float32
        records[BTAG_RECORD].append(
            write_btag_file(out / name, int(bt["jets"][split]), 1000 + i, dtype)
        )
    return records


def record_answer(record_id: int, files: list[Path], base: str) -> dict:
    """The record API's answer (Zenodo's format: `files` with key, size and md5 checksum)."""
    api = f"{base}/api/records/{record_id}"
    return {
        "id": record_id,
        "recid": str(record_id),
        "doi": f"10.5281/zenodo.{record_id}",
        "links": {"self": api, "self_html": f"{base}/records/{record_id}"},
        "files": [
            {
                "id": hashlib.md5(f.name.encode(), usedforsecurity=False).hexdigest(),
                "key": f.name,
                "size": f.stat().st_size,
                "checksum": f"md5:{_md5(f)}",
                "links": {"self": f"{api}/files/{urllib.parse.quote(f.name)}/content"},
            }
            for f in files
        ],
    }


# --------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        target = self.server.routes(path)
        if target is None:
            self.send_error(404)
            return
        data = target if isinstance(target, bytes) else None
        size = len(data) if data is not None else target.stat().st_size
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not match:
                self.send_error(400, "unsupported Range")
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        kind = "application/json" if data is not None else "application/octet-stream"
        self.send_header("Content-Type", kind)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        if data is not None:
            self.wfile.write(data[start : end + 1])
            return
        with open(target, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left and (chunk := f.read(min(left, 1 << 20))):
                self.wfile.write(chunk)
                left -= len(chunk)

    def log_message(self, fmt, *args):
        log.debug("server: " + fmt, *args)


class RecordServer:
    """Serves records {id: [files]} on 127.0.0.1 at zenodo.org's paths: /record(s)/<id>/files/
    <name>, /api/records/<id>/files/<name>/content and the API answer /api/records/<id>."""

    def __init__(self, records: dict[int, list[Path]], port: int = 0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.files = {}
        self.answers = {}
        for rid, files in records.items():
            self.answers[f"/api/records/{rid}"] = json.dumps(record_answer(rid, files, self.base))
            for f in files:
                for prefix in (f"/record/{rid}/files", f"/records/{rid}/files"):
                    self.files[f"{prefix}/{f.name}"] = f
                self.files[f"/api/records/{rid}/files/{f.name}/content"] = f
        self.httpd.routes = self._route
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,), daemon=True)

    def _route(self, path: str):
        path = path.rstrip("/")
        if path in self.answers:
            return self.answers[path].encode()
        return self.files.get(path)

    def __enter__(self):
        self._thread.start()
        log.info("serving the records at %s", self.base)
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- the params


def _keys(node, prefix=""):
    if not isinstance(node, dict):
        return {prefix}
    return set().union(*(_keys(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()))


def _set(params: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = params
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node:
        raise InputError(f"rehearsal overrides: {key!r} is not a key of profiles/paper.yaml")
    if isinstance(node[leaf], dict) and (not isinstance(value, dict) or
                                         not set(value) <= set(node[leaf])):  # fmt: skip
        raise InputError(f"rehearsal overrides: {key!r} must give keys of the profile's group")
    node[leaf] = {**node[leaf], **value} if isinstance(node[leaf], dict) else value


def load_overrides(path: Path) -> dict:
    try:
        overrides = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path}: not a readable overrides file ({err})") from None
    if not isinstance(overrides, dict) or set(overrides) != {"urls", "scale", "served"}:
        raise InputError(f"{path}: must have exactly the groups urls, scale and served")
    return overrides


def _is_scale(key: str) -> bool:
    """Not the profile's identity, its data source or what it downloads (but how much)."""
    group = key.split(".")[0]
    if group == "download":
        return key == "download.jetclass.max_files_per_class"
    return group not in ("profile", "seed", "data")


def rehearsal_params(paper: dict, overrides: dict, base: str) -> dict:
    """The paper profile with the overrides' URL and scale changes (and nothing else)."""
    params = copy.deepcopy(paper)
    if params.get("profile") != "paper":
        raise InputError(f"profiles/paper.yaml: profile is {params.get('profile')!r}, not paper")
    if params.get("data", {}).get("source") != "real":
        raise InputError("profiles/paper.yaml: data.source must be real (the downloads)")
    for key in overrides["urls"]:
        *parents, leaf = key.split(".")
        node = params
        for p in parents:
            node = node.get(p, {})
        url = node.get(leaf)
        if not isinstance(url, str) or not url.startswith(ZENODO + "/"):
            raise InputError(f"rehearsal overrides: {key!r} is {url!r}, not a {ZENODO} URL")
        _set(params, key, base + url[len(ZENODO) :])
    for key, value in overrides["scale"].items():
        if not _is_scale(key):
            raise InputError(f"rehearsal overrides: {key!r} is not a scale setting")
        _set(params, key, value)
    assert _keys(params) == _keys(paper)
    return params


# --------------------------------------------------------------------------- the run


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    """Run `cmd` and return its stdout; InputError with the output's end on failure."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise InputError(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _run_logged(cmd: list[str], cwd: Path, env: dict, log_path: Path,
                timeout_s: float | None = None) -> None:  # fmt: skip
    """Run `cmd` with its output appended to `log_path` as it comes (a long `dvc repro`); past
    `timeout_s` it and every process it started (its session) are stopped, and InputError."""
    with open(log_path, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_session(proc)
            raise InputError(f"{' '.join(cmd)} ran past {timeout_s:g} s in {cwd} and was "
                             f"stopped (log: {log_path})") from None  # fmt: skip
    if code != 0:
        tail = log_path.read_text()[-4000:]
        raise InputError(f"{' '.join(cmd)} failed in {cwd} (exit {code}; {log_path}):\n{tail}")


def _stop_session(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to `proc`'s session (a stage's processes with it), SIGKILL after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _clone(repo: Path, dest: Path, env: dict) -> str:
    head = _run(["git", "rev-parse", "HEAD"], repo, env).strip()
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], repo, env)
    if dirty.strip():
        log.warning("%s has uncommitted changes: the rehearsal runs the committed %s", repo,
                    head[:12])  # fmt: skip
    _run(["git", "clone", "-q", str(repo), str(dest)], repo, env)
    return head


def rehearse(repo: Path, work: Path, overrides_path: Path | None = None,
             timeout_s: float = 3600) -> dict:  # fmt: skip
    """Clone `repo` into `work`/repo, serve the records, run `dvc repro` on the paper profile
    with the overrides (stopped past `timeout_s`: a stage that hangs, or a scale that is not
    the rehearsal's), and check the result. Returns a summary; InputError on any failure."""
    repo, work = Path(repo).resolve(), Path(work).resolve()
    clone, served = work / "repo", work / "served"
    if clone.exists() or served.exists():
        raise InputError(f"{work}: holds an earlier rehearsal (repo/, served/): remove it first")
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(clone / "src")}  # fmt: skip  # the clone's library
    env.pop("MPM_LAUNCHER", None)
    timings = {}
    tic = time.perf_counter()
    head = _clone(repo, clone, env)
    overrides = load_overrides(overrides_path or clone / "src/mpm" / OVERRIDES.name)
    records = build_records(served, overrides["served"])
    timings["prepare_s"] = round(time.perf_counter() - tic, 1)

    paper = yaml.safe_load((clone / "profiles/paper.yaml").read_text())
    with RecordServer(records) as server:
        params = rehearsal_params(paper, overrides, server.base)
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (clone / "dvc.lock").unlink(missing_ok=True)  # every stage must run and be recorded
        log.info("dvc repro in %s (log: %s)", clone, work / "repro.log")
        tic = time.perf_counter()
        _run_logged(["dvc", "repro"], clone, env, work / "repro.log", timeout_s)
        timings["repro_s"] = round(time.perf_counter() - tic, 1)
        status = json.loads(_run(["dvc", "status", "--json"], clone, env))
    stages = set(_run(["dvc", "stage", "list", "--name-only"], clone, env).split())
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    problems = []
    if missing := sorted(stages - set(lock)):
        problems.append(f"stages that did not run (not in dvc.lock): {missing}")
    if status:
        problems.append(f"`dvc status` is not clean: {status}")
    report = clone / "results" / "REPORT.md"
    text = report.read_text() if report.is_file() else ""
    # The report's scale table: | profile | paper |, | data | real |
    if not re.search(r"^\|\s*profile\s*\|\s*paper\s*\|", text, re.M):
        problems.append(f"{report} does not name the paper profile")
    if not re.search(r"^\|\s*data\s*\|\s*real\s*\|", text, re.M):
        problems.append(f"{report} does not say the data are real")
    if problems:
        raise InputError("rehearsal failed: " + "; ".join(problems))
    return {"commit": head, "clone": str(clone), "stages": len(stages), "report": str(report),
            **timings}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mpm.rehearsal",
        description="Rehearse the paper profile end to end (download, convert, every stage, the "
        "report) against a loopback copy of the JetClass and BTag Zenodo records, at the "
        "reduced scale of src/mpm/rehearsal.yaml.",
    )
    parser.add_argument("--work", required=True, type=Path, help="a new, empty work folder")
    parser.add_argument("--repo", default=".", type=Path, help="repository to clone (default: .)")
    parser.add_argument("--overrides", type=Path, help="default: the clone's rehearsal.yaml")
    parser.add_argument("--timeout-min", type=float, default=60,
                        help="stop `dvc repro` past this many minutes (default: 60)")
    parser.add_argument(
        "--serve-only", action="store_true", help="only write and serve the records, until ^C"
    )
    args = parser.parse_args(argv)
    if not args.timeout_min > 0:
        parser.error(f"--timeout-min must be positive, got {args.timeout_min:g}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rehearsal: %(message)s",
                        datefmt="%H:%M:%S")  # fmt: skip
    try:
        if args.serve_only:
            records = build_records(
                args.work / "served", load_overrides(args.overrides or OVERRIDES)["served"]
            )
            with RecordServer(records) as server:
                print(f"serving {ZENODO} records {sorted(records)} at {server.base}", flush=True)
                threading.Event().wait()
        summary = rehearse(args.repo, args.work, args.overrides, 60 * args.timeout_min)
    except InputError as err:
        print(f"error: rehearsal: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
