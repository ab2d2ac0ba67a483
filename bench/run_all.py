"""Run every benchmark and write the summary table results/bench/summary.md.

    python bench/run_all.py                      # components + smoke end to end (~10 min)
    python bench/run_all.py --e2e smoke default  # + the default profile end to end (~1 h)
    python bench/run_all.py --summary-only       # redraw the table from results/bench/*.json

The components: the generator (bench_generate), conversion and loader (bench_data), a
pre-training step of the default and of the paper-size model, MAE against BERT-style
(bench_pretrain), the k-means fit (bench_kmeans), no-op `dvc repro` and `dvc status` on the
whole default DAG (bench_dvc, in this workspace, which must be up to date). The summary also
gives the paper profile's expected cost per stage, from the measured paper-size step time.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from mpm.ablation import run_names

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "bench"
# Reference rates for the cost table, not measured here: the authors' budget (4 days on one
# GPU for 1M steps of 1000 jets) and this project's H100 target (README "Scale").
# The code before packed jets, timed in the same rounds as today's (bench_pretrain --peer)
PEER_BASELINE = "4f9aa31"
REFERENCE_RATES = {"authors' 4-day budget (implied)": 1e9 / (4 * 86400),
                   "our H100 target": 12_000.0}  # fmt: skip


def _bench(script: str, *args: str) -> None:
    print(f"== {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(REPO / "bench" / script), *args], check=True)


def run_components(e2e: list[str]) -> None:
    _bench("bench_generate.py")
    _bench("bench_data.py")
    _bench("bench_pretrain.py")
    _bench("bench_pretrain.py", "--params", "profiles/paper.yaml", "--batch-size", "32",
           "--steps", "2", "--out", str(RESULTS / "pretrain_paper.json"))  # fmt: skip
    _bench("bench_pretrain.py", "--peer", "--baseline", PEER_BASELINE)
    _bench("bench_pretrain.py", "--profile")
    _bench("bench_pretrain.py", "--loader")
    _bench("bench_kmeans.py")
    _bench("bench_dvc.py")
    for profile in e2e:
        _bench("bench_e2e.py", "--profile", profile)


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def paper_jets(params: dict, dvc: dict) -> dict[str, tuple[int, float]]:
    """(runs, jets processed in training) per stage family of the paper profile; fine-tuning
    at its max_steps (early stopping ends most runs sooner: an upper bound)."""
    stages = dvc["stages"]
    pre, vq = params["pretrain"], params["tokenizers"]["vqvae"]
    backbones = len(stages["pretrain"]["foreach"]) + len(stages["pretrain_tokens"]["foreach"])
    ablation = params["ablation"]
    recipe, grid = params["finetune"]["recipe"], params["finetune"]["grid"]
    runs_per_backbone = len(grid["modes"]) * len(grid["seeds"])
    finetune_runs = len(grid["backbones"]) * runs_per_backbone * (
        sum(len(v) for v in grid["sizes"].values()) + len(grid["cwola_signal"]))
    n_ablation = len(run_names(params))
    return {
        "pretrain (each backbone)": (backbones, pre["steps"] * pre["batch_size"]),
        "train_vqvae": (1, vq["steps"] * vq["batch_size"]),
        "ablation runs: pre-training": (n_ablation, ablation["pretrain"]["steps"]
                                        * pre["batch_size"]),
        "ablation runs: probe": (n_ablation + 2, ablation["probe"]["max_steps"]
                                 * recipe["batch_size"]),
        "fine-tuning (each run, at most)": (finetune_runs, recipe["max_steps"]
                                            * recipe["batch_size"]),
    }  # fmt: skip


def cost_table(measured: dict | None) -> list[str]:
    params = yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    rates = {}
    if measured:
        step = measured["mae"]["step_ms"] / 1000
        rates[f"measured: {measured['mae']['device']}, batch {measured['batch_size']}"] = (
            measured["batch_size"] / step)  # fmt: skip
    rates |= REFERENCE_RATES
    names = list(rates)
    lines = ["| stage (paper profile) | runs | jets per run | "
             + " | ".join(f"hours per run at {n} ({rates[n]:,.0f} jets/s)" for n in names)
             + " |", "|---|---|---|" + "---|" * len(names)]  # fmt: skip
    total = dict.fromkeys(names, 0.0)
    for stage, (runs, jets) in paper_jets(params, dvc).items():
        hours = {n: jets / rates[n] / 3600 for n in names}
        for n in names:
            total[n] += runs * hours[n]
        lines.append(f"| {stage} | {runs} | {jets:.2g} | "
                     + " | ".join(f"{hours[n]:,.1f}" for n in names) + " |")  # fmt: skip
    lines.append("| **all stages (device hours)** | | | "
                 + " | ".join(f"**{total[n]:,.0f}**" for n in names) + " |")  # fmt: skip
    return lines


def summary() -> str:
    out = ["# Benchmarks", "", "Written by `python bench/run_all.py` from results/bench/*.json.",
           "", "| measurement | value | machine |", "|---|---|---|"]  # fmt: skip

    def row(what: str, value: str, source: dict | None) -> None:
        out.append(f"| {what} | {value} | {source.get('machine', '') if source else ''} |")

    if gen := _load("generate"):
        rates = gen["jets_per_s_per_core"]
        jetclass = [v for k, v in rates.items() if k != "BTag"]
        row("generator, JetClass-like, jets/s per core", f"{min(jetclass):.0f}-{max(jetclass):.0f}"
            " (by class)", gen)  # fmt: skip
        row("generator, BTag-like, jets/s per core", f"{rates['BTag']:.0f}", gen)
    if data := _load("data"):
        for key, value in data.items():
            if key.startswith(("convert_", "loader_")):
                row(f"{key.split('[')[0].replace('_', ' ')} [{key.split('[')[1]}", f"{value:,}",
                    data)  # fmt: skip
    for name, label in (("pretrain", "default model"), ("pretrain_paper", "paper-size model")):
        if bench := _load(name):
            for variant in ("mae", "bert"):
                m = bench[variant]
                row(f"pre-training step, {label}, {variant.upper()}, batch {bench['batch_size']} "
                    f"({m['device']})", f"{m['step_ms']:.0f} ms = "
                    f"{1000 * bench['batch_size'] / m['step_ms']:,.0f} jets/s, peak memory "
                    f"{m['peak_memory_mb']:.0f} MB", bench)  # fmt: skip
            row(f"BERT-style / MAE, {label}: step time, forward time, peak memory",
                f"{bench['bert_over_mae_step_time']}x, {bench['bert_over_mae_forward_time']}x, "
                f"{1 / bench['mae_over_bert_peak_memory']:.2f}x", bench)  # fmt: skip
    if peer := _load("peer_default"):
        base = next((k.split(":")[0] for k in peer if k.startswith("baseline ")), None)
        than_base = f"; {peer['ours over baseline, jets/s']}x the jets/s of {base}" if base else ""
        row(f"MAE step, default model, batch {peer['batch_size']}, against a plain "
            "nn.TransformerEncoder (same process)", f"{peer['ours: MAE step ms']:.0f} ms vs "
            f"{peer['ours: peer step ms']:.0f} ms: {peer['peer over ours (same process)']}x the "
            f"peer's jets/s{than_base}", peer)  # fmt: skip
    if prof := _load("profile_default"):
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(prof["shares"].items())[:5])
        row("where the default-model CPU step's time goes", shares, prof)
    if loader := _load("loader_default"):
        rates = " / ".join(f"{v / 1000:.1f}k" for k, v in loader.items()
                           if k.startswith("loader jets/s"))  # fmt: skip
        row("loader, batch 1000, default training file, 0 / 1 / 2 workers", f"{rates} jets/s, "
            f"{loader['loader (2 workers) over the step']}x the default MAE step", loader)
    if (gpu := _load("gpu_check")) and "best" in gpu:
        row(f"paper-size step at batch {gpu['batch_size']} on {gpu['device']}, best variant",
            f"{gpu['best']['variant']}: {gpu['best']['jets_per_s']:,.0f} jets/s", gpu)
    if km := _load("kmeans"):
        for fit in km["fits"]:
            row(f"k-means fit ({fit['backend']}), k={fit['k']}, {km['n_points']:,} points x "
                f"{km['iterations']} iterations", f"{fit['seconds']} s", km)  # fmt: skip
    if dvc := _load("dvc"):
        for key in ("dvc status", "dvc repro (no-op)"):
            row(f"{key}, whole default DAG ({dvc['stages']} stages)",
                f"{dvc[key]['median_s']} s (median of {len(dvc[key]['runs_s'])})", dvc)
    for profile in ("smoke", "default"):
        if e2e := _load(f"e2e_{profile}"):
            top = ", ".join(f"{k} {v / 60:.1f}" for k, v in
                            list(e2e["seconds_by_stage_family"].items())[:4])  # fmt: skip
            row(f"`dvc repro` end to end, {profile} profile, fresh clone and cache",
                f"{e2e['wall_s'] / 60:.1f} min ({e2e['stages_run']} stages; longest, min: "
                f"{top})", e2e)  # fmt: skip
    out += ["", "## Expected paper-scale cost", "",
            "Jets each stage trains on (paper profile) divided by a pre-training rate. The first"
            " rate is measured by bench_pretrain.py (paper-size model) on the machine named; the"
            " others are reference rates, not measurements. Fine-tuning is counted at its"
            " max_steps at the pre-training rate (an upper bound: early stopping ends most runs"
            " sooner, and frozen runs skip the backbone's backward pass).", ""]  # fmt: skip
    out += cost_table(_load("pretrain_paper"))
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e", nargs="*", default=["smoke"], choices=("smoke", "default"),
                        help="profiles to time end to end (default: smoke)")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    if not args.summary_only:
        run_components(args.e2e)
    text = summary()
    (RESULTS / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
