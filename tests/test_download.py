"""The download stage against a local HTTP server (no internet): resume, md5, extraction."""

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from mpm.data import download
from mpm.data.download import (
    download_all,
    download_file,
    extract_jetclass,
    fetch_zenodo_checksums,
)
from mpm.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TAR_NAME = "JetClass_Pythia_train_100M_part0.tar"
VAL_TAR = "JetClass_Pythia_val_5M.tar"
BTAG_NAME = "train_small.root"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- fixture server


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; supports `Range: bytes=N-`; can cut the body after K bytes."""

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        cut = srv.cut_after
        if not srv.cut_always:
            srv.cut_after = None  # one interruption, then serve normally
        self.wfile.write(payload if cut is None else payload[:cut])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests = {}, []
    srv.cut_after, srv.cut_always, srv.ignore_range = None, False, False
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download, "_BACKOFF_S", 0.0)


def payload(n=50_000, seed=0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


JETCLASS_MEMBERS = {
    "train_100M/HToBB_000.root": b"hbb0" * 100,
    "train_100M/TTBar_000.root": b"tbqq0" * 100,
    "train_100M/TTBarLep_000.root": b"tbl0" * 100,
    "train_100M/HToBB_001.root": b"hbb1" * 100,
    "train_100M/notes.txt": b"not a jet file",
}


# --------------------------------------------------------------------------- download_file


def test_full_download_verified(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    dest = download_file(f"{server.base}/f.bin", tmp_path / "f.bin", md5(data), progress=False)
    assert dest.read_bytes() == data
    assert not (tmp_path / "f.bin.part").exists()
    assert server.requests == [("/f.bin", None)]
    # A verified file is not fetched again.
    download_file(f"{server.base}/f.bin", dest, md5(data), progress=False)
    assert len(server.requests) == 1


def test_interrupted_download_resumes_with_range(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.cut_after = 12_345
    dest = download_file(
        f"{server.base}/f.bin", tmp_path / "f.bin", md5(data), retries=2, progress=True
    )
    assert dest.read_bytes() == data
    assert server.requests == [("/f.bin", None), ("/f.bin", "bytes=12345-")]


def test_part_from_earlier_run_is_resumed(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data[:20_000])
    dest = download_file(f"{server.base}/f.bin", tmp_path / "f.bin", md5(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/f.bin", "bytes=20000-")]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(data[:20_000])
    dest = download_file(f"{server.base}/f.bin", tmp_path / "f.bin", md5(data), progress=False)
    assert dest.read_bytes() == data


def test_complete_part_answered_416_is_verified(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)
    dest = download_file(f"{server.base}/f.bin", tmp_path / "f.bin", md5(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/f.bin", f"bytes={len(data)}-")]


def test_md5_mismatch_deletes_download(server, tmp_path):
    data = payload()
    corrupt = bytearray(data)
    corrupt[1000] ^= 0xFF
    server.files["/f.bin"] = bytes(corrupt)
    with pytest.raises(InputError, match=r"f\.bin: md5 mismatch") as err:
        download_file(f"{server.base}/f.bin", tmp_path / "f.bin", md5(data), progress=False)
    assert md5(data) in str(err.value) and md5(bytes(corrupt)) in str(err.value)
    assert not (tmp_path / "f.bin").exists()
    assert not (tmp_path / "f.bin.part").exists()


def test_http_404_names_url(server, tmp_path):
    url = f"{server.base}/missing.bin"
    with pytest.raises(InputError, match="404") as err:
        download_file(url, tmp_path / "missing.bin", "0" * 32, progress=False)
    assert url in str(err.value)
    assert len(server.requests) == 1  # a 404 is final, not retried


def test_retries_exhausted_keeps_part(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.cut_after, server.cut_always = 0, True  # headers only, never a byte of body
    url = f"{server.base}/f.bin"
    (tmp_path / "f.bin.part").write_bytes(data[:100])
    with pytest.raises(InputError, match="kept for resuming") as err:
        download_file(url, tmp_path / "f.bin", md5(data), retries=2, progress=False)
    assert url in str(err.value) and "3 attempts" in str(err.value)
    assert (tmp_path / "f.bin.part").read_bytes() == data[:100]
    assert len(server.requests) == 3


# --------------------------------------------------------------------------- Zenodo checksums


def test_zenodo_checksums_list_and_dict_forms(server):
    entries = [
        {"key": "a.root", "checksum": "md5:" + "a" * 32},
        {"key": "b.root", "checksum": "md5:" + "B" * 32},
    ]
    server.files["/list"] = json.dumps({"files": entries}).encode()
    server.files["/dict"] = json.dumps(
        {"files": {"entries": {e["key"]: e for e in entries}}}
    ).encode()
    expected = {"a.root": "a" * 32, "b.root": "b" * 32}
    assert fetch_zenodo_checksums(f"{server.base}/list", 5) == expected
    assert fetch_zenodo_checksums(f"{server.base}/dict", 5, required=["a.root"]) == expected


def test_zenodo_checksums_errors(server):
    server.files["/bad"] = b"<html>not json</html>"
    server.files["/rec"] = json.dumps({"files": []}).encode()
    with pytest.raises(InputError, match="not a readable Zenodo record"):
        fetch_zenodo_checksums(f"{server.base}/bad", 5)
    with pytest.raises(InputError, match="test_small.root"):
        fetch_zenodo_checksums(f"{server.base}/rec", 5, required=["test_small.root"])


# --------------------------------------------------------------------------- extract_jetclass


def test_extract_selects_classes_exactly(tmp_path):
    tar = tmp_path / "x.tar"
    tar.write_bytes(make_tar(JETCLASS_MEMBERS))
    out = tmp_path / "out"
    written = extract_jetclass(tar, out, ["Tbqq"])
    assert [p.name for p in written] == ["TTBar_000.root"]  # not TTBarLep
    assert written[0] == out / "jetclass" / "train_100M" / "TTBar_000.root"
    assert written[0].read_bytes() == JETCLASS_MEMBERS["train_100M/TTBar_000.root"]

    written = extract_jetclass(tar, out, ["Tbl", "Hbb"], max_files_per_class=1)
    assert sorted(p.name for p in written) == ["HToBB_000.root", "TTBarLep_000.root"]
    assert not list(out.rglob(".*tmp*"))


def test_extract_rejects_unknown_split_dir(tmp_path):
    tar = tmp_path / "x.tar"
    tar.write_bytes(make_tar({"elsewhere/HToBB_000.root": b"x"}))
    with pytest.raises(InputError, match=r"x\.tar.*elsewhere/HToBB_000\.root"):
        extract_jetclass(tar, tmp_path / "out", ["Hbb"])


def test_extract_train_tar_with_top_level_members(tmp_path):
    # The real train parts: members at the top level, with or without `./`; the split comes
    # from the tar's name.
    tar = tmp_path / "JetClass_Pythia_train_100M_part3.tar"
    tar.write_bytes(make_tar({"HToBB_030.root": b"a", "./TTBar_031.root": b"b"}))
    out = tmp_path / "out"
    written = extract_jetclass(tar, out, ["Hbb", "Tbqq"])
    train = out / "jetclass" / "train_100M"
    assert written == [train / "HToBB_030.root", train / "TTBar_031.root"]
    assert [p.read_bytes() for p in written] == [b"a", b"b"]


@pytest.mark.parametrize("prefix", ["", "./"])
def test_extract_val_and_test_tars_keep_their_split_folder(tmp_path, prefix):
    for name, split in (("JetClass_Pythia_val_5M.tar", "val_5M"),
                        ("JetClass_Pythia_test_20M.tar", "test_20M")):  # fmt: skip
        tar = tmp_path / name
        tar.write_bytes(make_tar({f"{prefix}{split}/HToBB_120.root": split.encode()}))
        written = extract_jetclass(tar, tmp_path / "out", ["Hbb"])
        assert written == [tmp_path / "out" / "jetclass" / split / "HToBB_120.root"]


def test_extract_rejects_split_folder_contradicting_tar_name(tmp_path):
    tar = tmp_path / "JetClass_Pythia_train_100M_part0.tar"
    tar.write_bytes(make_tar({"val_5M/HToBB_120.root": b"x"}))
    with pytest.raises(
        InputError, match=r"part0\.tar: member 'val_5M/HToBB_120\.root'.*train_100M"
    ):
        extract_jetclass(tar, tmp_path / "out", ["Hbb"])
    assert not (tmp_path / "out" / "jetclass").exists()


def test_extract_rejects_top_level_member_of_unknown_tar(tmp_path):
    tar = tmp_path / "renamed.tar"
    tar.write_bytes(make_tar({"./HToBB_000.root": b"x"}))
    with pytest.raises(InputError, match=r"renamed\.tar: member '\./HToBB_000\.root' has no split"):
        extract_jetclass(tar, tmp_path / "out", ["Hbb"])


# --------------------------------------------------------------------------- download_all


def config(server, archives=(), files=(), classes=("Hbb", "Tbqq"), **overrides) -> dict:
    cfg = {
        "jetclass": {
            "url": f"{server.base}/jetclass/",
            "record_api": f"{server.base}/api/records/2",
            "archives": list(archives),
            "classes": list(classes),
            "max_files_per_class": None,
        },
        "btag": {
            "url": f"{server.base}/btag/",
            "record_api": f"{server.base}/api/records/1",
            "files": list(files),
        },
        "keep_archives": False,
        "retries": 2,
        "timeout_s": 5,
    }
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


# The real layouts: a train part's members at the top level, the val tar's under val_5M/.
TRAIN_MEMBERS = {
    "HToBB_000.root": b"hbb0" * 100,
    "./TTBar_000.root": b"tbqq0" * 100,
    "TTBarLep_000.root": b"tbl0" * 100,
    "HToBB_001.root": b"hbb1" * 100,
    "notes.txt": b"not a jet file",
}
VAL_MEMBERS = {"val_5M/HToBB_120.root": b"hbb120" * 100}


def serve_records(server, tars: dict[str, bytes], btag: dict[str, bytes]) -> None:
    """The files and the two record API answers (Zenodo's format) of `config`'s URLs."""
    for prefix, files, record in (("jetclass", tars, 2), ("btag", btag, 1)):
        entries = []
        for name, data in files.items():
            server.files[f"/{prefix}/{name}"] = data
            entries.append({"key": name, "size": len(data), "checksum": "md5:" + md5(data)})
        server.files[f"/api/records/{record}"] = json.dumps({"files": entries}).encode()


def test_download_all_end_to_end_and_skip_on_rerun(server, tmp_path):
    tar_bytes, btag_bytes = make_tar(TRAIN_MEMBERS), payload(3000, seed=7)
    serve_records(server, {TAR_NAME: tar_bytes, VAL_TAR: make_tar(VAL_MEMBERS)},
                  {BTAG_NAME: btag_bytes})  # fmt: skip
    out = tmp_path / "real"
    cfg = config(server, archives=[TAR_NAME, VAL_TAR], files=[BTAG_NAME])

    manifest = download_all(cfg, out, progress=False)
    assert sorted(manifest["jetclass"][TAR_NAME]["files"]) == [
        "jetclass/train_100M/HToBB_000.root",
        "jetclass/train_100M/HToBB_001.root",
        "jetclass/train_100M/TTBar_000.root",
    ]
    assert manifest["jetclass"][TAR_NAME]["md5"] == md5(tar_bytes)  # from the record API
    assert manifest["jetclass"][VAL_TAR]["files"] == ["jetclass/val_5M/HToBB_120.root"]
    assert (out / "btag" / BTAG_NAME).read_bytes() == btag_bytes
    assert not (out / "archives").exists()  # deleted after extraction
    assert json.loads((out / "manifest.json").read_text()) == manifest
    n_requests = len(server.requests)

    download_all(cfg, out, progress=False)  # everything is recorded and present
    assert len(server.requests) == n_requests

    (out / "jetclass" / "train_100M" / "TTBar_000.root").unlink()
    download_all(cfg, out, progress=False)  # a missing file brings the archive back
    assert (out / "jetclass" / "train_100M" / "TTBar_000.root").is_file()
    assert server.requests[n_requests:] == [
        ("/api/records/2", None),
        (f"/jetclass/{TAR_NAME}", None),
    ]

    # Narrowing the params removes what they no longer ask for (convert reads whole folders).
    download_all(
        config(server, archives=[TAR_NAME], files=[], classes=("Hbb",)), out, progress=False
    )
    assert sorted(p.name for p in out.rglob("*.root")) == ["HToBB_000.root", "HToBB_001.root"]


def test_jetclass_md5_comes_from_the_record_api(server, tmp_path):
    # A record whose md5 differs from the tar's: the record API is what the download checks.
    tar_bytes = make_tar(TRAIN_MEMBERS)
    serve_records(server, {TAR_NAME: tar_bytes}, {})
    server.files["/api/records/2"] = json.dumps(
        {"files": {"entries": {TAR_NAME: {"key": TAR_NAME, "checksum": "md5:" + "0" * 32}}}}
    ).encode()
    with pytest.raises(InputError, match=f"{TAR_NAME}: md5 mismatch"):
        download_all(config(server, archives=[TAR_NAME]), tmp_path / "real", progress=False)
    server.files["/api/records/2"] = json.dumps({"files": []}).encode()
    with pytest.raises(InputError, match=f"records/2: file.*{TAR_NAME}.*not in the record"):
        download_all(config(server, archives=[TAR_NAME]), tmp_path / "real", progress=False)


def test_real_record_api_must_agree_with_the_published_md5s(server, tmp_path, monkeypatch):
    tar_bytes = make_tar(TRAIN_MEMBERS)
    serve_records(server, {TAR_NAME: tar_bytes}, {})
    cfg = config(server, archives=[TAR_NAME])
    monkeypatch.setattr(download, "JETCLASS_RECORD_API", cfg["jetclass"]["record_api"])
    with pytest.raises(InputError, match=f"md5 of {TAR_NAME} is {md5(tar_bytes)}, but the "
                       f"published one is {download.JETCLASS_MD5[TAR_NAME]}"):  # fmt: skip
        download_all(cfg, tmp_path / "real", progress=False)
    assert [path for path, _ in server.requests] == ["/api/records/2"]  # nothing downloaded
    monkeypatch.setitem(download.JETCLASS_MD5, TAR_NAME, md5(tar_bytes))
    download_all(cfg, tmp_path / "real", progress=False)
    assert (tmp_path / "real/jetclass/train_100M/HToBB_000.root").is_file()


def test_every_profile_names_the_real_jetclass_record():
    for path in (REPO / "params.yaml", *sorted((REPO / "profiles").glob("*.yaml"))):
        jetclass = yaml.safe_load(path.read_text())["download"]["jetclass"]
        assert jetclass["record_api"] == download.JETCLASS_RECORD_API, path
        assert set(jetclass["archives"]) <= set(download.JETCLASS_MD5), path


def test_download_all_empty_lists_touch_no_network(tmp_path):
    class Unreachable:
        base = "http://127.0.0.1:9"  # nothing listens; any request would fail

    out = tmp_path / "real"
    manifest = download_all(config(Unreachable), out, progress=False)
    assert manifest == {"jetclass": {}, "btag": {}}
    assert [p.name for p in out.iterdir()] == ["manifest.json"]


@pytest.mark.parametrize(
    "key, value, param",
    [
        (
            "jetclass.archives",
            ["JetClass_Pythia_train_100M_part99.tar"],
            "download.jetclass.archives",
        ),
        ("retries", -1, "download.retries"),
        ("jetclass.classes", ["Hbb", "Top"], "download.jetclass.classes"),
        ("jetclass.max_files_per_class", 0, "download.jetclass.max_files_per_class"),
        ("btag.files", ["../escape.root"], "download.btag.files"),
        ("timeout_s", 0, "download.timeout_s"),
        ("keep_archives", "no", "download.keep_archives"),
        ("btag.url", "ftp://x", "download.btag.url"),
        ("jetclass.record_api", None, "download.jetclass.record_api"),
    ],
)
def test_invalid_params_name_the_param(tmp_path, key, value, param):
    class Unreachable:
        base = "http://127.0.0.1:9"

    with pytest.raises(InputError, match=re.escape(f"'{param}'")):
        download_all(config(Unreachable, **{key: value}), tmp_path / "real", progress=False)
    assert not (tmp_path / "real").exists()  # validated before anything is written


def test_missing_param_is_named(tmp_path):
    class Unreachable:
        base = "http://127.0.0.1:9"

    cfg = config(Unreachable)
    del cfg["btag"]["record_api"]
    with pytest.raises(InputError, match="download.btag.record_api"):
        download_all(cfg, tmp_path / "real", progress=False)


# --------------------------------------------------------------------------- stage CLI


def run_stage(*args):
    return subprocess.run(
        [sys.executable, "stages/download.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_help():
    result = run_stage("--help")
    assert result.returncode == 0 and "--out" in result.stdout


def test_cli_bad_params_one_line_error(tmp_path):
    class Unreachable:
        base = "http://127.0.0.1:9"

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"download": config(Unreachable, retries=-1)}))
    result = run_stage("--params", str(params), "--out", str(tmp_path / "real"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: download:")
    assert "download.retries" in lines[0]


def test_cli_empty_lists_write_manifest(tmp_path):
    class Unreachable:
        base = "http://127.0.0.1:9"

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"download": config(Unreachable)}))
    result = run_stage("--params", str(params), "--out", str(tmp_path / "real"))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["manifest.json"]
