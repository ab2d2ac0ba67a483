"""One fine-tuning run: a backbone, a task, a training-set size, a seed and a mode; trains
with early stopping, evaluates the best checkpoint on the test set and writes the predictions
and the run's metrics."""

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from mpm.atomic import atomic_dir
from mpm.data import schema
from mpm.data.h5io import open_jets
from mpm.data.loader import JetDataset, make_loader, split_datasets
from mpm.downstream.embeddings import (
    StoredEncoder,
    StoredOutputs,
    memory_budget,
    rows_of,
    stored_bytes,
)
from mpm.downstream.finetune import TASKS, FinetuneModule
from mpm.downstream.metrics import n_secondary_vertices, sic, sic_error, vertex_ari
from mpm.downstream.stored_fit import fit_stored_head, predict_stored
from mpm.errors import InputError
from mpm.models.backbone import load_backbone
from mpm.models.encoder import JetEncoder

log = logging.getLogger(__name__)


def _concat(outputs: list[dict]) -> dict[str, list[np.ndarray]]:
    return {k: [o[k] for o in outputs] for k in outputs[0]}


def _at_most(path: Path, n: int | None) -> int | None:
    """`n` jets of `path`, or all of them if it holds fewer (None: all)."""
    with open_jets(path) as file:
        total = file[schema.H5_LABELS].shape[0]
    return None if n is None or n >= total else n


CWOLA_COUNTS = ("n_signal", "n_signal_train", "n_signal_val")


def _dataset_info(path: Path) -> dict:
    """What a derived dataset says of itself (CWoLa: its injected signal jets, nominal and
    those in training and in validation)."""
    with open_jets(path) as file:
        return {k: int(file.attrs[k]) for k in CWOLA_COUNTS if k in file.attrs}


def _check_sic_background(test: JetDataset) -> None:
    """Before training: a CWoLa test set scored on fewer background jets at the SIC's working
    point than its dataset asks for (`finetune.cwola.min_background_at_fpr`) gives a biased
    SIC."""
    with open_jets(test.path) as file:
        floor, fpr = float(file.attrs["min_background_at_fpr"]), float(file.attrs["sic_fpr"])
        labels = file[schema.H5_LABELS]
        n_background = sum(int((labels[a : a + n] == 0).sum())
                           for a, n in zip(test.block_starts, test.block_lengths))  # fmt: skip
    if n_background * fpr < floor:
        raise InputError(f"params: 'finetune.recipe.n_test_jets' leaves {n_background} QCD test "
                         f"jets, {n_background * fpr:g} at the SIC's FPR of {fpr:g}; "
                         f"'finetune.cwola.min_background_at_fpr' asks for {floor:g}")  # fmt: skip


def _named(series: pd.Series) -> dict[str, float]:
    """A per-bin metric as a JSON object keyed by the bin."""
    return {str(k): float(v) for k, v in series.items()}


def jet_metrics(task: str, probs: np.ndarray, labels: np.ndarray) -> dict:
    metrics = {"accuracy": float((probs.argmax(1) == labels).mean())}
    if task == "cwola":  # the test set is pure: 1 = signal (top), 0 = background (QCD)
        metrics["sic_at_fpr_1pct"] = sic(labels, probs[:, 1], 0.01)
        metrics["sic_at_fpr_1pct_err"] = sic_error(labels, probs[:, 1], 0.01)
        metrics["n_background_test"] = int((labels == 0).sum())
        metrics["auc"] = float(roc_auc_score(labels, probs[:, 1]))
    return metrics


