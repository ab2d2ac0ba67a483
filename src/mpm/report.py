"""results/REPORT.md: every table and figure of the run in one page, each with a one-line
caption, the profile it came from, and what the paper reports beside ours."""

import os
from pathlib import Path

import pandas as pd

from mpm.ablation import TABLE1_BACKBONES
from mpm.downstream.aggregate import RESOLVED_AT_STDERR
from mpm.errors import InputError
from mpm.plotting.downstream import FIGURES as FIGURE_TASKS
from mpm.plotting.style import BACKBONE_NAMES
from mpm.plotting.sweeps import read_sweeps
from mpm.tables import read_json

# (figure stem under results/figures, the paper's figure, caption), in the paper's order.
FIGURES = [
    ("downstream_jetclass_finetuned", "Fig. 2",
     "Fine-tuned backbones on JetClass: accuracy vs training jets (a); CWoLa SIC at 1% "
     "background efficiency vs injected top jets (b)."),
    ("downstream_btag_finetuned", "Fig. 3",
     "Fine-tuned backbones on BTag: jet accuracy vs training jets (a), vertex-finding ARI vs "
     "secondary vertices (b), track-ID balanced accuracy vs tracks in the jet (c)."),
    ("inputs", "Fig. 4",
     "Constituent features of JetClass and BTag test jets, raw (top) and after the quantile "
     "transform fitted on JetClass (bottom)."),
    ("sweeps", "Fig. 5",
     "Frozen-backbone probe accuracy of k-means + ID pre-training vs decoder depth (top) and "
     "mask rate (bottom), Table 1 row 6 otherwise."),
    ("decoder_curve", "-",
     "Table 1 rows 4 (MLP decoder) and 5 (transformer decoder, MAE) of the regression "
     "backbone: probe accuracy vs pre-training steps on the final schedule, Random init as "
     "a band."),
    ("downstream_jetclass_frozen", "Fig. 6", "As Fig. 2 with the backbones frozen."),
    ("downstream_btag_frozen", "Fig. 7", "As Fig. 3 with the backbones frozen."),
    ("reconstruction", "Fig. 8",
     "Masked test jets (40% dropped) reconstructed by each pre-training task: original, "
     "surviving and surviving + reconstructed constituents."),
    ("ssfm_generation", "-",
     "SSFM whole jets generated from nothing (D_f = 0) against real jets: jet mass and "
     "constituent pT."),
    ("training_curves", "-", "Pre-training losses of every backbone and the VQ-VAE tokenizer."),
    ("data_sanity", "-", "The converted datasets at a glance (data checks of the generator)."),
]

# What the paper reports for the downstream tasks (it tabulates none of Figs. 2, 3, 6, 7).
PAPER_DOWNSTREAM = {
    "jetclass": "every pre-trained backbone above random at every size (1k to 100M); at 100M "
                "85.0-85.3% vs 84.3%",
    "cwola": "pre-trained backbones well above random; best SIC 8.18 (Regression, 500 top jets)",
    "btag": "every pre-trained backbone above random; all near 70% at the largest size",
    "vertex": "every backbone above random; CNF best",
    "track": "every pre-trained backbone above random",
}
PAPER_SWEEPS = ("robust to the mask rate, 40% best and still above 80% at 90%; deeper decoders "
                "better, explored up to 4 layers")  # fmt: skip


def _read(path: Path) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"row": str})
    except FileNotFoundError:
        raise InputError(f"{path}: not found") from None


def _gain(entry: dict, backbone: str) -> str:
    """A gain over random, with its standard error over seeds and whether it is resolved."""
    gain, stderr = entry["gain_over_random"][backbone], entry.get("gain_stderr", {})
    if backbone not in stderr:
        return f"{gain:+.3f}, one seed: not resolved"
    verdict = "resolved" if entry["resolved"][backbone] else "not resolved"
    return f"{gain:+.3f} ± {stderr[backbone]:.3f}, {verdict}"


def _headline_table(headline: dict) -> str:
    lines = []
    for task, entry in headline.items():
        # the modes the grid ran, in its order (the entry's other keys describe the task)
        for mode in (key for key, value in entry.items() if isinstance(value, dict)):
            means = entry[mode]["mean"]
            errors = entry[mode].get("error", {})

            def value(b, means=means, errors=errors):  # with the test set's error, if any
                return f"{means[b]:.3f}" + (f" ± {errors[b]:.3f}" if b in errors else "")

            cells = [f"{BACKBONE_NAMES.get(b, b)} {value(b)} ({_gain(entry[mode], b)})"
                     for b in means if b != "random"]  # fmt: skip
            lines.append({
                "task": task, "metric": f"{entry['metric']} at {entry['size']}", "mode": mode,
                "Random init": value("random") if "random" in means else "-",
                "pre-trained (gain over random)": "; ".join(cells),
                "paper": PAPER_DOWNSTREAM.get(task, "-") if mode == "finetuned" else "-",
            })  # fmt: skip
    return pd.DataFrame(lines).to_markdown(index=False)


