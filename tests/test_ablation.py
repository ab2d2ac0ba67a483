"""Table 1 and Fig. 5: the settings of each ablation run, the tables built from their probes,
and the ablation stages end to end on tiny data."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, run_stage
from mpm.ablation import FINAL_ROW, TABLE1_ROWS, run_names, run_params, table1_rows
from mpm.errors import InputError
from mpm.plotting.decoder_curve import crossing
from mpm.tables import (
    PAPER_TABLE1,
    REFERENCE,
    read_probe,
    read_runs,
    sweep_table,
    table1,
    table1_accuracy,
    table1_latex,
    table1_markdown,
)

SMOKE = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
# The Table 1 rows and sweeps of the run folders `_write_ablation` writes.
SWEPT = {**SMOKE, "ablation": {**SMOKE["ablation"], "table1_rows": [1, 2, 3, 4, 5, 6],
                               "decoder_depths": [3], "mask_rates": [0.7]}}  # fmt: skip
ALL_ROWS = list(range(1, FINAL_ROW + 1))


def test_run_params_apply_the_row_the_short_schedule_and_the_sweep():
    params = run_params(SMOKE, 6, mask_rate=0.7)
    assert params["mask_rate"] == 0.7 and params["model"]["decoder"]["depth"] == 2
    assert params["model"]["variant"] == "mae"
    assert params["model"]["encoder"]["registers"] == SMOKE["model"]["encoder"]["registers"] > 0
    for key, value in SMOKE["ablation"]["pretrain"].items():
        assert params["pretrain"][key] == value
    first = run_params(SMOKE, 1, decoder_depth=3)
    assert first["model"]["variant"] == "bert" and first["mask_rate"] == 0.3
    assert first["model"]["encoder"]["features"] == "kinematic"
    assert first["model"]["decoder"]["depth"] == 3
    assert SMOKE["model"]["variant"] == "mae" and SMOKE["mask_rate"] == 0.4  # not edited


def _accuracy(offset: float = 0.0) -> dict:
    return {(row, b): 0.40 + 0.02 * row + (0.01 if b == "kmeans" else 0.0) + offset
            for row in range(1, FINAL_ROW + 1) for b in ("regression", "kmeans")}  # fmt: skip


def test_table1_gives_percentages_deltas_and_the_papers_numbers():
    table = table1(_accuracy(), random=0.39, rows=ALL_ROWS)
    assert list(table["row"]) == [*map(str, range(1, FINAL_ROW + 1)), "reference"]
    assert list(table["configuration"]) == [name for name, _ in TABLE1_ROWS] + [REFERENCE]
    np.testing.assert_allclose(table["regression"], [42, 44, 46, 48, 50, 52, 54, 39])
    assert np.isnan(table["kmeans delta"].iloc[0]) and np.isnan(table["kmeans delta"].iloc[-1])
    np.testing.assert_allclose(table["kmeans delta"].iloc[1:-1], 2.0)
    assert list(table["paper kmeans"].iloc[:-1]) == PAPER_TABLE1["kmeans"]
    assert np.isnan(table["paper kmeans"].iloc[-1])  # the paper has no such line
    np.testing.assert_allclose(table["paper regression delta"].iloc[4], 79.2 - 63.5, atol=0.05)
    markdown = table1_markdown(table)
    assert "| MPMv1 using (pT, eta, phi)" in markdown and "44.0 (+2.0)" in markdown
    assert "79.2 (+15.7)" in markdown  # the paper's column
    reference = [cell.strip() for cell in markdown.splitlines()[-1].split("|")[2:-1]]
    assert reference == ["39.0", "39.0", "-", "-"]  # ours; the paper has no such line
    latex = table1_latex(table)
    assert r"\begin{tabular}" in latex and r"$\eta$" in latex and "40\\% mask rate" in latex


def test_table1_names_the_missing_runs():
    accuracy = _accuracy()
    del accuracy[(3, "kmeans")]
    with pytest.raises(InputError, match=r"\(3, 'kmeans'\)"):
        table1(accuracy, random=0.4, rows=ALL_ROWS)


def test_table1_of_a_profiles_rows_compares_like_with_like():
    """The smoke profile trains rows 1 and 6: each change is over the line above, for ours and
    for the paper's numbers alike."""
    accuracy = {k: v for k, v in _accuracy().items() if k[0] in (1, 6, 7)}
    table = table1(accuracy, random=0.39, rows=[1, 6, FINAL_ROW])
    assert list(table["row"]) == ["1", "6", "7", "reference"]
    assert list(table["configuration"])[:3] == [TABLE1_ROWS[r - 1][0] for r in (1, 6, 7)]
    np.testing.assert_allclose(table["regression delta"].iloc[1:3], [10.0, 2.0])
    np.testing.assert_allclose(table["paper kmeans delta"].iloc[1], 83.0 - 56.2, atol=0.05)
    assert list(table["paper regression"].iloc[:3]) == [48.9, 80.4, 83.3]


