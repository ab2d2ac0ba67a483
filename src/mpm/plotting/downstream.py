"""Downstream figures of the paper from the aggregated tables (`results/downstream/`):
Fig. 2 (JetClass accuracy vs training jets, CWoLa SIC vs signal jets) and Fig. 3 (BTag
accuracy vs training jets, vertex ARI vs secondary vertices, track-ID balanced accuracy vs
tracks) for fine-tuned backbones; Figs. 6 and 7 are the same with frozen backbones. Lines are
the mean over seeds, bands (or error bars) one standard deviation over seeds; for the SIC,
combined in quadrature with its test-set (bootstrap) error."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter

from mpm.downstream.aggregate import ERRORS
from mpm.errors import InputError
from mpm.plotting.style import BACKBONE_COLOURS, BACKBONE_NAMES, label, use_style

MODE_TITLES = {"finetuned": "Fine-tuned backbone", "frozen": "Fixed backbone"}
DATASETS = {"jetclass": "JetClass", "cwola": "CWoLa", "btag": "BTag", "vertex": "BTag",
            "track": "BTag"}  # fmt: skip

PANELS = {  # task -> (metric, x column, x label, y label, log x)
    "jetclass": ("accuracy", "size", "Number of training jets", "Accuracy", True),
    "cwola": ("sic_at_fpr_1pct", "size", "Injected signal jets (train + validation)",
              "SIC at FPR = 1%", True),  # fmt: skip
    "btag": ("accuracy", "size", "Number of training jets", "Accuracy", True),
    "vertex": ("ari_by_n_secondary_vertices", "bin", "Number of secondary vertices",
               "Adjusted Rand index", False),  # fmt: skip
    "track": ("balanced_accuracy_by_n_tracks", "bin", "Number of tracks in the jet",
              "Balanced accuracy", False),  # fmt: skip
}
FIGURES = {"jetclass": ("jetclass", "cwola"), "btag": ("btag", "vertex", "track")}


def _rows(table: pd.DataFrame, task: str, mode: str) -> pd.DataFrame:
    metric = PANELS[task][0]
    rows = table[(table["task"] == task) & (table["mode"] == mode) & (table["metric"] == metric)]
    if PANELS[task][1] == "bin" and not rows.empty:  # binned: the grid's largest training set
        rows = rows[rows["size"] == rows["size"].max()]
    return rows


def _with_errors(rows: pd.DataFrame, table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`rows` with `std` the seed spread and the mean test-set error (bootstrap) of a metric
    that has one (ERRORS) added in quadrature; the others as they are."""
    if metric not in ERRORS:
        return rows
    keys = ["task", "backbone", "mode", "size"]
    errors = table[table["metric"] == ERRORS[metric]][[*keys, "mean"]]
    rows = rows.merge(errors.rename(columns={"mean": "error"}), on=keys, how="left")
    return rows.assign(std=np.hypot(rows["std"], rows["error"].fillna(0.0)))


def draw_panel(ax, table: pd.DataFrame, task: str, mode: str) -> None:
    """One panel: every backbone's mean (line, or points when there is one x value) and its
    spread over seeds (band, or error bars), with the test set's error where it has one."""
    metric, x, xlabel, ylabel, logx = PANELS[task]
    rows = _rows(table, task, mode)
    if rows.empty:  # the grid runs this task in another mode only (finetune.grid.finetuned_sizes)
        ax.text(0.5, 0.5, f"No {MODE_TITLES.get(mode, mode).lower()} runs\nof this task in "
                "finetune.grid", ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        label(ax, rlabel=DATASETS[task])
        return
    rows = _with_errors(rows, table, metric)
    known = [b for b in BACKBONE_NAMES if b in set(rows["backbone"])]
    order = known + sorted(set(rows["backbone"]) - set(known))
    single = rows[x].nunique() == 1
    for k, backbone in enumerate(order):
        line = rows[rows["backbone"] == backbone].sort_values(x)
        if single:  # side by side around the one x value, so error bars do not hide each other
            line = line.assign(**{x: line[x] * 10 ** (0.02 * (k - (len(order) - 1) / 2))})
        name = BACKBONE_NAMES.get(backbone, backbone)
        colour = BACKBONE_COLOURS.get(backbone)
        style = "--" if backbone == "random" else "-"
        if len(line) > 1:
            ax.plot(line[x], line["mean"], style, marker="o", color=colour, label=name, lw=2)
            ax.fill_between(line[x], line["mean"] - line["std"], line["mean"] + line["std"],
                            color=colour, alpha=0.2, lw=0)  # fmt: skip
        else:
            ax.errorbar(line[x], line["mean"], yerr=line["std"], fmt="o", color=colour,
                        label=name, capsize=4, ms=8)  # fmt: skip
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: no crowded labels
    if single:  # a decade around the one value: the side-by-side offsets stay visibly small
        value = rows[x].iloc[0]
        if logx:
            ax.set_xlim(value / 10**0.5, value * 10**0.5)
        else:
            ax.set_xlim(value - 1, value + 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    seeds = int(rows["seeds"].max())
    title = f"{MODE_TITLES.get(mode, mode)}, {seeds} seed{'s' * (seeds > 1)}"
    if metric in ERRORS:
        title += "\nbars: seed spread and test-set bootstrap"
    if x == "bin":
        title += f"\n{int(rows['size'].iloc[0])} training jets"
    ax.legend(fontsize=13, title=title, title_fontsize=13, loc="best")
    label(ax, rlabel=DATASETS[task])


def draw(family: str, summary: pd.DataFrame, binned: pd.DataFrame, mode: str) -> plt.Figure:
    """Figure family `jetclass` (Fig. 2 / 6) or `btag` (Fig. 3 / 7) of `mode`."""
    if family not in FIGURES:
        raise InputError(f"figure family '{family}' is not one of {list(FIGURES)}")
    tasks = FIGURES[family]
    tables = {task: binned if PANELS[task][1] == "bin" else summary for task in tasks}
    if summary.empty or mode not in set(summary["mode"]):
        raise InputError(f"no runs of mode '{mode}' in the aggregated results")
    use_style()
    fig, axes = plt.subplots(1, len(tasks), figsize=(8 * len(tasks), 7), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        draw_panel(ax, tables[task], task, mode)
    fig.tight_layout()
    return fig
