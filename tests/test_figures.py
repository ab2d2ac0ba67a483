"""Downstream figures (Figs. 2, 3, 6, 7) from aggregated tables, the input figure (Fig. 4),
and the notebook stage that draws them: what each panel shows, one-line errors, nothing left
behind by a failing cell."""

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from conftest import run_stage
from mpm.downstream.aggregate import HEADLINE
from mpm.errors import InputError
from mpm.plotting.downstream import draw
from mpm.plotting.inputs import draw as draw_inputs
from mpm.plotting.inputs import tail_fractions
from mpm.plotting.style import EXPERIMENT, label
from mpm.plotting.sweeps import draw as draw_sweeps
from mpm.plotting.sweeps import read_sweeps

SCALARS = HEADLINE  # each task's headline metric, as the aggregate stage names it
BINNED = {"vertex": "ari_by_n_secondary_vertices", "track": "balanced_accuracy_by_n_tracks"}


def tables(sizes=(1000, 10000), modes=("finetuned",), backbones=("random", "kmeans")):
    """Aggregate-stage tables (summary.csv, binned.csv) with made-up values."""
    summary, binned = [], []
    for i, (task, backbone, mode, size) in enumerate(
        itertools.product(SCALARS, backbones, modes, sizes)
    ):
        keys = {"task": task, "backbone": backbone, "mode": mode, "size": size}
        summary.append({**keys, "metric": SCALARS[task], "mean": 0.5 + 0.01 * i, "std": 0.02,
                        "seeds": 2})  # fmt: skip
        if task in BINNED:
            binned += [{**keys, "metric": BINNED[task], "bin": b, "mean": 0.4 + 0.05 * b,
                        "std": 0.01, "seeds": 2} for b in range(1, 5)]  # fmt: skip
    return pd.DataFrame(summary), pd.DataFrame(binned)


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_figure_families_have_the_paper_panels_names_and_bands():
    summary, binned = tables()
    fig = draw("jetclass", summary, binned, "finetuned")
    jetclass, cwola = fig.axes
    assert jetclass.get_xscale() == "log" and cwola.get_xscale() == "log"
    assert _legend(jetclass) == ["K-Means", "Random init"]  # the paper's names and order
    assert "SIC" in cwola.get_ylabel() and "signal jets" in cwola.get_xlabel()
    bands = [c for c in jetclass.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # one seed-spread band per backbone
    kmeans = next(line for line in jetclass.get_lines() if line.get_label() == "K-Means")
    expected = summary.query("task == 'jetclass' and backbone == 'kmeans'")["mean"]
    assert list(kmeans.get_ydata()) == pytest.approx(list(expected))
    plt.close(fig)
    fig = draw("btag", summary, binned, "finetuned")
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "linear", "linear"]
    vertex = fig.axes[1]
    assert "secondary vertices" in vertex.get_xlabel()
    assert "10000 training jets" in vertex.get_legend().get_title().get_text()  # largest size
    assert list(vertex.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    plt.close(fig)


def test_the_sic_error_bars_add_the_test_sets_bootstrap_error_to_the_seed_spread():
    summary, binned = tables(sizes=(1000,), backbones=("kmeans",))
    sic = summary.query("task == 'cwola'")
    error = sic.assign(metric="sic_at_fpr_1pct_err", mean=0.05, std=0.0)
    fig = draw("jetclass", pd.concat([summary, error]), binned, "finetuned")
    cwola = fig.axes[1]
    (bar,) = [c for c in cwola.containers if isinstance(c, ErrorbarContainer)]
    low, high = bar.lines[2][0].get_segments()[0][:, 1]
    assert (high - low) / 2 == pytest.approx(np.hypot(0.02, 0.05))  # seed spread (+) bootstrap
    assert "bootstrap" in cwola.get_legend().get_title().get_text()
    assert "train + validation" in cwola.get_xlabel()  # the axis says which number it shows
    plt.close(fig)


def test_one_size_is_drawn_as_points_with_error_bars():
    summary, binned = tables(sizes=(1000,))
    fig = draw("jetclass", summary, binned, "finetuned")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2
    xs = [bar.lines[0].get_xdata()[0] for bar in bars]  # side by side, close to the one size
    assert xs[0] != xs[1] and all(abs(x / 1000 - 1) < 0.05 for x in xs)
    assert ax.get_xlim() == pytest.approx((1000 / 10**0.5, 1000 * 10**0.5))
    plt.close(fig)


def test_missing_mode_or_family_is_a_clear_error_and_a_task_missing_in_a_mode_says_so():
    summary, binned = tables()
    with pytest.raises(InputError, match="no runs of mode 'frozen' in the aggregated results"):
        draw("jetclass", summary, binned, "frozen")
    fig = draw("btag", summary[summary["task"] != "btag"], binned, "finetuned")
    assert "No fine-tuned backbone runs" in fig.axes[0].texts[0].get_text()
    assert fig.axes[0].get_legend() is None and fig.axes[1].get_legend() is not None
    plt.close(fig)
    jetclass_only = summary[summary["task"] == "jetclass"]  # a family without any run of the mode
    fig = draw("btag", jetclass_only, binned.iloc[:0], "finetuned")
    assert all("No fine-tuned backbone runs" in ax.texts[0].get_text() for ax in fig.axes)
    plt.close(fig)
    with pytest.raises(InputError, match="figure family 'table'"):
        draw("table", summary, binned, "finetuned")


def test_notebook_stage_writes_everything_or_nothing(tmp_path, params):
    summary, binned = tables(modes=("finetuned",))
    summary.to_csv(tmp_path / "summary.csv", index=False)
    binned.to_csv(tmp_path / "binned.csv", index=False)
    figures = tmp_path / "figures"

    def run(mode):
        out = tmp_path / f"downstream_{mode}"
        return out, run_stage(
            "notebook.py", params, tmp_path, "--notebook", "notebooks/downstream.ipynb",
            "--out", f"{out}.ipynb", "--html", f"{out}.html", "--figures", str(figures),
            "-p", f"mode={mode}", "-p", f"summary={tmp_path / 'summary.csv'}",
            "-p", f"binned={tmp_path / 'binned.csv'}",
        )  # fmt: skip

    out, proc = run("finetuned")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in figures.iterdir()) == [
        f"downstream_{family}_finetuned.{ext}" for family in ("btag", "jetclass")
        for ext in ("pdf", "png")
    ]  # fmt: skip
    assert "Downstream figures" in out.with_suffix(".html").read_text()
    assert '"parameters"' in out.with_suffix(".ipynb").read_text()

    out, proc = run("frozen")  # no frozen runs in the tables: the first figure cell fails
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1
    assert "mode 'frozen'" in errors[0]
    assert not out.with_suffix(".ipynb").exists() and not out.with_suffix(".html").exists()
    assert len(list(figures.iterdir())) == 4  # nothing added, no temporary folder left


