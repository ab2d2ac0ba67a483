"""Table 1 (model redesign ablation) and the Fig. 5 sweep table, from the probe accuracy of
each ablation run (`mpm.ablation`)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mpm.ablation import FINAL_ROW, SWEEP_BASE_ROW, TABLE1_BACKBONES, TABLE1_ROWS
from mpm.errors import InputError

# The paper's Table 1 (accuracy, %), printed beside ours.
PAPER_TABLE1 = {
    "regression": [48.9, 55.5, 62.2, 63.5, 79.2, 80.4, 83.3],
    "kmeans": [56.2, 62.2, 70.2, 74.0, 81.4, 83.0, 84.0],
}
REFERENCE = "Random init (no pre-training; reference)"


def _with_deltas(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per row and backbone, each followed by its change from the line above."""
    columns = {}
    for backbone in accuracy.columns:
        columns[backbone] = accuracy[backbone]
        columns[f"{backbone} delta"] = accuracy[backbone].diff()
    return pd.DataFrame(columns)


def table1(probe_accuracy: dict[tuple[int, str], float], random: float,
           rows: list[int]) -> pd.DataFrame:  # fmt: skip
    """Table 1 from the probe accuracy (fraction) of each (row, backbone), for the Table 1
    `rows` a profile trains (ascending; the final row last): one line per row with the accuracy
    in %, the change from the line above, and the paper's numbers with their change over the
    same lines; then the random backbone's probe accuracy `random` as a reference line (not in
    the paper)."""
    missing = [(row, b) for row in rows for b in TABLE1_BACKBONES
               if (row, b) not in probe_accuracy]  # fmt: skip
    if missing:
        raise InputError(f"Table 1 lacks the runs (row, backbone) {missing}")
    ours = pd.DataFrame(
        {b: [100 * probe_accuracy[(row, b)] for row in rows] for b in TABLE1_BACKBONES}
    )
    paper = pd.DataFrame({b: [PAPER_TABLE1[b][row - 1] for row in rows] for b in TABLE1_BACKBONES})
    table = pd.concat([_with_deltas(ours), _with_deltas(paper).add_prefix("paper ")], axis=1)
    table.insert(0, "configuration", [TABLE1_ROWS[row - 1][0] for row in rows])
    table.insert(0, "row", [str(row) for row in rows])
    reference = {"row": "reference", "configuration": REFERENCE}
    reference |= {b: 100 * random for b in TABLE1_BACKBONES}
    table = pd.concat([table, pd.DataFrame([reference])], ignore_index=True)
    return table.round(1)


def _cell(value: float, delta: float) -> str:
    if pd.isna(value):
        return "-"
    return f"{value:.1f}" if pd.isna(delta) else f"{value:.1f} ({delta:+.1f})"


