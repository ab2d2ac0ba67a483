"""The rehearsal of the paper profile (mpm.rehearsal): its pieces, and the whole run (slow)."""

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import uproot
import yaml

from conftest import REPO, copy_repo
from mpm import rehearsal
from mpm.data.download import JETCLASS_MD5, download_file, fetch_zenodo_checksums

DVC = str(Path(sys.executable).parent / "dvc")
PAPER = yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())
OVERRIDES = rehearsal.load_overrides(rehearsal.OVERRIDES)


def _flat(node, prefix=""):
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else k)
    return out


def test_overrides_change_only_urls_and_scale():
    params = rehearsal.rehearsal_params(PAPER, OVERRIDES, "http://127.0.0.1:1")
    before, after = _flat(PAPER), _flat(params)
    assert before.keys() == after.keys()
    changed = {k for k in before if before[k] != after[k]}
    listed = set(OVERRIDES["urls"])
    for key in OVERRIDES["scale"]:
        listed |= {k for k in before if k == key or k.startswith(f"{key}.")}
    assert changed <= listed, changed - listed
    assert set(OVERRIDES["urls"]) <= changed
    assert after["profile"] == "paper" and after["data.source"] == "real"
    assert after["download.jetclass.archives"] == list(JETCLASS_MD5)  # all 12 tars
    assert after["download.jetclass.record_api"] == "http://127.0.0.1:1/api/records/6619768"


def test_no_rehearsal_run_is_longer_than_the_smoke_profiles():
    """A training length of the paper profile that the overrides miss (a new stage's steps)
    would run for hours or days: every step count is at most the smoke profile's."""
    smoke = _flat(yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text()))
    params = _flat(rehearsal.rehearsal_params(PAPER, OVERRIDES, "http://127.0.0.1:1"))
    lengths = [k for k in params if k.rsplit(".", 1)[-1].endswith("steps")
               or k.endswith(".probe_every")]  # fmt: skip
    assert "ablation.curve.steps" in lengths and "pretrain.steps" in lengths
    longer = {k: (params[k], smoke[k]) for k in lengths if params[k] > smoke[k]}
    assert not longer, f"rehearsal vs smoke: {longer}"


@pytest.mark.parametrize(
    "key, value",
    [("data.source", "generated"), ("download.btag.files", []), ("pretrain.no_such_key", 1)],
)
def test_overrides_reject_what_is_not_scale(key, value):
    bad = {**OVERRIDES, "scale": {key: value}}
    with pytest.raises(rehearsal.InputError, match=key.replace(".", r"\.")):
        rehearsal.rehearsal_params(PAPER, bad, "http://127.0.0.1:1")


def test_records_have_the_real_layouts_and_are_served_with_range(tmp_path):
    served = {
        "jetclass": {"files_per_class": 1, "jets_per_file": {"train": 3, "val": 3, "test": 3}},
        "btag": {"jets": {"train": 6, "val": 6, "test": 6}, "float64": ["test_small.root"]},
    }
    records = rehearsal.build_records(tmp_path / "served", served)
    tars = {f.name: f for f in records[rehearsal.JETCLASS_RECORD]}
    assert set(tars) == set(JETCLASS_MD5)
    with tarfile.open(tars["JetClass_Pythia_train_100M_part0.tar"]) as tar:
        assert "HToBB_000.root" in tar.getnames()  # top level
    with tarfile.open(tars["JetClass_Pythia_train_100M_part1.tar"]) as tar:
        assert "./TTBarLep_010.root" in tar.getnames()
    with tarfile.open(tars["JetClass_Pythia_val_5M.tar"]) as tar:
        assert "val_5M/HToBB_120.root" in tar.getnames()
    btag = {f.name: f for f in records[rehearsal.BTAG_RECORD]}
    with uproot.open(btag["test_small.root"]) as f:
        assert f["tree"]["jet_pt"].interpretation.to_dtype.str.endswith("f8")
        assert "trk_vtx_index" in f["tree"].keys() and "true_vtx_L3D" in f["tree"].keys()

    with rehearsal.RecordServer(records) as server:
        api = f"{server.base}/api/records/{rehearsal.BTAG_RECORD}"
        md5s = fetch_zenodo_checksums(api, 5, required=list(btag))
        url = f"{server.base}/records/{rehearsal.BTAG_RECORD}/files/train_small.root"
        dest = tmp_path / "got" / "train_small.root"
        dest.parent.mkdir()
        data = btag["train_small.root"].read_bytes()
        (dest.parent / "train_small.root.part").write_bytes(data[:1000])  # resumed with Range
        download_file(url, dest, md5s["train_small.root"], progress=False)
        assert dest.read_bytes() == data


