"""The repository as a whole: profiles, stage CLIs, and the DVC DAG on the smoke profile."""

import filecmp
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_repo

STAGES = sorted((REPO / "stages").glob("*.py"))
PROFILES = [REPO / "params.yaml", *sorted((REPO / "profiles").glob("*.yaml"))]


def _keys(node, prefix=""):
    if not isinstance(node, dict):
        return {prefix}
    return set().union(*(_keys(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()))


def test_profiles_have_the_same_keys_and_no_templating():
    reference = _keys(yaml.safe_load(PROFILES[0].read_text()))
    for path in PROFILES:
        text = path.read_text()
        assert "${" not in text and "&" not in text and "*" not in text.replace("# ", ""), path
        params = yaml.safe_load(text)
        assert _keys(params) == reference, path
        assert 0 < params["mask_rate"] < 1 and isinstance(params["seed"], int)
    names = {yaml.safe_load(p.read_text())["profile"] for p in PROFILES}
    assert names == {"default", "smoke", "paper"}


def test_every_profile_weights_the_id_task_as_the_authors_do():
    # 0.3: the authors' choice, so that the ID task does not dominate the continuous one
    for path in PROFILES:
        assert yaml.safe_load(path.read_text())["pretrain"]["id_task"]["weight"] == 0.3, path


def test_the_lock_records_only_stages_of_the_dag():
    """DVC keeps a lock entry of a stage that left dvc.yaml (a renamed stage, a foreach item
    no longer listed): stale entries mislead readers of the lock, and DVC re-reads and
    rewrites the whole lock after every stage (~1 s per 100 kB on 2 cores)."""
    dvc = str(Path(sys.executable).parent / "dvc")  # the environment's, as the tests run it
    listed = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=REPO,
                            capture_output=True, text=True, check=True,
                            timeout=120).stdout.split()  # fmt: skip
    locked = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert sorted(set(locked) - set(listed)) == []


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.name)
def test_every_stage_has_help(script):
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0 and "usage:" in proc.stdout and "--params" in proc.stdout


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    # A failing command shows the end of its output, where DVC names the stage and the error.
    assert proc.returncode == 0, f"{' '.join(cmd)}: {(proc.stdout + proc.stderr)[-3000:]}"
    return proc.stdout


def _downstream_of(stages: set[str], lock: dict) -> set[str]:
    """`stages` and every stage that depends on their outputs, transitively."""

    def overlaps(a: str, b: str) -> bool:
        return a == b or a.startswith(f"{b}/") or b.startswith(f"{a}/")

    found = set(stages)
    while True:
        outs = [o["path"] for n in found for o in lock[n].get("outs", [])]
        more = {
            name
            for name, stage in lock.items()
            if any(overlaps(d["path"], o) for d in stage.get("deps", []) for o in outs)
        }
        if more <= found:
            return found
        found |= more