def table1_text(table: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as printed: 'accuracy (delta)' cells, ours and the paper's side by side."""
    text = pd.DataFrame({"": table["configuration"]})
    for prefix, label in (("", "ours"), ("paper ", "paper")):
        for backbone in TABLE1_BACKBONES:
            name = f"{prefix}{backbone}"
            text[f"{backbone} ({label})"] = [
                _cell(v, d) for v, d in zip(table[name], table[f"{name} delta"])
            ]
    return text


def table1_markdown(table: pd.DataFrame) -> str:
    return table1_text(table).to_markdown(index=False) + "\n"


def table1_latex(table: pd.DataFrame) -> str:
    text = table1_text(table)
    text[""] = text[""].str.replace("pT", r"$p_\mathrm{T}$").str.replace("eta", r"$\eta$")
    text[""] = text[""].str.replace("phi", r"$\phi$").str.replace("%", r"\%")
    return text.style.hide(axis="index").to_latex(hrules=True, column_format="l" + "r" * 4)


def read_json(path: Path) -> dict:
    """A JSON result file, or a one-line InputError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg})") from None


def read_probe(probe_dir: Path) -> dict[str, float]:
    """A probe run's accuracy, its number of test jets and the accuracy's binomial error."""
    accuracy = read_json(Path(probe_dir) / "metrics.json")["accuracy"]
    try:
        n_test = len(pd.read_csv(Path(probe_dir) / "predictions.csv"))
    except FileNotFoundError:
        raise InputError(f"{probe_dir}/predictions.csv: not found") from None
    return {"accuracy": accuracy, "n_test": n_test,
            "error": float(np.sqrt(accuracy * (1 - accuracy) / max(n_test, 1)))}  # fmt: skip


def read_runs(runs_dir: Path, names: list[str]) -> pd.DataFrame:
    """One line per ablation run folder `runs_dir/<name>` (`stages/ablation.py --results`): its
    settings and its probe (accuracy, test jets, binomial error). Only the named runs: folders
    of runs since dropped from the params stay on disk and must not enter the tables."""
    lines = [{"run": name, **read_json(Path(runs_dir) / name / "run.json"),
              **read_probe(Path(runs_dir) / name / "probe")} for name in names]  # fmt: skip
    return pd.DataFrame(lines)


def _row_setting(row: int) -> dict[str, float]:
    """The decoder depth and mask rate Table 1 row `row` (1-6) trains with."""
    setting = dict(o.split("=") for o in TABLE1_ROWS[row - 1][1])
    return {"decoder_depth": int(setting["model.decoder.depth"]),
            "mask_rate": float(setting["mask_rate"])}  # fmt: skip


def table1_accuracy(runs: pd.DataFrame, final: dict[str, float]) -> dict[tuple[int, str], float]:
    """Probe accuracy per (row, backbone): rows 1-6 from the runs with the row's own decoder
    depth and mask rate (not the Fig. 5 variations), the last row from `final`."""
    accuracy = {}
    for (row, backbone), group in runs.groupby(["row", "backbone"]):
        setting = _row_setting(row)
        own = group[(group["decoder_depth"] == setting["decoder_depth"])
                    & np.isclose(group["mask_rate"], setting["mask_rate"])]  # fmt: skip
        if len(own) > 1:
            raise InputError(f"ablation runs {', '.join(own['run'])} are all Table 1 row {row}")
        if len(own):
            accuracy[(int(row), backbone)] = float(own["accuracy"].iloc[0])
    return accuracy | {(FINAL_ROW, backbone): acc for backbone, acc in final.items()}


def sweep_table(runs: pd.DataFrame, random: dict[str, float]) -> pd.DataFrame:
    """Fig. 5: the k-means runs of row 6 as two sweeps, one over the decoder depth at the row's
    mask rate and one over the mask rate at its decoder depth (the row itself is in both), and
    the Random init probe `random` (`read_probe`) as a last, `random_init` line."""
    base = _row_setting(SWEEP_BASE_ROW)
    kmeans = runs[(runs["backbone"] == "kmeans") & (runs["row"] == SWEEP_BASE_ROW)]
    parts = []
    for swept, held in (("decoder_depth", "mask_rate"), ("mask_rate", "decoder_depth")):
        part = kmeans[np.isclose(kmeans[held], base[held])]
        parts.append(pd.DataFrame({"sweep": swept, "value": part[swept].astype(float),
                                   "accuracy": part["accuracy"], "error": part["error"],
                                   "steps": part["steps"], "run": part["run"]}))  # fmt: skip
    table = pd.concat(parts).sort_values(["sweep", "value"]).reset_index(drop=True)
    if table["sweep"].nunique() < 2 or table.groupby("sweep").size().min() < 2:
        raise InputError("Fig. 5 needs at least two runs in each sweep (params "
                         "'ablation.decoder_depths', 'ablation.mask_rates')")
    reference = {"sweep": "random_init", "value": np.nan, "accuracy": random["accuracy"],
                 "error": random["error"], "steps": 0, "run": "random"}  # fmt: skip
    return pd.concat([table, pd.DataFrame([reference])], ignore_index=True)