def test_the_profiles_table1_rows_name_the_ablation_runs():
    assert table1_rows(SMOKE) == [1, 6]
    names = run_names(SMOKE)
    assert [n for n in names if "-row" in n] == [
        "regression-row1", "regression-row6", "kmeans-row1", "kmeans-row6"]  # fmt: skip
    default = yaml.safe_load((REPO / "params.yaml").read_text())
    assert table1_rows(default) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("rows", [[], [1, 1, 6], [6, 1], [0, 6], [1, 6, 7], "1, 6", [True, 6],
                                  [1.0, 6], [1, 2]])  # fmt: skip
def test_bad_table1_rows_are_one_line_errors(rows):
    params = {**SMOKE, "ablation": {**SMOKE["ablation"], "table1_rows": rows}}
    with pytest.raises(InputError, match=r"^params: 'ablation.table1_rows' must"):
        table1_rows(params)


def _write_probe(probe, accuracy, n_test=50):
    probe.mkdir(parents=True)
    (probe / "metrics.json").write_text(json.dumps({"accuracy": accuracy}))
    pd.DataFrame({"label": np.zeros(n_test, int)}).to_csv(probe / "predictions.csv", index=False)


def _write_run(root, name, backbone, row, depth, mask, accuracy):
    run = root / name
    _write_probe(run / "probe", accuracy)
    settings = {"backbone": backbone, "row": row, "steps": 10, "decoder_depth": depth,
                "mask_rate": mask}  # fmt: skip
    (run / "run.json").write_text(json.dumps(settings))


def _write_ablation(root):
    """Rows 1-6 of both backbones, two sweep runs, and the final probes."""
    runs, final = root / "runs", root / "final"
    for row in range(1, FINAL_ROW):
        for b in ("regression", "kmeans"):
            _write_run(runs, f"{b}-row{row}", b, row, 2, 0.3, _accuracy()[(row, b)])
    _write_run(runs, "kmeans-depth3", "kmeans", 6, 3, 0.3, 0.60)
    _write_run(runs, "kmeans-mask0.7", "kmeans", 6, 2, 0.7, 0.50)
    _write_run(runs, "kmeans-mask0.5", "kmeans", 6, 2, 0.5, 0.99)  # dropped from the params
    for b in ("regression", "kmeans", "random"):
        _write_probe(final / b, 0.39 if b == "random" else _accuracy()[(7, b)], n_test=100)
    return runs, final


def test_table_rows_and_sweeps_come_from_the_runs_settings(tmp_path):
    runs_dir, _ = _write_ablation(tmp_path)
    runs = read_runs(runs_dir, run_names(SWEPT))
    assert "kmeans-mask0.5" not in set(runs["run"])
    accuracy = table1_accuracy(runs, {"regression": 0.9, "kmeans": 0.95})
    assert accuracy[(6, "kmeans")] == pytest.approx(_accuracy()[(6, "kmeans")])  # not a sweep run
    assert accuracy[(FINAL_ROW, "kmeans")] == 0.95
    random = read_probe(tmp_path / "final" / "random")
    assert random == {"accuracy": 0.39, "n_test": 100, "error": pytest.approx(0.0488, abs=1e-4)}
    sweeps = sweep_table(runs, random)
    assert sweeps.iloc[-1]["sweep"] == "random_init" and sweeps.iloc[-1]["accuracy"] == 0.39
    first = sweeps.iloc[0]  # binomial error of 50 test jets
    p = first["accuracy"]
    np.testing.assert_allclose(first["error"], np.sqrt(p * (1 - p) / 50))
    depth = sweeps[sweeps["sweep"] == "decoder_depth"]
    mask = sweeps[sweeps["sweep"] == "mask_rate"]
    assert list(depth["value"]) == [2, 3] and list(depth["accuracy"])[1] == 0.60
    assert list(mask["value"]) == [0.3, 0.7] and list(mask["run"]) == [
        "kmeans-row6",
        "kmeans-mask0.7",
    ]
    with pytest.raises(InputError, match="ablation.mask_rates"):
        sweep_table(runs[runs["run"] != "kmeans-mask0.7"], random)