def test_input_figure_and_tail_fractions():
    rng = np.random.default_rng(0)

    def constituents(n, scale):
        transformed = rng.standard_normal((n, 7)) * scale
        raw = np.abs(transformed) + 0.01  # positive, so every feature's binning works
        return {"raw": raw, "transformed": transformed, "charged": np.arange(n) % 2 == 0}

    datasets = {"JetClass": constituents(4000, 1.0), "BTag": constituents(4000, 2.0)}
    tails = tail_fractions(datasets)
    assert list(tails.columns) == ["JetClass", "BTag"] and len(tails) == 7
    assert (tails["JetClass"] < 0.01).all() and (tails["BTag"] > 0.08).all()  # |z| > 3 at 2 sigma
    # impact parameters count charged constituents only
    datasets["BTag"]["transformed"][~datasets["BTag"]["charged"], 3] = 10.0
    assert tail_fractions(datasets)["BTag"]["d0"] == pytest.approx(tails["BTag"]["d0"])
    fig = draw_inputs(datasets)
    assert len(fig.axes) == 14
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["JetClass", "BTag"]
    assert fig.axes[0].get_xscale() == "log" and fig.axes[1].get_xscale() == "linear"
    plt.close(fig)


def _sweep_table(path):
    points = [("decoder_depth", 1, 0.50), ("decoder_depth", 2, 0.55), ("mask_rate", 0.3, 0.55),
              ("mask_rate", 0.9, 0.45), ("mask_rate", 0.6, 0.52),
              ("random_init", None, 0.4)]  # fmt: skip
    table = pd.DataFrame(points, columns=["sweep", "value", "accuracy"])
    table = table.assign(steps=120, error=0.01)
    table.to_csv(path, index=False)
    return table


def test_sweep_figure_draws_each_sweep_in_percent_sorted_by_value(tmp_path):
    _sweep_table(tmp_path / "sweeps.csv")
    table = read_sweeps(tmp_path / "sweeps.csv")
    fig = draw_sweeps(table)
    top, bottom = fig.axes
    assert top.get_xlabel() == "Decoder depth" and bottom.get_xlabel() == "Mask rate"
    x, y = bottom.lines[0].get_data()
    assert list(x) == [0.3, 0.6, 0.9] and list(y) == pytest.approx([55, 52, 45])
    legend = [t.get_text() for t in bottom.get_legend().get_texts()]
    assert any("120 steps" in t for t in legend) and "Random init" in legend  # + reference
    assert any(list(line.get_ydata()) == pytest.approx([40, 40]) for line in bottom.lines)
    plt.close(fig)
    table[table["sweep"] != "mask_rate"].to_csv(tmp_path / "depth_only.csv", index=False)
    with pytest.raises(InputError, match="no 'mask_rate' sweep"):
        read_sweeps(tmp_path / "depth_only.csv")
    with pytest.raises(InputError, match="missing.csv: not found"):
        read_sweeps(tmp_path / "missing.csv")


def test_the_experiment_label_sits_above_the_axes_bold_then_italic_then_right():
    fig, ax = plt.subplots()
    label(ax, rlabel="JetClass")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = ax.get_window_extent(renderer).y1
    texts = {t.get_text(): t for t in fig.findobj(plt.Text) if t.get_text()}
    name, kind, right = texts[EXPERIMENT], texts["Simulation"], texts["JetClass"]
    boxes = [t.get_window_extent(renderer) for t in (name, kind, right)]
    assert all(box.y0 >= top for box in boxes)  # above the axes, not on the data
    assert boxes[0].x1 <= boxes[1].x0 < boxes[2].x0  # name, then kind, then the right label
    assert name.get_fontweight() == "bold" and kind.get_fontstyle() == "italic"
    assert name.get_fontsize() > kind.get_fontsize()
    plt.close(fig)
