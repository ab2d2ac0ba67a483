"""results/REPORT.md: every figure linked with its caption, the tables, and the paper beside us."""

import json
import re

from conftest import run_stage
from mpm.report import FIGURES


def _results(root):
    (root / "ablation").mkdir(parents=True)
    table1 = "| | kmeans (ours) |\n|---|---|\n| row | 51.0 |\n"
    (root / "ablation" / "table1.md").write_text(table1)
    (root / "ablation" / "table1.csv").write_text(
        "row,configuration,regression,regression delta,kmeans,kmeans delta,paper regression,"
        "paper regression delta,paper kmeans,paper kmeans delta\n"
        "1,MPMv1,30.0,,30.0,,48.9,,56.2,\n"
        "2,+ updated transformer layers,40.0,10.1,29.0,-1.0,55.5,6.6,62.2,6.0\n"
        "7,+ longer train,35.0,-5.0,33.0,4.0,83.3,27.8,84.0,21.8\n"
        "reference,Random init,32.0,,32.0,,,,,\n"
    )
    (root / "ablation" / "table1.json").write_text(json.dumps({"probe_test_jets": 4000}))
    (root / "ablation" / "sweeps.csv").write_text(
        "sweep,value,accuracy,error,steps,run\n"
        "decoder_depth,2,0.55,0.01,120,kmeans-row6\n"
        "mask_rate,0.3,0.55,0.01,120,kmeans-row6\n"
        "random_init,,0.4,0.01,0,random\n"
    )
    (root / "downstream").mkdir()
    mean = {"random": 0.40, "kmeans": 0.45}
    entry = {"mean": mean, "gain_over_random": {"kmeans": 0.05},
             "gain_stderr": {"kmeans": 0.01}, "resolved": {"kmeans": True}}  # fmt: skip
    sic = {"mean": {"random": 2.0, "kmeans": 3.5}, "gain_over_random": {"kmeans": 1.5},
           "gain_stderr": {}, "resolved": {"kmeans": False},
           "error": {"random": 0.4, "kmeans": 0.6}}
    headline = {"jetclass": {"metric": "accuracy", "size": 1000, "finetuned": entry,
                             "frozen": entry},
                "cwola": {"metric": "sic_at_fpr_1pct", "size": 500, "finetuned": sic}}  # fmt: skip
    (root / "downstream" / "headline.json").write_text(json.dumps(headline))
    w1 = {"kmeans": {"pt": 0.05, "deta": 0.07, "dphi": 0.07, "mean": 0.06}}
    (root / "reconstruction.json").write_text(
        json.dumps({"n_jets": 20, "mask_rate": 0.4, "w1": w1})
    )
    curve = {"row5_minus_row4": {"rows": [4, 5], "steps": [120, 240],
                                 "difference": [-0.004, 0.031], "difference_error": [0.01, 0.01],
                                 "crossing_step": 240}, "random_init_accuracy": 0.33}  # fmt: skip
    (root / "ablation" / "decoder_curve.json").write_text(json.dumps(curve))
    (root / "figures").mkdir()
    for stem, _, _ in FIGURES:
        (root / "figures" / f"{stem}.png").write_bytes(b"\x89PNG")


def test_report_links_every_figure_and_prints_ours_beside_the_paper(tmp_path, params):
    results = tmp_path / "results"
    _results(results)
    report = results / "REPORT.md"
    args = ("--results", str(results), "--figures", str(results / "figures"), "--out", str(report))
    proc = run_stage("report.py", params, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == len(FIGURES) - 3  # the smoke grid has no frozen runs ...
    assert "Not drawn: `finetune.grid.modes` has no frozen runs" in text  # ... and says so
    assert all((report.parent / link).is_file() for link in links)  # relative to the report
    for stem, _, caption in FIGURES:  # (and no BTag task in the fixture's headline)
        assert (caption in text) != (stem.endswith("_frozen") or stem.startswith("downstream_btag"))
    assert re.search(r"\|\s*profile\s*\|\s*smoke\s*\|", text) and "| row | 51.0 |" in text
    # ours with the gain's standard error over seeds and the verdict, then the paper's
    assert "K-Means 0.450 (+0.050 ± 0.010, resolved)" in text and "84.3%" in text
    assert "K-Means 3.500 ± 0.600 (+1.500, one seed: not resolved)" in text  # SIC errors
    assert "2.000 ± 0.400" in text
    assert "kmeans-row6" in text and "K-Means" in text.split("## Fig. 8")[1]
    # what the scale resolves, in words; the decoder curve's gains and where they cross
    assert "- jetclass finetuned at 1000: 1 of 1 pre-trained backbones above Random init by " \
           "more than 2 standard errors (K-Means)." in text
    assert "- cwola finetuned at 500: 0 of 1" in text
    # each Table 1 change with its binomial error against 2 errors and the paper's sign
    assert "- Row 2 (+ updated transformer layers): Regression +10.1 ± 1.1 (paper +6.6): the " \
           "paper's sign, reproduced; K-Means -1.0 ± 1.0 (paper +6.0): not resolved." in text
    assert "- Row 7 (+ longer train): Regression -5.0 ± 1.1 (paper +27.8): opposite to the " \
           "paper; K-Means +4.0 ± 1.0 (paper +21.8): the paper's sign, reproduced." in text
    assert "- Row 7 (the final backbones) against Random init: Regression +3.0 ± 1.1: " \
           "resolved; K-Means +1.0 ± 1.0: not resolved." in text
    assert "120: -0.4 ± 1.0; 240: +3.1 ± 1.0. It ends above zero; the sign last changes at " \
           "step 240." in text


def test_report_links_the_frozen_figures_when_the_grid_has_them(tmp_path, params):
    results = tmp_path / "results"
    _results(results)
    params["finetune"]["grid"]["modes"] = ["finetuned", "frozen"]
    report = results / "REPORT.md"
    args = ("--results", str(results), "--figures", str(results / "figures"), "--out", str(report))
    assert run_stage("report.py", params, tmp_path, *args).returncode == 0
    text = report.read_text()
    # the headline has no BTag task in either mode: its figures are empty and say so
    assert len(re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)) == len(FIGURES) - 2
    assert "**Fig. 7: downstream_btag_frozen.** Empty: the grid runs none of its tasks" in text


def test_report_names_a_missing_figure_and_writes_nothing(tmp_path, params):
    results = tmp_path / "results"
    _results(results)
    (results / "figures" / "sweeps.png").unlink()
    report = results / "REPORT.md"
    args = ("--results", str(results), "--figures", str(results / "figures"), "--out", str(report))
    proc = run_stage("report.py", params, tmp_path, *args)
    assert proc.returncode == 2 and "sweeps.png: not found" in proc.stderr
    assert proc.stderr.strip().startswith("error: report: ") and not report.exists()
