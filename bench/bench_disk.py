"""Benchmark of the paper profile's disk: bytes per jet of each stage, measured here on
generated jets and extrapolated to the paper profile's numbers of jets (README "Real data").

Generates JetClass-like and BTag-like jets (Pythia8 + FastJet, the default profile's settings)
in a temporary folder, converts them with the paper profile's ratio of jets per shuffle bucket
per read (its convert.step_size / number of buckets) and its compression, the shuffle's
temporary buckets both lzf-compressed (as the convert stage writes them) and uncompressed (as
it wrote them before), side by side; measures a checkpoint of the paper-size pre-training
model; prints the table and records it in results/bench/disk.{json,md}.

    python bench/bench_disk.py [--jets-per-file 1000]
"""

import argparse
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from unittest import mock

import torch
import yaml

from mpm.data import convert
from mpm.data.generator.run import generate, validated_config
from mpm.training.pretrain import PretrainModule

REPO = Path(__file__).resolve().parents[1]
GB = 1e9
# The paper profile's jets, by what holds them (JetClass: 100M train, 5M val, 20M test; BTag's
# reduced files: ~2.2M + 750k + 747k, the Zenodo record's numbers).
JETCLASS_JETS = {"train": 100e6, "val": 5e6, "test": 20e6}
BTAG_JETS = 2.2e6 + 0.75e6 + 0.747e6
# Zenodo's tars (uncompressed tars of ROOT files; ~15 GB per 10M-jet train part, ~7.6 GB
# val, ~30 GB test: third-party, unverified sizes) and the BTag reduced files (not published).
TAR_BYTES_PER_JET = 15 * GB / 10e6
LARGEST_TAR_BYTES = 30 * GB


def converted_bytes(files, spec, out, n_buckets_ratio, step_size, compression, buckets):
    """(bucket bytes, file bytes, jets) of one conversion."""
    total = sum(convert.num_entries(f, spec.tree, spec.branches) for f in files)
    n_buckets = max(1, round(total / step_size * n_buckets_ratio))
    with mock.patch.object(convert, "BUCKET_COMPRESSION", buckets):
        summary = convert.convert_split(
            files, spec, out, seed=0, step_size=step_size, max_jets_per_file=None,
            bucket_jets=math.ceil(total / n_buckets), empty_jets="drop", compression=compression,
        )  # fmt: skip
    return summary["bucket_bytes"], summary["file_bytes"], summary["n_jets"]


def checkpoint_bytes(paper: dict, tmp: Path) -> int:
    """A Lightning-like checkpoint of the paper-size regression backbone: weights and AdamW's
    two moments (after one optimizer step, so that they exist)."""
    module = PretrainModule("regression", paper["model"], paper["pretrain"], paper["mask_rate"],
                            paper["convert"]["jetclass"]["max_constituents"])  # fmt: skip
    optimizer = torch.optim.AdamW(module.parameters())
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.save({"state_dict": module.state_dict(), "optimizer": optimizer.state_dict()},
               tmp / "ckpt.pt")  # fmt: skip
    return (tmp / "ckpt.pt").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets-per-file", type=int, default=1000,
                        help="JetClass-like jets per class")
    parser.add_argument("--out", default=str(REPO / "results/bench/disk"))
    parser.add_argument("--table-only", action="store_true",
                        help="redraw the table from the measurements in <out>.json")
    args = parser.parse_args()
    if args.table_only:
        results = json.loads(Path(f"{args.out}.json").read_text())
        paper = yaml.safe_load((REPO / "profiles/paper.yaml").read_text())
        results["table"] = table(results, paper)
        Path(f"{args.out}.json").write_text(json.dumps(results, indent=2) + "\n")
        Path(f"{args.out}.md").write_text(results["table"])
        print(results["table"])
        return
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    paper = yaml.safe_load((REPO / "profiles/paper.yaml").read_text())
    # the paper's buckets per read: 100M jets / bucket_jets buckets, step_size jets per read
    ratio = (JETCLASS_JETS["train"] / paper["convert"]["bucket_jets"]) / (
        JETCLASS_JETS["train"] / paper["convert"]["step_size"])  # fmt: skip
    step = 2000
    compression = paper["convert"]["compression"]
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "buckets_per_read": ratio, "compression": compression}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen = validated_config(params)
        gen["workers"] = None
        gen["jetclass"]["jets_per_file"] = {"train": args.jets_per_file, "val": 1, "test": 1}
        gen["btag"]["jets_per_flavour"] = {"train": args.jets_per_file, "val": 1, "test": 1}
        generate(tmp / "raw", gen, seed=0)
        for name, folder in (("jetclass", "jetclass/train_100M"), ("btag", "btag")):
            pattern = "*train*.root" if name == "btag" else "*.root"
            files = sorted((tmp / "raw" / folder).glob(pattern))
            spec = convert.dataset_spec(name, paper["convert"][name])
            for buckets in ("lzf", None):
                b, f, n = converted_bytes(files, spec, tmp / f"{name}_{buckets}.h5", ratio, step,
                                          compression, buckets)  # fmt: skip
                results[f"{name}_bucket_bytes_per_jet[{buckets}]"] = round(b / n)
            results[f"{name}_file_bytes_per_jet"] = round(f / n)
            results[f"{name}_jets"] = n
        results["checkpoint_bytes"] = checkpoint_bytes(paper, tmp)
    results["table"] = table(results, paper)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=2) + "\n")
    Path(f"{args.out}.md").write_text(results["table"])
    for key, value in results.items():
        if key != "table":
            print(f"{key:<40}  {value}")
    print(results["table"])