def vertex_table(batches: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    """Per test jet: its tracks, true secondary vertices and the ARI of the predicted partition."""
    parts = []
    for probs, mask, vertex in zip(batches["edge_probs"], batches["mask"], batches["vertex"]):
        mask = mask.astype(bool)
        parts.append(pd.DataFrame({"n_tracks": mask.sum(1),
                                   "n_secondary_vertices": n_secondary_vertices(vertex, mask),
                                   "ari": vertex_ari(probs, mask, vertex)}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def track_table(batches: dict[str, list[np.ndarray]]) -> pd.DataFrame:
    """Per test track: predicted and true origin, and the number of tracks in its jet."""
    parts = []
    for pred, mask, origin in zip(batches["pred"], batches["mask"], batches["origin"]):
        n = np.broadcast_to(mask.sum(1, keepdims=True), mask.shape)
        valid = mask & (origin >= 0)
        parts.append(pd.DataFrame({"n_tracks": n[valid], "origin": origin[valid],
                                   "pred": pred[valid]}))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def summarise(task: str, outputs: list[dict]) -> tuple[dict, pd.DataFrame]:
    """The run's headline metrics and its per-jet (or per-track) table."""
    batches = _concat(outputs)
    kind = TASKS[task].kind
    if kind == "jet":
        probs, labels = np.concatenate(batches["probs"]), np.concatenate(batches["labels"])
        table = pd.DataFrame(probs, columns=[f"p{i}" for i in range(probs.shape[1])])
        table["label"] = labels
        return jet_metrics(task, probs, labels), table
    if kind == "edge":
        table = vertex_table(batches)
        by_sv = table.groupby("n_secondary_vertices")["ari"].mean()
        return {
            "ari": float(table["ari"].mean()),
            "ari_by_n_secondary_vertices": _named(by_sv),
        }, table
    table = track_table(batches)
    by_n = table.groupby("n_tracks")[["origin", "pred"]].apply(
        lambda t: balanced_accuracy_score(t["origin"], t["pred"])
    )
    overall = balanced_accuracy_score(table["origin"], table["pred"])
    return {
        "balanced_accuracy": float(overall),
        "balanced_accuracy_by_n_tracks": _named(by_n),
    }, table


def _stored_counts(data_dir: Path, recipe: dict,
                   sizes: list[int | None]) -> dict[str, list[int | None]]:  # fmt: skip
    """Per split, the subset sizes that runs of `sizes` read from `data_dir`."""
    return {"train": sizes, "val": [_at_most(data_dir / "val.h5", recipe["n_val_jets"])],
            "test": [_at_most(data_dir / "test.h5", recipe["n_test_jets"])]}  # fmt: skip


def fits_in_memory(encoder: JetEncoder, data_dir: Path, recipe: dict, sizes: list[int | None],
                   seeds: list[int]) -> bool:  # fmt: skip
    """Whether `stored_outputs` of these runs fits `memory_budget()` (at the paper's sizes
    it does not: a frozen run there runs the backbone at every step instead)."""
    total = 0
    for split, split_sizes in _stored_counts(data_dir, recipe, sizes).items():
        path = data_dir / f"{split}.h5"
        with open_jets(path) as file:
            n_total = file[schema.H5_LABELS].shape[0]
        n_seeds = 1 if split == "test" else len(seeds)
        rows = sum(min(n or n_total, n_total) for n in split_sizes) * n_seeds
        total += stored_bytes(encoder, path, min(rows, n_total))
    return total <= memory_budget()


def stored_outputs(encoder: JetEncoder, data_dir: Path, preprocessor: Path, recipe: dict,
                   sizes: list[int | None], seeds: list[int], seed: int,
                   known: dict[str, StoredOutputs] | None = None,
                   ) -> dict[str, StoredOutputs]:  # fmt: skip
    """The frozen `encoder`'s outputs for every jet that runs of `sizes` x `seeds` read from
    `data_dir` (training subsets, validation and test jets); `seed` draws the preprocessing
    noise. Splits in `known` are taken from it (outputs already stored of the same file)."""
    outputs = dict(known or {})
    for split, split_sizes in _stored_counts(data_dir, recipe, sizes).items():
        if split in outputs:
            continue
        path = data_dir / f"{split}.h5"
        split_seeds = [seed] if split == "test" else seeds  # one test set for every run
        rows = [rows_of(path, n, s) for n in split_sizes for s in split_seeds]
        outputs[split] = StoredOutputs(encoder, path, preprocessor, np.concatenate(rows), seed)
    return outputs


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (as Lightning's
    `seed_everything` does, without importing Lightning)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_and_test(
    task: str,
    encoder: JetEncoder | StoredEncoder,
    mode: str,
    n_train: int | None,
    seed: int,
    params: dict,
    data_dir: Path,
    preprocessor: Path,
) -> tuple[dict, pd.DataFrame]:
    """Fine-tune (or, `frozen`, train only the head on) `encoder` for `task` on `n_train`
    training jets of `data_dir` chosen by `seed` (None: all) with early stopping, and test the
    best checkpoint on the test jets chosen by params `seed`, the same for every run: (the
    run's metrics, its per-jet or per-track predictions)."""
    cfg = params["finetune"]
    recipe = cfg["recipe"]
    seed_all(seed)
    module = FinetuneModule(encoder, task, mode, cfg["head"], recipe)
    stored = isinstance(encoder, StoredEncoder)
    batch_size = min(recipe["batch_size"], n_train or recipe["batch_size"])
    # heads on stored outputs read no features: the loader's workers would cost more than they save
    workers = 0 if stored else params["loader"]["num_workers"]
    subsets = dict(batch_size=batch_size, n_train=n_train, seed=seed, features=not stored,
                   n_val=_at_most(data_dir / "val.h5", recipe["n_val_jets"]))  # fmt: skip
    test = JetDataset(data_dir / "test.h5", preprocessor, batch_size=recipe["batch_size"],
                      n_jets=_at_most(data_dir / "test.h5", recipe["n_test_jets"]),
                      seed=params["seed"], shuffle=False, features=not stored)  # fmt: skip
    if task == "cwola":
        _check_sic_background(test)
    if stored:
        splits = split_datasets(data_dir, preprocessor, **subsets)
        best_val_loss, steps = fit_stored_head(module, make_loader(splits["train"], workers),
                                               make_loader(splits["val"], workers))  # fmt: skip
        outputs = predict_stored(module, make_loader(test, workers))
        n_train = splits["train"].n_jets
    else:  # Lightning only here: a frozen-only stage starts seconds sooner without it
        from mpm.data.datamodule import JetDataModule
        from mpm.downstream.lightning_fit import fit_with_lightning

        data = JetDataModule(data_dir, preprocessor, num_workers=workers, **subsets)
        best_val_loss, steps, outputs = fit_with_lightning(module, data, test, recipe, params,
                                                           workers)  # fmt: skip
        n_train = data.datasets["train"].n_jets
    metrics, table = summarise(task, outputs)
    summary = {
        "task": task, "mode": mode, "n_train": n_train, "seed": seed,
        **_dataset_info(data_dir / "train.h5"), **metrics,
        "best_val_loss": best_val_loss, "steps": steps,
    }  # fmt: skip
    log.info("%s %s n=%d seed=%d: %s", task, mode, n_train, seed,
             {k: v for k, v in metrics.items() if not isinstance(v, dict)})  # fmt: skip
    return summary, table


def write_run(folder: Path, summary: dict, table: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "predictions.csv", index=False, float_format="%.5g")
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")


def frozen_backbone(encoder: JetEncoder, data_dir: Path, preprocessor: Path, recipe: dict,
                    sizes: list[int | None], seeds: list[int], seed: int,
                    known: dict[str, StoredOutputs] | None = None,
                    ) -> JetEncoder | StoredEncoder:  # fmt: skip
    """What frozen runs of `sizes` x `seeds` train their heads on: the encoder's stored outputs
    (`stored_outputs`, with the splits of `known`) where they fit in memory, else the encoder
    itself, run at every step."""
    if fits_in_memory(encoder, data_dir, recipe, sizes, seeds):
        return StoredEncoder(encoder, stored_outputs(encoder, data_dir, preprocessor, recipe,
                                                     sizes, seeds, seed, known))  # fmt: skip
    log.info("frozen runs of %s jets x %d seeds: their stored outputs would not fit in %.1f GB "
             "of memory, so the backbone runs at every step", sizes, len(seeds),
             memory_budget() / 1e9)  # fmt: skip
    return encoder


def with_backbone(summary: dict, info: dict, backbone: Path, tic: float) -> dict:
    """A run's summary with the backbone's name first and the run's seconds since `tic` last."""
    return {"backbone": info.get("backbone", backbone.stem), **summary,
            "seconds": round(time.perf_counter() - tic, 1)}  # fmt: skip


def finetune(task: str, backbone: Path, mode: str, n_train: int | None, seed: int,
             params: dict, data_dir: Path, preprocessor: Path, out_dir: Path) -> dict:  # fmt: skip
    """One run (`train_and_test`) of the backbone stored at `backbone`; writes
    `out_dir/{metrics.json, predictions.csv}`."""
    tic = time.perf_counter()
    encoder, info = load_backbone(backbone)
    if mode == "frozen":
        encoder = frozen_backbone(encoder, data_dir, preprocessor, params["finetune"]["recipe"],
                                  [n_train], [seed], params["seed"])  # fmt: skip
    summary, table = train_and_test(task, encoder, mode, n_train, seed, params, data_dir,
                                    preprocessor)  # fmt: skip
    summary = with_backbone(summary, info, backbone, tic)
    with atomic_dir(out_dir) as tmp:
        write_run(tmp, summary, table)
    return summary
