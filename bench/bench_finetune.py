"""Benchmark of the downstream runs (the finetune stages, 47 of the default profile's 107
minutes at 63a72c6): where a run's seconds go, and the frozen runs' plain loop against
Lightning's on the same stored outputs, timed side by side in alternating rounds.

Reads the workspace's converted data and Random init backbone (run the pipeline's
`fit_preprocessor`, `convert@btag` and `random_backbone` first) with the default profile's
params; prints a table and records it in results/bench/finetune.json.

    python bench/bench_finetune.py [--rounds 3]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from mpm.data.datamodule import JetDataModule
from mpm.data.loader import JetDataset, make_loader
from mpm.downstream.embeddings import StoredEncoder
from mpm.downstream.finetune import FinetuneModule
from mpm.downstream.layout import grid_sizes
from mpm.downstream.lightning_fit import fit_with_lightning
from mpm.downstream.run import seed_all, stored_outputs, summarise, train_and_test
from mpm.downstream.stored_fit import fit_stored_head, predict_stored
from mpm.models.backbone import load_backbone

REPO = Path(__file__).resolve().parents[1]
DATA = {"jetclass": "jetclass", "btag": "btag", "vertex": "btag", "track": "btag"}


def frozen_run(task: str, stored: StoredEncoder, params: dict, data_dir: Path, pre: Path,
               loop: str) -> tuple[float, float]:  # fmt: skip
    """One frozen run at the smallest size, seed 0, as `train_and_test` sets it up, trained
    with `loop` (plain | lightning): (seconds, best validation loss)."""
    recipe, size = params["finetune"]["recipe"], params["finetune"]["grid"]["sizes"][task][0]
    tic = time.perf_counter()
    seed_all(0)
    module = FinetuneModule(stored, task, "frozen", params["finetune"]["head"], recipe)
    data = JetDataModule(data_dir, pre, batch_size=recipe["batch_size"], n_train=size,
                         n_val=recipe["n_val_jets"], seed=0, features=False)  # fmt: skip
    test = JetDataset(data_dir / "test.h5", pre, batch_size=recipe["batch_size"],
                      n_jets=recipe["n_test_jets"], seed=params["seed"], shuffle=False,
                      features=False)  # fmt: skip
    if loop == "plain":
        data.setup()
        loss, _ = fit_stored_head(module, data.train_dataloader(), data.val_dataloader())
        outputs = predict_stored(module, make_loader(test, 0))
    else:
        loss, _, outputs = fit_with_lightning(module, data, test, recipe, params, 0)
    summarise(task, outputs)
    return time.perf_counter() - tic, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per loop")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--backbone", default=str(REPO / "models/backbones/random.pt"))
    parser.add_argument("--out", default=str(REPO / "results/bench/finetune.json"))
    args = parser.parse_args()
    params = yaml.safe_load(Path(args.params).read_text())
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    pre = REPO / "data/preprocessor/quantile.joblib"
    grid, recipe = params["finetune"]["grid"], params["finetune"]["recipe"]
    encoder, _ = load_backbone(Path(args.backbone))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    results = {"machine": machine, "rounds": args.rounds, "tasks": {}}
    print(f"{'task':>9} {'store s':>8} {'lightning s':>12} {'plain s':>8} {'ratio':>6}")
    for task in ("jetclass", "btag", "vertex", "track"):
        data_dir = REPO / "data/processed" / DATA[task]
        tic = time.perf_counter()
        stored = StoredEncoder(encoder, stored_outputs(
            encoder, data_dir, pre, recipe, grid_sizes(grid, task, "frozen"), grid["seeds"],
            params["seed"]))  # fmt: skip
        store_s = time.perf_counter() - tic
        times = {"plain": [], "lightning": []}
        losses = {}
        for _ in range(args.rounds):
            for loop in times:
                seconds, losses[loop] = frozen_run(task, stored, params, data_dir, pre, loop)
                times[loop].append(seconds)
        best = {loop: min(t) for loop, t in times.items()}
        ratio = best["lightning"] / best["plain"]
        results["tasks"][task] = {
            "store_s": round(store_s, 2),
            "frozen_run_s": {k: round(v, 2) for k, v in best.items()},
            "lightning_over_plain": round(ratio, 2),
            "best_val_loss": {k: round(v, 5) for k, v in losses.items()},
        }
        print(f"{task:>9} {store_s:>8.1f} {best['lightning']:>12.2f} {best['plain']:>8.2f} "
              f"{ratio:>6.2f}")  # fmt: skip
    size = grid["sizes"]["jetclass"][0]
    tic = time.perf_counter()
    summary, _ = train_and_test("jetclass", load_backbone(Path(args.backbone))[0], "finetuned",
                                size, 0, params, REPO / "data/processed/jetclass", pre)  # fmt: skip
    seconds = time.perf_counter() - tic
    results["finetuned_jetclass_run"] = {"n_train": size, "steps": summary["steps"],
                                         "seconds": round(seconds, 1)}  # fmt: skip
    print(f"one fine-tuned JetClass run ({size} jets, {summary['steps']} steps): {seconds:.1f} s")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