def _acceptance(headline: dict) -> list[str]:
    """What this scale resolves, read off the headline: on JetClass at the smallest size,
    which pre-trained backbones beat random by more than RESOLVED_AT_STDERR standard errors;
    on the BTag tasks, how many gains are resolved."""
    lines = []
    for task in ("jetclass", "btag", "vertex", "track", "cwola"):
        entry = headline.get(task, {})
        for mode in (key for key, value in entry.items() if isinstance(value, dict)):
            gains = entry[mode].get("gain_over_random", {})
            if not gains:
                continue
            resolved = [b for b in gains if entry[mode]["resolved"][b] and gains[b] > 0]
            behind = [b for b in gains if entry[mode]["resolved"][b] and gains[b] < 0]
            names = ", ".join(BACKBONE_NAMES.get(b, b) for b in resolved) or "none"
            line = (f"- {task} {mode} at {entry['size']}: {len(resolved)} of {len(gains)} "
                    f"pre-trained backbones above Random init by more than "
                    f"{RESOLVED_AT_STDERR} standard errors ({names})")  # fmt: skip
            if behind:
                line += "; resolved below it: " + ", ".join(BACKBONE_NAMES.get(b, b)
                                                            for b in behind)  # fmt: skip
            lines.append(line + ".")
    return lines


def _change_error(a: float, b: float, n: int) -> float:
    """The error (points) of the change between accuracies `a` and `b` (%) on `n` test jets
    each: their binomial errors in quadrature."""
    return sum((p / 100) * (1 - p / 100) / n for p in (a, b)) ** 0.5 * 100


def _verdict(change: float, error: float, paper: float | None) -> str:
    if abs(change) <= RESOLVED_AT_STDERR * error:
        return "not resolved"
    if paper is None:
        return "resolved"
    return "the paper's sign, reproduced" if change * paper > 0 else "opposite to the paper"


def _table1_verdicts(table: pd.DataFrame, n_test: int) -> list[str]:
    """Each Table 1 change (a row against the line above) per backbone, with its error (the
    two probes' binomial errors in quadrature, though they score the same test jets) and
    whether it is resolved (RESOLVED_AT_STDERR errors) with the paper's sign; then the final
    backbones against Random init."""
    rows = table[table["row"] != "reference"].reset_index(drop=True)
    reference = table[table["row"] == "reference"].iloc[0]
    lines = []
    for i in range(1, len(rows)):
        cells = []
        for b in TABLE1_BACKBONES:  # the changes as the table prints them (unrounded)
            change, paper = rows.at[i, f"{b} delta"], rows.at[i, f"paper {b} delta"]
            error = _change_error(rows.at[i, b], rows.at[i - 1, b], n_test)
            cells.append(f"{BACKBONE_NAMES.get(b, b)} {change:+.1f} ± {error:.1f} (paper "
                         f"{paper:+.1f}): {_verdict(change, error, paper)}")  # fmt: skip
        lines.append(f"- Row {rows.at[i, 'row']} ({rows.at[i, 'configuration']}): "
                     + "; ".join(cells) + ".")  # fmt: skip
    last = rows.iloc[-1]
    cells = []
    for b in TABLE1_BACKBONES:
        change, error = last[b] - reference[b], _change_error(last[b], reference[b], n_test)
        cells.append(f"{BACKBONE_NAMES.get(b, b)} {change:+.1f} ± {error:.1f}: "
                     f"{_verdict(change, error, None)}")  # fmt: skip
    lines.append(f"- Row {last['row']} (the final backbones) against Random init: "
                 + "; ".join(cells) + ".")  # fmt: skip
    return lines


def _decoder_curve(curve: dict) -> list[str]:
    """The decoder curve's gains of each later row over the earlier one, and where they cross."""
    lines = []
    for pair in (v for v in curve.values() if isinstance(v, dict)):
        low, high = pair["rows"]
        cells = [f"{s}: {100 * d:+.1f} ± {100 * e:.1f}" for s, d, e in
                 zip(pair["steps"], pair["difference"], pair["difference_error"])]  # fmt: skip
        crossing = pair["crossing_step"]
        end = pair["difference"][-1]
        where = (f"the sign last changes at step {crossing}" if crossing is not None
                 else "no change of sign over the probed steps")  # fmt: skip
        lines.append(f"Row {high} minus row {low} (accuracy points, at each probed step): "
                     f"{'; '.join(cells)}. It ends {'above' if end > 0 else 'below'} zero; "
                     f"{where}.")  # fmt: skip
    return lines


def _reconstruction_table(metrics: dict) -> str:
    rows = {BACKBONE_NAMES.get(name, name): w1 for name, w1 in metrics["w1"].items()}
    return pd.DataFrame(rows).T.round(4).to_markdown()


