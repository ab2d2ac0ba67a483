"""Tidy tables of every downstream run: one row per run and metric, the mean and spread over
seeds, the per-bin metrics (ARI by secondary vertices, balanced accuracy by tracks) and the
headline numbers: each backbone at each task's smallest training size, next to random."""

import json
from pathlib import Path

import pandas as pd

from mpm.downstream.layout import grid_sizes, run_name
from mpm.errors import InputError

HEADLINE = {
    "jetclass": "accuracy",
    "cwola": "sic_at_fpr_1pct",
    "btag": "accuracy",
    "vertex": "ari",
    "track": "balanced_accuracy",
}
# Metrics with an error of their own (the test set's bootstrap), by the metric they qualify
ERRORS = {"sic_at_fpr_1pct": "sic_at_fpr_1pct_err"}
RUN_KEYS = ("task", "backbone", "mode", "n_train", "seed")
GROUP = ["task", "backbone", "mode", "size", "metric"]


def grid_runs(grid: dict, root: Path) -> list[Path]:
    """The metrics.json of every run of params `finetune.grid`, where the finetune stages
    write them (`<root>/<task>/<backbone>/<mode>-<size>-s<seed>`)."""
    return [
        root / task / backbone / run_name(mode, size, seed) / "metrics.json"
        for task in HEADLINE
        for backbone in grid["backbones"]
        for mode in grid["modes"]
        for size in grid_sizes(grid, task, mode)
        for seed in grid["seeds"]
    ]


def read_runs(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scalar metrics [task, backbone, mode, size, seed, metric, value] and binned ones
    [..., metric, bin, value] of the runs' metrics.json files. `size` is the number of training
    jets, or the number of injected signal jets for CWoLa."""
    scalars, binned = [], []
    for path in paths:
        try:
            run = json.loads(Path(path).read_text())
            keys = {k: run[k] for k in RUN_KEYS}
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: not a fine-tuning run's metrics ({err})") from None
        keys["size"] = run.get("n_signal", run["n_train"])
        for metric in (HEADLINE[run["task"]], *ERRORS.values(), "n_signal_train", "accuracy",
                       "auc", "best_val_loss", "steps"):  # fmt: skip
            if metric in run:
                scalars.append({**keys, "metric": metric, "value": float(run[metric])})
        for metric, bins in run.items():
            if isinstance(bins, dict):
                binned += [{**keys, "metric": metric, "bin": int(b), "value": v}
                           for b, v in bins.items()]  # fmt: skip
    if not scalars:
        raise InputError("no fine-tuning runs to aggregate")
    return pd.DataFrame(scalars).drop_duplicates(), pd.DataFrame(binned)


def over_seeds(runs: pd.DataFrame, by: list[str] = GROUP) -> pd.DataFrame:
    """Mean, standard deviation (0 for one seed) and number of seeds of each group."""
    if runs.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "seeds"])
    grouped = runs.groupby(by)["value"]
    table = grouped.agg(mean="mean", std="std", seeds="count").reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table


RESOLVED_AT_STDERR = 2  # a gain is resolved when it exceeds this many standard errors


def _gain_stderr(backbone: pd.Series, random: pd.Series) -> float | None:
    """Standard error over seeds of a backbone's mean minus random's (the two sets of seeds
    taken as independent); None unless each has at least two seeds."""
    if min(backbone["seeds"], random["seeds"]) < 2:
        return None
    return float((backbone["std"] ** 2 / backbone["seeds"]
                  + random["std"] ** 2 / random["seeds"]) ** 0.5)  # fmt: skip


def headline(summary: pd.DataFrame) -> dict:
    """{task: {mode: {backbone: mean headline metric at the task's smallest size}}}, with
    each backbone's gain over the random initialisation where random was run, the gain's
    standard error over seeds where both have two or more, whether the gain is resolved
    (above RESOLVED_AT_STDERR standard errors) and, for a metric with an error of its own
    (ERRORS), that error."""
    out: dict = {}
    for task, metric in HEADLINE.items():
        rows = summary[(summary["task"] == task) & (summary["metric"] == metric)]
        if rows.empty:
            continue
        smallest = rows[rows["size"] == rows["size"].min()]
        out[task] = {"metric": metric, "size": int(smallest["size"].iloc[0])}
        errors = summary[(summary["task"] == task) & (summary["metric"] == ERRORS.get(metric))]
        for mode, by_mode in smallest.groupby("mode"):
            means = dict(zip(by_mode["backbone"], by_mode["mean"].round(4)))
            entry = {"mean": means}
            error = errors[(errors["mode"] == mode) & (errors["size"] == out[task]["size"])]
            if not error.empty:  # the test set's error (bootstrap), mean over seeds
                entry["error"] = dict(zip(error["backbone"], error["mean"].round(4)))
            if "random" in means:
                base = means["random"]
                gains = {b: round(v - base, 4) for b, v in means.items() if b != "random"}
                entry["gain_over_random"] = gains
                rows = {row["backbone"]: row for _, row in by_mode.iterrows()}
                errors_of_gain = {b: _gain_stderr(rows[b], rows["random"]) for b in gains}
                entry["gain_stderr"] = {b: round(e, 4) for b, e in errors_of_gain.items()
                                        if e is not None}  # fmt: skip
                entry["resolved"] = {
                    b: e is not None and abs(gains[b]) > RESOLVED_AT_STDERR * e
                    for b, e in errors_of_gain.items()
                }
            out[task][mode] = entry
    return out


def headline_table(top: dict) -> pd.DataFrame:
    """The headline as one line per task, mode and pre-trained backbone, with a label for
    `dvc plots` (the gain over random as horizontal bars)."""
    lines = []
    for task, entry in top.items():
        for mode, by_mode in entry.items():
            if not isinstance(by_mode, dict) or "gain_over_random" not in by_mode:
                continue
            for backbone, gain in by_mode["gain_over_random"].items():
                lines.append({"entry": f"{task} {mode} {backbone}", "task": task,
                              "metric": entry["metric"], "size": entry["size"], "mode": mode,
                              "backbone": backbone, "mean": by_mode["mean"][backbone],
                              "gain_over_random": gain,
                              "gain_stderr": by_mode["gain_stderr"].get(backbone),
                              "resolved": by_mode["resolved"][backbone]})  # fmt: skip
    return pd.DataFrame(lines, columns=["entry", "task", "metric", "size", "mode", "backbone",
                                        "mean", "gain_over_random", "gain_stderr",
                                        "resolved"])  # fmt: skip