def test_ablation_tables_stage_writes_every_format_or_nothing(tmp_path, params):
    runs, final = _write_ablation(tmp_path / "ablation")
    params["ablation"] = SWEPT["ablation"]
    out, metrics = tmp_path / "tables", tmp_path / "table1.json"
    args = (
        "--runs",
        str(runs),
        "--final",
        str(final),
        "--out",
        str(out),
        "--metrics",
        str(metrics),
    )
    proc = run_stage("ablation_tables.py", params, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "sweeps.csv",
        "table1.csv",
        "table1.md",
        "table1.tex",
    ]
    table = pd.read_csv(out / "table1.csv")
    assert table["kmeans"].iloc[-2] == pytest.approx(100 * _accuracy()[(7, "kmeans")])
    assert json.loads(metrics.read_text())["regression"]["row1"] == pytest.approx(42.0)
    assert json.loads(metrics.read_text())["random_init"] == pytest.approx(39.0)
    assert "Random init" in (out / "table1.md").read_text().splitlines()[-1]
    # An unfinished run: one line naming its file, and no table.
    (runs / "kmeans-row4" / "probe" / "metrics.json").unlink()
    out2 = tmp_path / "tables2"
    args = ("--runs", str(runs), "--final", str(final), "--out", str(out2), "--metrics",
            str(tmp_path / "m2.json"))  # fmt: skip
    proc = run_stage("ablation_tables.py", params, tmp_path, *args)
    assert proc.returncode == 2 and not out2.exists() and not (tmp_path / "m2.json").exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ablation_tables: ")
    assert "kmeans-row4/probe/metrics.json: not found" in proc.stderr


def test_ablation_stage_pretrains_a_row_and_probes_it_frozen(jetclass, tmp_path):
    root, params = jetclass
    recipe = {**params["finetune"]["recipe"], "n_val_jets": 20, "n_test_jets": 40}
    params = {**params, "finetune": {**params["finetune"], "recipe": recipe}}
    paths = ("--data", str(root / "jetclass"), "--preprocessor", str(root / "pre.joblib"),
             "--out", str(tmp_path / "b.pt"), "--checkpoints", str(tmp_path / "ckpt"),
             "--results", str(tmp_path / "run"))  # fmt: skip
    probe_settings = {"jets": 40, "seed": 0, "max_steps": 10, "n_test_jets": 30}
    params["ablation"] = {**params["ablation"], "probe": probe_settings}
    proc = run_stage("ablation.py", params, tmp_path, "--backbone", "regression", "--row", "1",
                     "--decoder-depth", "1", *paths)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    settings = json.loads((run / "run.json").read_text())
    assert settings == {"backbone": "regression", "row": 1, "decoder_depth": 1, "mask_rate": 0.3,
                        "steps": params["ablation"]["pretrain"]["steps"]}  # fmt: skip
    assert json.loads((run / "pretrain.json").read_text())["steps"] == settings["steps"]
    probe = json.loads((run / "probe" / "metrics.json").read_text())
    assert probe["mode"] == "frozen" and probe["n_train"] == 40 and 0 <= probe["accuracy"] <= 1
    assert probe["steps"] <= 10 and len(pd.read_csv(run / "probe" / "predictions.csv")) == 30
    assert (run / "curves" / "metrics.csv").exists() and (tmp_path / "b.pt").exists()
    # The final row's probe of a given backbone is the same computation (stages/probe.py).
    again = tmp_path / "again"
    proc = run_stage("probe.py", params, tmp_path, "--backbone", str(tmp_path / "b.pt"), "--data",
                     str(root / "jetclass"), "--preprocessor", str(root / "pre.joblib"),
                     "--out", str(again))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((again / "metrics.json").read_text())["accuracy"] == probe["accuracy"]