def build_report(params: dict, results: Path, figures: Path, report: Path) -> str:
    """The Markdown report; figure links are relative to the folder of `report`."""
    table1 = _read(results / "ablation" / "table1.md")
    table1_numbers = _read_csv(results / "ablation" / "table1.csv")
    probe_test_jets = read_json(results / "ablation" / "table1.json")["probe_test_jets"]
    sweeps = read_sweeps(results / "ablation" / "sweeps.csv")
    headline = read_json(results / "downstream" / "headline.json")
    reconstruction = read_json(results / "reconstruction.json")
    curve = read_json(results / "ablation" / "decoder_curve.json")
    scale = {
        "profile": params["profile"],
        "data": params["data"]["source"],
        "encoder": "{dim} wide, {depth} layers, {heads} heads, {registers} registers".format(
            **params["model"]["encoder"]),
        "pre-training": "{steps} steps of {batch_size} jets".format(**params["pretrain"]),
        "ablation runs": f"{params['ablation']['pretrain']['steps']} steps",
        "downstream seeds": str(params["finetune"]["grid"]["seeds"]),
    }  # fmt: skip
    out = [
        "# Results",
        "",
        "Regenerated by the DVC stage `report` from the outputs of `dvc repro`; every number "
        "below comes from this run. The paper's numbers are printed beside ours where it "
        "states them.",
        "",
        pd.DataFrame(scale.items(), columns=["setting", "value"]).to_markdown(index=False),
        "",
        "## What this scale reproduces",
        "",
        f"Table 1 (below): each change with its error ({probe_test_jets} test jets per probe) "
        f"and whether this scale resolves it (more than {RESOLVED_AT_STDERR} errors) with the "
        "paper's sign:",
        "",
        *_table1_verdicts(table1_numbers, probe_test_jets),
        "",
        "Downstream (the headline below): the pre-trained backbones against Random init at "
        "each task's smallest training size:",
        "",
        *_acceptance(headline),
        "",
        "Decoder curve (Table 1 rows 4 and 5 on the final schedule, below):",
        "",
        *_decoder_curve(curve),
        "",
        "## Table 1: model redesign ablation",
        "",
        "Accuracy (%) of a class-attention head on the frozen backbone, JetClass; in brackets "
        "the change from the line above, over the rows the profile trains "
        "(`ablation.table1_rows`). All rows but the last (7, the final backbones) use the "
        "shorter ablation schedule.",
        "",
        table1.strip(),
        "",
        "## Decoder curve (Table 1 rows 4 and 5)",
        "",
        f"The regression backbone's rows 4 and 5 on the final schedule to "
        f"{params['ablation']['curve']['steps']} steps, probed every "
        f"{params['ablation']['curve']['probe_every']}; errors binomial on the probe's test "
        "jets. Paper: the transformer decoder is Table 1's largest step (regression +9.5 "
        "points without impact parameters or IDs). Its gains are summarised at the top.",
        "",
        "## Downstream headline (Figs. 2, 3, 6, 7)",
        "",
        "Each backbone at each task's smallest training size, mean over seeds, and its gain "
        "over the random backbone with the gain's standard error over seeds; a gain is "
        f"resolved at this scale when it exceeds {RESOLVED_AT_STDERR} standard errors (one "
        "seed gives no error, so nothing is resolved).",
        "",
        _headline_table(headline),
        "",
        "## Fig. 5 sweeps",
        "",
        f"Paper: {PAPER_SWEEPS}.",
        "",
        sweeps.assign(accuracy=(100 * sweeps["accuracy"]).round(1)).to_markdown(index=False),
        "",
        "## Fig. 8 reconstructions",
        "",
        f"1-Wasserstein distance of the reconstructed to the true dropped constituents "
        f"(normalised features; {reconstruction['n_jets']} test jets, mask rate "
        f"{reconstruction['mask_rate']}). The paper shows the figure only.",
        "",
        _reconstruction_table(reconstruction),
        "",
        "## Figures",
        "",
    ]
    modes = params["finetune"]["grid"]["modes"]
    for stem, paper, caption in FIGURES:
        mode = stem.rsplit("_", 1)[-1] if stem.startswith("downstream_") else None
        if mode is not None and mode not in modes:  # the profile's grid has no such runs
            out += [f"**{paper}: {stem}.** Not drawn: `finetune.grid.modes` has no {mode} runs.",
                    ""]  # fmt: skip
            continue
        family = stem.split("_")[1] if mode is not None else None
        if family is not None and not any(mode in headline.get(task, {})
                                          for task in FIGURE_TASKS[family]):  # fmt: skip
            out += [f"**{paper}: {stem}.** Empty: the grid runs none of its tasks {mode} "
                    "(`finetune.grid.finetuned_sizes`).", ""]  # fmt: skip
            continue
        png = figures / f"{stem}.png"
        if not png.exists():
            raise InputError(f"{png}: not found")
        link = Path(os.path.relpath(png.resolve(), report.resolve().parent))
        out += [f"**{paper if paper != '-' else 'Extra'}: {stem}.** {caption}", "",
                f"![{stem}]({link.as_posix()})", ""]  # fmt: skip
    return "\n".join(out)
