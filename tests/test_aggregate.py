"""Aggregation of downstream runs into tidy tables and headline numbers."""

import json
from pathlib import Path

import pandas as pd
import pytest

from mpm.downstream.aggregate import grid_runs, headline, headline_table, over_seeds, read_runs
from mpm.errors import InputError


def _run(tmp_path, name, **fields):
    base = {"task": "jetclass", "backbone": "random", "mode": "finetuned", "n_train": 100,
            "seed": 0, "accuracy": 0.5, "best_val_loss": 1.0, "steps": 10}  # fmt: skip
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**base, **fields}))
    return path


def test_means_over_seeds_and_gains_over_random_at_the_smallest_size(tmp_path):
    paths = [
        _run(tmp_path, "a", seed=0, accuracy=0.50),
        _run(tmp_path, "b", seed=1, accuracy=0.54),
        _run(tmp_path, "c", backbone="cfm", accuracy=0.60),
        _run(tmp_path, "d", backbone="cfm", n_train=1000, accuracy=0.9),
        _run(
            tmp_path,
            "e",
            task="vertex",
            n_train=50,
            ari=0.3,
            ari_by_n_secondary_vertices={"0": 0.9, "2": 0.1},
        ),  # fmt: skip
        _run(tmp_path, "f", task="cwola", n_train=5000, n_signal=200, sic_at_fpr_1pct=2.0,
             sic_at_fpr_1pct_err=0.4, n_signal_train=160),
    ]
    runs, binned = read_runs(paths)
    summary = over_seeds(runs)
    random = summary[(summary.backbone == "random") & (summary.metric == "accuracy")
                     & (summary.task == "jetclass")]  # fmt: skip
    assert random["mean"].item() == pytest.approx(0.52) and random["seeds"].item() == 2
    assert random["std"].item() == pytest.approx(0.0283, abs=1e-4)
    top = headline(summary)
    assert top["jetclass"]["size"] == 100
    assert top["jetclass"]["finetuned"]["gain_over_random"] == {"cfm": pytest.approx(0.08)}
    assert top["cwola"]["size"] == 200  # CWoLa's size is its number of signal jets
    assert top["cwola"]["finetuned"]["error"] == {"random": 0.4}  # the SIC's bootstrap error
    assert "error" not in top["jetclass"]["finetuned"]
    trained = summary[(summary.task == "cwola") & (summary.metric == "n_signal_train")]
    assert trained["mean"].item() == 160  # the signal jets that trained, beside the nominal
    assert top["vertex"]["finetuned"]["mean"] == {"random": 0.3}
    # One line per pre-trained backbone with a gain (vertex and CWoLa have random only).
    table = headline_table(top)
    assert list(table["entry"]) == ["jetclass finetuned cfm"]
    assert table["gain_over_random"].item() == pytest.approx(0.08)
    assert table["mean"].item() == pytest.approx(0.60)
    assert sorted(binned["bin"]) == [0, 2] and set(binned["metric"]) == {
        "ari_by_n_secondary_vertices"
    }


def test_a_gain_is_resolved_when_it_exceeds_two_standard_errors_over_seeds(tmp_path):
    accuracies = {"random": [0.40, 0.42, 0.44], "cfm": [0.50, 0.52, 0.54],
                  "ssfm": [0.40, 0.46, 0.52], "kmeans": [0.60]}  # fmt: skip
    paths = [_run(tmp_path, f"{b}{s}", backbone=b, seed=s, accuracy=a)
             for b, values in accuracies.items() for s, a in enumerate(values)]  # fmt: skip
    entry = headline(over_seeds(read_runs(paths)[0]))["jetclass"]["finetuned"]
    # cfm: +0.10 against a standard error of sqrt(0.02^2/3 + 0.02^2/3) = 0.0163
    assert entry["gain_stderr"]["cfm"] == pytest.approx(0.0163, abs=1e-4)
    # ssfm: +0.04 against sqrt(0.06^2/3 + 0.02^2/3) = 0.0365, within two standard errors
    assert entry["gain_stderr"]["ssfm"] == pytest.approx(0.0365, abs=1e-4)
    assert entry["resolved"] == {"cfm": True, "ssfm": False, "kmeans": False}
    assert "kmeans" not in entry["gain_stderr"]  # one seed: no error, never resolved
    table = headline_table({"jetclass": {"metric": "accuracy", "size": 100, "finetuned": entry}})
    assert dict(zip(table["backbone"], table["resolved"])) == entry["resolved"]


def test_unreadable_run_is_named(tmp_path):
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InputError, match="bad.json: not a fine-tuning run"):
        read_runs([tmp_path / "bad.json"])
    with pytest.raises(InputError, match="no fine-tuning runs"):
        read_runs([])


def test_grid_runs_name_every_run_as_the_finetune_stages_write_them():
    grid = {"backbones": ["random", "ssfm"], "modes": ["frozen"], "seeds": [0, 1],
            "sizes": {"jetclass": [100], "btag": [], "vertex": [5], "track": []},
            "cwola_signal": [50],
            "finetuned_sizes": {"jetclass": None, "btag": [], "vertex": [], "track": [],
                                "cwola": []}}  # fmt: skip
    paths = grid_runs(grid, Path("r"))
    assert len(paths) == 2 * 1 * 2 * 3
    grid["modes"] = ["finetuned", "frozen"]  # fine-tuned: jetclass only
    assert len(grid_runs(grid, Path("r"))) == 2 * 2 * 3 + 2 * 2 * 1
    assert Path("r/jetclass/ssfm/frozen-100-s1/metrics.json") in paths
    assert Path("r/cwola/random/frozen-50-s0/metrics.json") in paths
    assert over_seeds(pd.DataFrame()).empty  # no binned metrics when no vertex or track runs