@pytest.fixture
def ssh_server(tmp_path_factory):
    """A real sshd on loopback that takes a fresh key (skipped where there is no sshd: CI's
    .ci/run installs Debian's openssh-server)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).is_file() or not shutil.which("ssh-keygen"):
        pytest.skip("no sshd or ssh-keygen: install openssh-server (.ci/run does)")
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)],
                       check=True)  # fmt: skip
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(home / "sshd_config")],
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 10
    while time.time() < deadline and server.poll() is None:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    if server.poll() is not None:
        pytest.skip(f"sshd did not start: {server.stderr.read().strip()[-300:]}")
    yield {"url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}{home / 'remote'}",
           "keyfile": str(home / "client_key")}  # fmt: skip
    server.terminate()
    server.wait(timeout=10)


def _same_outputs(a: Path, b: Path, lock: dict) -> None:
    """Every output of dvc.lock is byte-identical in the two workspaces."""
    for stage in lock.values():
        for out in stage.get("outs", []):
            left, right = a / out["path"], b / out["path"]
            if left.is_dir():
                files = sorted(f.relative_to(left) for f in left.rglob("*") if f.is_file())
                assert files == sorted(f.relative_to(right) for f in right.rglob("*")
                                       if f.is_file()), out["path"]  # fmt: skip
                pairs = [(left / f, right / f) for f in files]
            else:
                pairs = [(left, right)]
            for x, y in pairs:
                assert filecmp.cmp(x, y, shallow=False), f"{x} differs after the round trip"


def _remote_round_trip(repo: Path, url: str, keyfile: str | None, clone: Path, env) -> None:
    """`dvc push` (with the run-cache) to `url`, a fresh git clone, `dvc pull`: every output
    byte-identical (training checkpoints included), a clean status and nothing to re-run."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["dvc", "remote", "add", "-f", "-d", "shared", url], repo, env)
    if keyfile:  # machine-specific: config.local, not committed
        _run(["dvc", "remote", "modify", "--local", "shared", "keyfile", keyfile], repo, env)
    _run([*git, "commit", "-qam", f"results and remote {url}"], repo, env)
    _run(["dvc", "push", "--run-cache"], repo, env)
    _run(["git", "clone", "-q", str(repo), str(clone)], repo, env)
    if keyfile:
        _run(["dvc", "remote", "modify", "--local", "shared", "keyfile", keyfile], clone, env)
    _run(["dvc", "pull", "--run-cache"], clone, env)
    assert json.loads(_run(["dvc", "status", "--json"], clone, env)) == {}
    _same_outputs(repo, clone, yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    assert "Running stage" not in _run(["dvc", "repro"], clone, env)


TIMING_KEYS = {"jets_per_s", "seconds"}


def _metrics_without_timing(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING_KEYS}


def _smoke_repo(tmp_path: Path) -> tuple[Path, dict]:
    """A git copy of the repository on the smoke profile, with the environment that runs the
    copy's library (not the editable install's)."""
    repo = copy_repo(tmp_path / "repo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(repo / "src")}  # fmt: skip
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["git", "init", "-q"], repo, env)
    (repo / "params.yaml").write_text((repo / "profiles" / "smoke.yaml").read_text())
    (repo / "dvc.lock").unlink(missing_ok=True)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "snapshot"], repo, env)
    return repo, env


@pytest.mark.slow
def test_smoke_dag(tmp_path):
    """The smoke profile's whole DAG, then what users do with it, in order: a clean and
    complete result, a round trip through a local remote and an experiment. One test, since
    each step works on the results of the last."""
    repo, env = _smoke_repo(tmp_path)
    _run(["dvc", "repro"], repo, env)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    _runs_clean_and_is_complete(repo, env, lock)
    _remote_round_trip(repo, str(tmp_path / "remote"), None, tmp_path / "clone", env)
    _mask_rate_experiment_reruns_exactly_its_stages(repo, env, lock)


@pytest.mark.slow
def test_forced_reruns_and_a_killed_repro(tmp_path):
    """On the smoke profile's pre-training and one fine-tuning run (and the stages they need;
    apart from the whole DAG, so that the two slow tests run side by side): forced re-runs
    give the same metrics, and a killed `dvc repro` resumes."""
    repo, env = _smoke_repo(tmp_path)
    stages = _run(["dvc", "stage", "list", "--name-only"], repo, env).split()
    finetune = "finetune_btag@random"
    assert finetune in stages
    _run(["dvc", "repro", "pretrain@regression", finetune], repo, env)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    _forced_rerun_gives_the_same_metrics(repo, env, lock)
    _killed_pretraining_resumes_under_dvc_repro(repo, env)