def test_a_repro_past_its_timeout_is_stopped_with_the_processes_it_started(tmp_path):
    """A hung stage ends the rehearsal with a one-line error instead of running on (the decoder
    curve once ran the paper's 1M steps here): the command and its children are stopped."""
    pid_file = tmp_path / "child.pid"
    cmd = ["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"]
    tic = time.perf_counter()
    with pytest.raises(rehearsal.InputError, match=r"ran past 1 s in .* and was stopped"):
        rehearsal._run_logged(cmd, tmp_path, {}, tmp_path / "log", timeout_s=1)
    assert time.perf_counter() - tic < 30
    child = Path(f"/proc/{pid_file.read_text().strip()}/status")
    deadline = time.time() + 10
    while child.exists() and "zombie" not in child.read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert not child.exists() or "zombie" in child.read_text()  # the grandchild is gone too
    assert "$ bash -c" in (tmp_path / "log").read_text()


@pytest.mark.parametrize("minutes", ["0", "-5", "nan"])
def test_a_timeout_that_is_not_positive_is_refused_in_one_line(minutes, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        rehearsal.main(["--work", str(tmp_path / "w"), "--timeout-min", minutes])
    assert stop.value.code == 2
    assert "--timeout-min must be positive" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "mpm.rehearsal", "--help"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "--work" in proc.stdout


@pytest.mark.slow
def test_rehearsal_of_the_paper_profile(tmp_path):
    """The paper profile's whole DAG on the loopback records at the rehearsal's scale: every
    stage of dvc.yaml ran, `dvc status` is clean, and the report is the paper profile's."""
    source = copy_repo(tmp_path / "source")  # the working tree, committed (the rehearsal clones)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "snapshot"]):
        subprocess.run(cmd, cwd=source, check=True, capture_output=True)
    tic = time.perf_counter()
    summary = rehearsal.rehearse(source, tmp_path / "work")
    print(f"rehearsal: {time.perf_counter() - tic:.0f} s, {summary}")
    clone = tmp_path / "work" / "repo"

    stages = subprocess.run([DVC, "stage", "list", "--name-only"], cwd=clone, check=True,
                            capture_output=True, text=True).stdout.split()  # fmt: skip
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    assert set(stages) == set(lock) and len(stages) == summary["stages"]
    assert {"download", "convert@jetclass", "convert@btag", "report"} <= set(lock)
    status = subprocess.run([DVC, "status", "--json"], cwd=clone, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    assert json.loads(status) == {}
    report = (clone / "results" / "REPORT.md").read_text()
    assert "| profile" in report and "paper" in report

    # The downloads: every tar, the split from the train tars' names, one file per class each.
    manifest = json.loads((clone / "data/real/manifest.json").read_text())
    assert set(manifest["jetclass"]) == set(JETCLASS_MD5)
    assert len(list((clone / "data/real/jetclass/train_100M").glob("*.root"))) == 10 * 10
    assert len(list((clone / "data/real/jetclass/val_5M").glob("*.root"))) == 10
    convert = json.loads((clone / "results/data/convert_jetclass.json").read_text())
    assert convert["train"]["n_jets"] == 10 * 10 * 20
    btag = json.loads((clone / "results/data/convert_btag.json").read_text())
    assert btag["val"]["n_jets"] == 300  # validate_small.root: the float64 one