def table(r: dict, paper: dict) -> str:
    """The paper profile's disk per stage: per 1M jets (measured) and in total (extrapolated)."""
    jc_file, bt_file = r["jetclass_file_bytes_per_jet"], r["btag_file_bytes_per_jet"]
    n_all = sum(JETCLASS_JETS.values())
    grid = paper["finetune"]["grid"]
    n_cwola_sets = len(grid["cwola_signal"]) * len(grid["seeds"])
    cwola_jets = (paper["finetune"]["cwola"]["n_background"]
                  + 2 * paper["finetune"]["cwola"]["n_test_per_class"])  # fmt: skip
    n_runs = 4 + 2 + 1 + 2 * len(paper["ablation"]["table1_rows"]) + len(
        paper["ablation"]["decoder_depths"]) + len(paper["ablation"]["mask_rates"])  # fmt: skip
    rows = [
        ("download: one tar at a time, while it is extracted (`keep_archives: false`)",
         TAR_BYTES_PER_JET, LARGEST_TAR_BYTES, "transient (the largest tar, test); ~180 GB "
         "with `keep_archives: true`; Zenodo's sizes (quoted, not measured)"),
        ("`data/real`: the extracted ROOT files (JetClass; BTag's sizes are not published)",
         TAR_BYTES_PER_JET, TAR_BYTES_PER_JET * n_all, "persistent; quoted, not measured"),
        ("convert: shuffle buckets of the largest split (train), lzf",
         r["jetclass_bucket_bytes_per_jet[lzf]"], r["jetclass_bucket_bytes_per_jet[lzf]"]
         * JETCLASS_JETS["train"], "transient, beside the output while it is written: "
         "the stage's peak is both"),
        ("  (the same buckets uncompressed, as before)",
         r["jetclass_bucket_bytes_per_jet[None]"], r["jetclass_bucket_bytes_per_jet[None]"]
         * JETCLASS_JETS["train"], "for comparison"),
        ("`data/processed/jetclass` (train, val, test)", jc_file, jc_file * n_all, "persistent"),
        ("`data/processed/btag`", bt_file, bt_file * BTAG_JETS, "persistent"),
        (f"`data/processed/cwola`: {n_cwola_sets} sets of {cwola_jets / 1e6:g}M jets + signal",
         jc_file, jc_file * cwola_jets * n_cwola_sets, "persistent"),
        (f"`checkpoints/`: {n_runs} training runs x 2 checkpoints", None,
         2 * n_runs * r["checkpoint_bytes"], f"{r['checkpoint_bytes'] / GB:.2f} GB each"),
    ]
    rows.append(("DVC cache with `cache.type: copy` (the default)", None,
                 TAR_BYTES_PER_JET * n_all + jc_file * (n_all + cwola_jets * n_cwola_sets)
                 + bt_file * BTAG_JETS + 2 * n_runs * r["checkpoint_bytes"],
                 "a second copy of every output above; none with hardlink/symlink/reflink"))
    lines = ["| stage | per 1M jets | paper profile | note |", "|---|---|---|---|"]
    for name, per_jet, total, note in rows:
        per_m = "" if per_jet is None else f"{per_jet * 1e6 / GB:.2f} GB"
        lines.append(f"| {name} | {per_m} | {total / GB:,.0f} GB | {note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
