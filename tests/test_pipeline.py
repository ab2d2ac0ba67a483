"""The repository as a whole: profiles, stage CLIs, and the DVC DAG on the smoke profile."""

import os
import re
import subprocess
import sys
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


@pytest.mark.slow
def test_smoke_dag_runs_clean_and_is_complete(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run(["git", "init", "-q"], repo, env)
    (repo / "params.yaml").write_text((repo / "profiles" / "smoke.yaml").read_text())
    (repo / "dvc.lock").unlink(missing_ok=True)
    _run([*git, "add", "-A"], repo, env)
    _run([*git, "commit", "-qm", "snapshot"], repo, env)

    _run(["dvc", "repro"], repo, env)
    assert "up to date" in _run(["dvc", "status"], repo, env)
    second = _run(["dvc", "repro"], repo, env)
    assert "Running stage" not in second

    # Stages write nothing undeclared: untracked files are only the git-ignored declared
    # outputs, and a tracked file may change only if it is dvc.lock or a declared output.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
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

    # `dvc exp run -S mask_rate=...` re-runs exactly the stages that use the mask rate, and
    # those that read their outputs, directly or not (curves, reconstructions, fine-tuning of
    # the pre-trained backbones but not of the random one, the aggregation).
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
    assert not {n for n in ran if n.startswith("finetune") and "@random-" in n}