def _runs_clean_and_is_complete(repo: Path, env, lock: dict) -> None:
    assert "up to date" in _run(["dvc", "status"], repo, env)
    second = _run(["dvc", "repro"], repo, env)
    assert "Running stage" not in second

    # Stages write nothing undeclared: untracked files are only the git-ignored declared
    # outputs, and a tracked file may change only if it is dvc.lock or a declared output.
    outs = {o["path"] for s in lock.values() for o in s.get("outs", [])}
    status = _run(["git", "status", "--porcelain", "--untracked-files=all"], repo, env)
    for line in status.splitlines():
        code, path = line[:2], line[3:]
        declared = path in outs | {"dvc.lock"} or any(path.startswith(f"{o}/") for o in outs)
        # DVC keeps a .gitignore beside its outputs; another profile's runs rewrite it
        folder = path.removesuffix(".gitignore")
        declared |= path.endswith("/.gitignore") and any(o.startswith(folder) for o in outs)
        assert code != "??" and declared, status

    # Every dependency is tracked by git or produced by a stage.
    tracked = set(_run(["git", "ls-files"], repo, env).splitlines())
    for name, stage in lock.items():
        for dep in stage.get("deps", []):
            path = dep["path"]
            in_git = path in tracked or any(t.startswith(f"{path}/") for t in tracked)
            assert in_git or path in outs, f"{name}: {path} is neither in git nor an out"

    # The metrics are visible to DVC.
    metrics = _run(["dvc", "metrics", "show", "--json"], repo, env)
    assert "convert_jetclass.json" in metrics and "n_jets" in metrics
    assert "sanity.json" in metrics and "d0_significance_tail" in metrics
    assert "generation.json" in metrics and "jets_per_s_per_core" in metrics
    assert (repo / "results/figures/data_sanity.png").stat().st_size > 10_000
    assert "linear_probe_accuracy" in metrics and "val_codebook_usage" in metrics
    plots = _run(["dvc", "plots", "show", "--json"], repo, env)
    assert "train/total" in plots and "pretraining_validation_loss" in plots  # stage, top level
    assert "downstream_gain_over_random" in plots  # the headline as bars
    assert "val/codebook_usage" in metrics  # the VQ-VAE tokenizer
    assert (repo / "results/figures/training_curves.png").stat().st_size > 10_000
    assert "gain_over_random" in metrics  # the downstream headline numbers
    assert "w1_jet_mass_gev_real_vs_real" in metrics and "ssfm_generation" in metrics
    for figure in ("reconstruction", "ssfm_generation", "downstream_jetclass_finetuned",
                   "downstream_btag_finetuned", "inputs", "sweeps"):  # fmt: skip
        assert (repo / f"results/figures/{figure}.png").stat().st_size > 10_000
    assert "table1.json" in metrics and "row7" in metrics  # Table 1's accuracies
    table1 = (repo / "results/ablation/table1.md").read_text()
    assert "MPMv1 using (pT, eta, phi)" in table1 and ("(+" in table1 or "(-" in table1)
    report = (repo / "results/REPORT.md").read_text()
    assert "## Table 1" in report and "![sweeps](figures/sweeps.png)" in report


def _mask_rate_experiment_reruns_exactly_its_stages(repo: Path, env, lock: dict) -> None:
    """`dvc exp run -S mask_rate=...` re-runs exactly the stages that use the mask rate, and
    those that read their outputs, directly or not (curves, reconstructions, fine-tuning of
    the pre-trained backbones but not of the random one, the aggregation)."""
    experiment = _run(["dvc", "exp", "run", "-S", "mask_rate=0.3"], repo, env)
    ran = set(re.findall(r"Running stage '([^']+)'", experiment))
    uses_mask_rate = {
        name
        for name, stage in lock.items()
        if "mask_rate" in stage.get("params", {}).get("params.yaml", {})
    }
    assert uses_mask_rate == {n for n in lock if n.startswith("pretrain")}
    closure = _downstream_of(uses_mask_rate, lock)
    assert ran <= closure, ran - closure
    # DVC skips a stage whose inputs came out byte-identical: the sweep table holds no final
    # backbone, so ablation_tables rewrites it unchanged and Fig. 5 is not redrawn.
    assert closure - ran == {"figures_sweeps"}, closure - ran
    assert "reconstruct" in ran and "aggregate" in ran and "ablation_final@kmeans" in ran
    assert "figures_downstream@finetuned" in ran  # the figures follow the new runs
    html = (repo / "results/notebooks/downstream_finetuned.html").read_text()
    assert "Downstream figures" in html and "kmeans" in html  # the table under the figures
    assert not {n for n in ran if n.startswith("finetune") and n.endswith("@random")}