def test_a_decoder_curve_run_probes_its_snapshots_and_the_figure_finds_the_crossing(jetclass,
                                                                                     tmp_path):
    root, params = jetclass
    recipe = {**params["finetune"]["recipe"], "n_val_jets": 20, "n_test_jets": 40}
    params = {**params, "finetune": {**params["finetune"], "recipe": recipe}}
    params["ablation"] = {**params["ablation"], "probe": {"jets": 40, "seed": 0, "max_steps": 10,
                                                          "n_test_jets": 30},
                          "curve": {"rows": [4, 5], "steps": 6, "probe_every": 3}}  # fmt: skip
    for row in (4, 5):
        proc = run_stage("ablation.py", params, tmp_path, "--backbone", "regression", "--row",
                         str(row), "--curve", "--data", str(root / "jetclass"), "--preprocessor",
                         str(root / "pre.joblib"), "--out", str(tmp_path / f"b{row}.pt"),
                         "--checkpoints", str(tmp_path / f"ckpt{row}"),
                         "--results", str(tmp_path / f"curve/row{row}"))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    curve = json.loads((tmp_path / "curve/row5/curve.json").read_text())
    assert curve["row"] == 5 and curve["steps"] == 6 and curve["probe_steps"] == [3, 6]
    assert (tmp_path / "ckpt5/snapshots/step3.pt").is_file()  # kept with the checkpoints
    probes = [json.loads((tmp_path / f"curve/row5/probe-step{s}/metrics.json").read_text())
              for s in (3, 6)]  # fmt: skip
    assert [p["accuracy"] for p in probes] == curve["accuracy"]
    proc = run_stage("probe.py", params, tmp_path, "--backbone", str(tmp_path / "b5.pt"), "--data",
                     str(root / "jetclass"), "--preprocessor", str(root / "pre.joblib"),
                     "--out", str(tmp_path / "random"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = tmp_path / "decoder_curve.json"
    proc = run_stage("plot_decoder_curve.py", params, tmp_path, "--curves", str(tmp_path / "curve"),
                     "--random", str(tmp_path / "random"), "--figure", str(tmp_path / "fig"),
                     "--metrics", str(metrics))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    gains = json.loads(metrics.read_text())["row5_minus_row4"]
    row4 = json.loads((tmp_path / "curve/row4/curve.json").read_text())["accuracy"]
    assert gains["steps"] == [3, 6] and gains["difference"] == pytest.approx(
        [b - a for a, b in zip(row4, curve["accuracy"])], abs=1e-4)
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_the_crossing_is_the_step_from_which_the_gain_keeps_its_final_sign():
    curves = pd.DataFrame({"row": [4] * 4 + [5] * 4, "step": [1, 2, 3, 4] * 2,
                           "accuracy": [0.5, 0.5, 0.5, 0.5, 0.4, 0.6, 0.45, 0.55],
                           "error": [0.01] * 8})  # fmt: skip
    result = crossing(curves, 4, 5)
    assert result["crossing_step"] == 4 and result["difference"] == [-0.1, 0.1, -0.05, 0.05]
    assert crossing(curves.assign(accuracy=[0.5] * 4 + [0.6] * 4), 4, 5)["crossing_step"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (("--backbone", "regression", "--row", "7"), "'--row' must be one of"),
        (("--backbone", "cfm", "--row", "1"), "'--backbone' must be one of"),
        (("--backbone", "regression", "--row", "6", "--mask-rate", "1.5"), "--mask-rate"),
        (("--backbone", "kmeans", "--row", "6", "--decoder-depth", "0"), "--decoder-depth"),
        (("--backbone", "kmeans", "--row", "6"), "'ablation.probe.max_steps' must be"),
        (("--backbone", "kmeans", "--row", "5"), "'ablation.probe.max_steps' is below"),
    ],
)
def test_ablation_stage_rejects_bad_settings_in_one_line(tmp_path, params, args, message):
    if "ablation.probe.max_steps" in message:  # 0, or fewer steps than one validation needs
        params["ablation"]["probe"]["max_steps"] = 0 if "must" in message else 1
    paths = ("--out", str(tmp_path / "b.pt"), "--checkpoints", str(tmp_path / "c"),
             "--results", str(tmp_path / "run"))  # fmt: skip
    proc = run_stage("ablation.py", params, tmp_path, *args, *paths)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ablation: ") and message in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "b.pt").exists()


KINEMATIC_TOKENIZER = ("--tokenizer", "absent.pt", "--kinematic-tokenizer", "k.pt")


@pytest.mark.parametrize("tokenizers", [("--tokenizer", "k.pt"), KINEMATIC_TOKENIZER])
def test_kinematic_rows_refuse_a_tokenizer_of_all_features(jetclass, tmp_path, tokenizers):
    """Row 1 sees the kinematics only: it takes --kinematic-tokenizer where one is given (the
    absent --tokenizer is not read), and refuses a tokenizer of all features."""
    root, params = jetclass
    from mpm.tokenizers.kmeans import save_centroids

    save_centroids(np.random.default_rng(0).normal(size=(8, 7)).astype(np.float32),
                   tmp_path / "k.pt")  # fmt: skip
    tokenizers = [a if a.startswith("--") else str(tmp_path / a) for a in tokenizers]
    proc = run_stage("ablation.py", params, tmp_path, "--backbone", "kmeans", "--row", "1",
                     *tokenizers, "--data", str(root / "jetclass"),
                     "--preprocessor", str(root / "pre.joblib"), "--out", str(tmp_path / "b.pt"),
                     "--checkpoints", str(tmp_path / "c"),
                     "--results", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 2 and "tokenizer of 7 features" in proc.stderr
    assert not (tmp_path / "run").exists()