def _forced_rerun_gives_the_same_metrics(repo: Path, env, lock: dict) -> None:
    """Pre-training and one fine-tuning stage, forced to re-run: the same metrics to the last
    digit (timings aside) and the same backbone file."""
    finetune = next(n for n in lock if n.startswith("finetune_btag@"))
    files = ["results/pretrain/regression.json", "models/backbones/regression.pt",
             next(o["path"] for o in lock[finetune]["outs"])]  # fmt: skip
    before = [(repo / f).read_bytes() for f in files[1:2]]
    metrics = _metrics_without_timing(repo / files[0])
    runs = sorted((repo / files[2]).glob("*/metrics.json"))
    assert runs  # the stage's runs: one per mode, size and seed
    run_metrics = [_metrics_without_timing(path) for path in runs]
    for stage in ("pretrain@regression", finetune):
        _run(["dvc", "repro", "--force", "--single-item", stage], repo, env)
    assert _metrics_without_timing(repo / files[0]) == metrics
    assert [(repo / f).read_bytes() for f in files[1:2]] == before
    assert [_metrics_without_timing(path) for path in runs] == run_metrics


def _killed_pretraining_resumes_under_dvc_repro(repo: Path, env) -> None:
    """SIGKILL to `dvc repro` and its stage mid-run; the next `dvc repro` resumes from the
    persist checkpoint and completes."""
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["pretrain"] |= {"steps": 200, "val_every_steps": 10}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    last = repo / "checkpoints/pretrain/regression/last.ckpt"
    started = time.time_ns()  # an earlier run's last.ckpt is there: wait for this run's
    run = subprocess.Popen(["dvc", "repro", "--single-item", "pretrain@regression"], cwd=repo,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while run.poll() is None and time.time() < deadline and not (
        last.is_file() and last.stat().st_mtime_ns > started
    ):
        time.sleep(0.05)
    time.sleep(1.0)  # a few more steps, and the checkpoint file complete
    assert run.poll() is None, "the stage ended before it could be killed"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert last.is_file() and not (repo / "models/backbones/regression.pt").exists()
    done = subprocess.run(["dvc", "repro", "--single-item", "pretrain@regression"], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resuming from" in done.stdout + done.stderr
    assert json.loads((repo / "results/pretrain/regression.json").read_text())["steps"] == 200
    assert "up to date" in _run(["dvc", "status", "pretrain@regression"], repo, env)
    # back to the profile's settings: a finished run is not resumed but trained afresh
    (repo / "params.yaml").write_text(original)
    again = _run(["dvc", "repro", "--single-item", "pretrain@regression"], repo, env)
    steps = yaml.safe_load(original)["pretrain"]["steps"]
    assert "Running stage" in again
    assert json.loads((repo / "results/pretrain/regression.json").read_text())["steps"] == steps
    assert "up to date" in _run(["dvc", "status", "pretrain@regression"], repo, env)


@pytest.mark.slow
def test_results_round_trip_through_an_ssh_remote(tmp_path, ssh_server):
    """The round trip of the smoke DAG test through an SSH remote, on a two-stage project
    (a real sshd on loopback; skipped where there is none)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    (repo / "params.yaml").write_text("seed: 7\n")
    write = ("import json, pathlib, random, yaml; s = yaml.safe_load(open('params.yaml'))['seed'];"
             " random.seed(s); p = pathlib.Path('out'); p.mkdir(exist_ok=True);"
             " (p / 'sample.txt').write_text(str(random.random()));"
             " json.dump({'seed': s}, open('metrics.json', 'w'))")  # fmt: skip
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "sample": {"cmd": f'python -c "{write}"', "params": ["seed"],
                   "outs": ["out"], "metrics": [{"metrics.json": {"cache": False}}]},
        "copy": {"cmd": "cp out/sample.txt copy.txt", "deps": ["out"], "outs": ["copy.txt"]},
    }}))  # fmt: skip
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro"]):
        _run(cmd, repo, env)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "project"], repo, env)
    _remote_round_trip(repo, ssh_server["url"], ssh_server["keyfile"], tmp_path / "clone", env)

