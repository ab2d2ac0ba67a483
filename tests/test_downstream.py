"""Downstream heads, the fine-tuning recipe and a tiny run of every task kind."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from mpm.data import schema
from mpm.data.datamodule import JetDataModule
from mpm.data.h5io import CHUNK_JETS
from mpm.data.loader import JetDataset, make_loader
from mpm.data.preprocess import load_preprocessor
from mpm.downstream.cwola import build_cwola
from mpm.downstream.embeddings import StoredEncoder, StoredOutputs
from mpm.downstream.finetune import FinetuneModule, backbone_lr_factor, pair_mask
from mpm.downstream.grid import run_grid
from mpm.downstream.heads import JetClassifier, TrackClassifier, VertexFinder
from mpm.downstream.layout import cwola_dataset, run_name
from mpm.downstream.lightning_fit import fit_with_lightning
from mpm.downstream.run import finetune, stored_outputs, train_and_test
from mpm.downstream.stored_fit import fit_stored_head, predict_stored
from mpm.errors import InputError
from mpm.models.backbone import load_backbone, save_backbone
from mpm.models.encoder import JetEncoder

HEAD = {"dim": 16, "heads": 2, "depth": 2, "hidden": 16}
RECIPE = {"head_lr": 1e-2, "backbone_lr": 1e-2, "weight_decay": 1e-5, "freeze_steps": 3,
          "ramp_steps": 2, "max_steps": 12, "batch_size": 16, "n_val_jets": 40,
          "n_test_jets": 60, "val_every_steps": 4, "patience": 2, "grad_clip": 1.0}  # fmt: skip


def _encoded(b=3, n=9, d=12, r=2):
    g = torch.Generator().manual_seed(0)
    mask = torch.arange(n)[None] < torch.tensor([[n], [5], [2]])[:b]
    mask = torch.cat([torch.ones(b, r, dtype=torch.bool), mask], 1)
    return torch.randn(b, r + n, d, generator=g), mask


def test_jet_classifier_is_permutation_invariant_and_ignores_padding():
    head = JetClassifier(12, 5, dim=16, heads=2).eval()
    x, mask = _encoded()
    out = head(x, mask)
    assert out.shape == (3, 5)
    perm = torch.cat([torch.arange(2), torch.randperm(9) + 2])
    torch.testing.assert_close(head(x[:, perm], mask[:, perm]), out, atol=1e-5, rtol=1e-5)
    noisy = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    torch.testing.assert_close(head(noisy, mask), out, atol=1e-5, rtol=1e-5)


def test_vertex_scores_are_symmetric_and_track_heads_equivariant():
    x, mask = _encoded()
    edges = VertexFinder(12, n_registers=2, hidden=8)(x, mask)
    assert edges.shape == (3, 9, 9)
    torch.testing.assert_close(edges, edges.transpose(1, 2))
    tracks = TrackClassifier(12, n_registers=2, n_classes=4, hidden=8)
    perm = torch.randperm(9)
    order = torch.cat([torch.arange(2), perm + 2])
    torch.testing.assert_close(tracks(x[:, order], mask)[:, :], tracks(x, mask)[:, perm])
    assert tracks(x, mask).shape == (3, 9, 4)


def test_pair_mask_counts_each_pair_of_real_tracks_once():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    pairs = pair_mask(mask)
    assert pairs.sum(dim=(1, 2)).tolist() == [3, 0]  # 3 choose 2; a one-track jet has none
    assert not (pairs & pairs.transpose(1, 2)).any()


def test_backbone_lr_is_zero_while_frozen_then_ramps():
    factors = [backbone_lr_factor(s, freeze_steps=3, ramp_steps=4) for s in range(9)]
    assert factors == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]


@pytest.mark.parametrize("mode", ["finetuned", "frozen"])
def test_backbone_is_held_then_trained_unless_frozen(mode):
    torch.manual_seed(0)
    encoder = JetEncoder(dim=12, depth=1, heads=2, registers=2)
    module = FinetuneModule(encoder, "jetclass", mode, HEAD, RECIPE)
    optimizer = module.configure_optimizers()
    opt, sched = optimizer["optimizer"], optimizer["lr_scheduler"]["scheduler"]
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(6)[None] < torch.tensor([[6], [3]])
    batch = {"csts": torch.randn(2, 6, 7, generator=g), "csts_id": torch.zeros(2, 6).long(),
             "mask": mask, "labels": torch.tensor([1, 7])}  # fmt: skip
    start = {k: v.clone() for k, v in encoder.state_dict().items()}
    changed = []
    for _ in range(6):
        loss = module.loss(module(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        changed.append(any(not torch.equal(v, start[k]) for k, v in encoder.state_dict().items()))
    held = RECIPE["freeze_steps"]
    assert not any(changed[:held])
    assert all(changed[held:]) == (mode == "finetuned") and any(changed) == (mode == "finetuned")


def test_a_cwola_run_with_too_few_background_test_jets_stops_before_training(jetclass, tmp_path):
    root, params = jetclass
    data_dir = tmp_path / "cwola"
    build_cwola(root / "jetclass", data_dir, n_signal=20, n_background=None, val_fraction=0.25,
                n_test_per_class=30, seed=0, min_background_at_fpr=0.3)  # fmt: skip
    params = {**params, "finetune": {"head": HEAD, "recipe": {**RECIPE, "n_test_jets": 20}}}
    cfg = {"dim": 12, "depth": 1, "heads": 2, "registers": 2}
    save_backbone(JetEncoder(**cfg), cfg, {"backbone": "random", "steps": 0}, tmp_path / "b.pt")
    with pytest.raises(InputError, match=r"'finetune\.recipe\.n_test_jets' leaves \d+ QCD"):
        finetune("cwola", tmp_path / "b.pt", "finetuned", None, 0, params, data_dir,
                 root / "pre.joblib", tmp_path / "run")  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", ["jetclass", "cwola", "btag", "vertex", "track"])
def test_tiny_finetuning_run_of_every_task_kind(task, jetclass, btag, tmp_path):
    root, params = jetclass
    data_dir, pre = (root / "jetclass", root / "pre.joblib") if task == "jetclass" else btag
    size = 80
    if task == "cwola":
        data_dir, size = tmp_path / "cwola", None
        build_cwola(root / "jetclass", data_dir, n_signal=20, n_background=None,
                    val_fraction=0.25, n_test_per_class=30, seed=0,
                    min_background_at_fpr=0.3)  # fmt: skip
    params = {**params, "finetune": {"head": HEAD, "recipe": RECIPE}}
    backbone = tmp_path / "b.pt"
    torch.manual_seed(0)
    cfg = {"dim": 12, "depth": 1, "heads": 2, "registers": 2}
    save_backbone(JetEncoder(**cfg), cfg, {"backbone": "random", "steps": 0}, backbone)
    out = tmp_path / "run"
    summary = finetune(task, backbone, "finetuned", size, 3, params, data_dir, pre, out)
    assert json.loads((out / "metrics.json").read_text()) == summary
    assert summary["backbone"] == "random" and 0 < summary["steps"] <= RECIPE["max_steps"]
    table = pd.read_csv(out / "predictions.csv")
    if task == "cwola":  # 30 + 30 + 20 mixed jets less a validation quarter of each (8, 8, 5)
        assert summary["n_signal"] == 20 and summary["n_train"] == 59 and len(table) == 60
        assert (summary["n_signal_train"], summary["n_signal_val"]) == (15, 5)
        assert summary["n_background_test"] == 30 and summary["sic_at_fpr_1pct_err"] > 0
        assert summary["sic_at_fpr_1pct"] >= 0 and 0 <= summary["auc"] <= 1
    elif task in ("jetclass", "btag"):
        assert len(table) == RECIPE["n_test_jets"] and 0 <= summary["accuracy"] <= 1
        probs = table.filter(like="p").to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-3)
    elif task == "vertex":
        assert len(table) == RECIPE["n_test_jets"] and -1 <= summary["ari"] <= 1
        assert (table["n_secondary_vertices"] <= table["n_tracks"]).all()
    else:
        assert 0 <= summary["balanced_accuracy"] <= 1 and table["origin"].between(0, 3).all()
    again = finetune(task, backbone, "finetuned", size, 3, params, data_dir, pre, tmp_path / "b")
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in summary.items() if k != "seconds"
    }  # the same seed, the same metrics on CPU


def _backbone(path, features="all"):
    torch.manual_seed(0)
    cfg = {"dim": 12, "depth": 1, "heads": 2, "registers": 2, "features": features}
    save_backbone(JetEncoder(**cfg), cfg, {"backbone": "random", "steps": 0}, path)
    return path


def test_stored_outputs_are_the_encoders_on_their_chunks_noise_whatever_else_is_stored(
    jetclass, tmp_path
):
    root, _ = jetclass
    path, pre = root / "jetclass/train.h5", root / "pre.joblib"
    encoder, _ = load_backbone(_backbone(tmp_path / "b.pt"))
    rows = np.array([3, 7, 40])
    alone = StoredOutputs(encoder, path, pre, rows, seed=5)
    among = StoredOutputs(encoder, path, pre, np.arange(60), seed=5)
    with h5py.File(path) as file:  # the contract: chunk 0 preprocessed with rng([seed, 0])
        mask = file[schema.H5_MASK][:CHUNK_JETS].astype(bool)
        ids = file[schema.H5_IDS][:CHUNK_JETS].astype(np.int64)
        csts = load_preprocessor(pre)(file[schema.H5_CONSTITUENTS][:CHUNK_JETS], ids, mask,
                                      np.random.default_rng([5, 0]))  # fmt: skip
    width = int(mask[rows].sum(1).max())  # the loader trims a batch to its longest jet
    with torch.no_grad():
        expected, full_mask = encoder(*(torch.from_numpy(a[rows][:, :width])
                                        for a in (csts, ids, mask)))  # fmt: skip
    for stored in (alone, among):
        out, out_mask = stored(torch.from_numpy(rows), torch.from_numpy(mask[rows][:, :width]))
        assert torch.equal(out_mask, full_mask)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="no stored outputs"):
        alone(torch.tensor([4]), torch.from_numpy(mask[[4]]))


def test_a_frozen_run_on_stored_outputs_is_the_run_on_the_frozen_encoder(jetclass, tmp_path):
    """Kinematic features only: no preprocessing noise, so the stored outputs are exactly what
    the frozen encoder gives at every step."""
    root, params = jetclass
    data_dir, pre = root / "jetclass", root / "pre.joblib"
    params = {**params, "finetune": {"head": HEAD, "recipe": RECIPE}}
    encoder, _ = load_backbone(_backbone(tmp_path / "b.pt", features="kinematic"))
    stored = StoredEncoder(encoder, stored_outputs(encoder, data_dir, pre, RECIPE, [80], [3],
                                                   params["seed"]))
    on_stored, table = train_and_test("jetclass", stored, "frozen", 80, 3, params, data_dir, pre)
    on_encoder, expected = train_and_test("jetclass", encoder, "frozen", 80, 3, params, data_dir,
                                          pre)  # fmt: skip
    assert on_stored["steps"] == on_encoder["steps"] and on_stored["n_train"] == 80
    assert on_stored["best_val_loss"] == pytest.approx(on_encoder["best_val_loss"], rel=1e-4)
    np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), atol=1e-3)


@pytest.mark.parametrize("task", ["jetclass", "vertex"])
def test_the_plain_loop_on_stored_outputs_is_the_lightning_run_early_stopping_included(
    task, jetclass, btag, tmp_path
):
    """The frozen runs' loop (no Lightning) against Lightning's on the same stored outputs:
    the same steps, early stop, best validation loss and best head's predictions."""
    root, params = jetclass
    data_dir, pre = (root / "jetclass", root / "pre.joblib") if task == "jetclass" else btag
    # a head rate that overshoots: validation stops improving and the run stops early
    recipe = {**RECIPE, "head_lr": 0.3, "max_steps": 60, "val_every_steps": 2, "patience": 2}
    encoder, _ = load_backbone(_backbone(tmp_path / "b.pt"))
    outputs = stored_outputs(encoder, data_dir, pre, recipe, [80], [3], params["seed"])
    runs = []
    for fit in ("plain", "lightning"):
        torch.manual_seed(0)
        module = FinetuneModule(StoredEncoder(encoder, outputs), task, "frozen", HEAD, recipe)
        data = JetDataModule(data_dir, pre, batch_size=16, n_train=80, n_val=40, seed=3,
                             features=False)  # fmt: skip
        test = JetDataset(data_dir / "test.h5", pre, batch_size=16, n_jets=60,
                          seed=params["seed"], shuffle=False, features=False)  # fmt: skip
        if fit == "plain":
            data.setup()
            loss, steps = fit_stored_head(module, data.train_dataloader(), data.val_dataloader())
            predicted = predict_stored(module, make_loader(test, 0))
        else:
            loss, steps, predicted = fit_with_lightning(module, data, test, recipe, params, 0)
        runs.append((loss, steps, predicted))
    (plain_loss, plain_steps, plain), (loss, steps, expected) = runs
    assert plain_steps == steps < recipe["max_steps"]
    assert plain_loss == pytest.approx(loss, rel=1e-5)
    assert len(plain) == len(expected)
    for got, want in zip(plain, expected):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)


def test_frozen_runs_whose_stored_outputs_do_not_fit_in_memory_run_the_backbone(
    jetclass, tmp_path, monkeypatch
):
    """At the paper's sizes (100M jets x 5 seeds) the stored outputs would take petabytes:
    those runs train on the frozen backbone itself, with the same results (kinematic
    features: no preprocessing noise, so stored and live outputs are equal)."""
    import mpm.downstream.run as run

    root, params = jetclass
    data_dir, pre = root / "jetclass", root / "pre.joblib"
    grid = {"backbones": ["random"], "modes": ["frozen"], "seeds": [0], "cwola_signal": [],
            "sizes": {"jetclass": [40, 80]}, "finetuned_sizes": {"jetclass": None}}  # fmt: skip
    params = {**params, "finetune": {"head": HEAD, "recipe": RECIPE, "grid": grid}}
    backbone = _backbone(tmp_path / "random.pt", features="kinematic")
    stores = []
    store = run.stored_outputs
    monkeypatch.setattr(run, "stored_outputs", lambda *a: stores.append(a) or store(*a))
    stored = run_grid(["jetclass"], backbone, params, data_dir, pre, [tmp_path / "stored"])
    assert len(stores) == 1  # the tiny grid fits: one store for both sizes
    monkeypatch.setattr(run, "memory_budget", lambda: 0)
    live = run_grid(["jetclass"], backbone, params, data_dir, pre, [tmp_path / "live"])
    assert len(stores) == 1
    for a, b in zip(stored, live):
        assert (a["n_train"], a["steps"]) == (b["n_train"], b["steps"])
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.02)
        assert a["best_val_loss"] == pytest.approx(b["best_val_loss"], rel=1e-4)


def test_a_backbones_grid_is_its_single_runs_and_writes_all_or_nothing(jetclass, tmp_path):
    root, params = jetclass
    data_dir, pre = root / "jetclass", root / "pre.joblib"
    grid = {"backbones": ["random"], "modes": ["finetuned", "frozen"], "seeds": [0, 1],
            "sizes": {"jetclass": [40, 80]}, "cwola_signal": [],
            "finetuned_sizes": {"jetclass": [80]}}  # fmt: skip
    params = {**params, "finetune": {"head": HEAD, "recipe": RECIPE, "grid": grid}}
    backbone = _backbone(tmp_path / "random.pt")
    runs = run_grid(["jetclass"], backbone, params, data_dir, pre, [tmp_path / "grid"])
    expected = [("finetuned", 80, s) for s in (0, 1)] + [("frozen", n, s) for n in (40, 80)
                                                         for s in (0, 1)]  # fmt: skip
    assert [(r["mode"], r["n_train"], r["seed"]) for r in runs] == expected
    assert sorted(p.name for p in (tmp_path / "grid").iterdir()) == sorted(
        run_name(*run) for run in expected)
    assert all((tmp_path / "grid" / run_name(*run) / "predictions.csv").is_file()
               for run in expected)  # fmt: skip
    for mode in grid["modes"]:  # the frozen runs' outputs, stored once for all, are the same
        single = finetune("jetclass", backbone, mode, 80, 1, params, data_dir, pre,
                          tmp_path / mode)  # fmt: skip
        in_grid = json.loads((tmp_path / f"grid/{mode}-80-s1/metrics.json").read_text())
        assert {k: v for k, v in single.items() if k != "seconds"} == {
            k: v for k, v in in_grid.items() if k != "seconds"}
    grid["sizes"]["jetclass"] = [40, 10**6]  # the second size fails after the first ran
    grid["finetuned_sizes"]["jetclass"] = None
    with pytest.raises(InputError, match="asked for 1000000 jets"):
        run_grid(["jetclass"], backbone, params, data_dir, pre, [tmp_path / "failed"])
    assert not (tmp_path / "failed").exists()


def _without_seconds(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "seconds"}


def _grid_params(params: dict, **grid) -> dict:
    grid = {"backbones": ["random"], "modes": ["frozen"], "seeds": [0, 1], "cwola_signal": [],
            "finetuned_sizes": {}, **grid}  # fmt: skip
    return {**params, "finetune": {"head": HEAD, "recipe": RECIPE, "grid": grid}}


def _counting_stores(monkeypatch) -> list:
    """The files whose jets `StoredOutputs` encodes, one entry per store, from now on."""
    import mpm.downstream.run as run

    stores = []
    store = run.StoredOutputs

    def counted(encoder, path, *args, **kwargs):
        stores.append(path)
        return store(encoder, path, *args, **kwargs)

    monkeypatch.setattr(run, "StoredOutputs", counted)
    return stores


def test_btags_three_tasks_in_one_grid_store_the_outputs_once_and_are_the_tasks_alone(
    jetclass, btag, tmp_path, monkeypatch
):
    root, params = jetclass
    data_dir, pre = btag
    tasks = ["btag", "vertex", "track"]
    params = _grid_params(params, sizes={t: [40, 80] for t in tasks})
    backbone = _backbone(tmp_path / "random.pt")
    alone = [summary for t in tasks
             for summary in run_grid([t], backbone, params, data_dir, pre,
                                     [tmp_path / f"alone-{t}"])]  # fmt: skip
    stores = _counting_stores(monkeypatch)
    together = run_grid(tasks, backbone, params, data_dir, pre, [tmp_path / t for t in tasks])
    assert sorted(p.name for p in stores) == ["test.h5", "train.h5", "val.h5"]
    assert [_without_seconds(s) for s in together] == [_without_seconds(s) for s in alone]
    for task in tasks:
        assert len(list((tmp_path / task).iterdir())) == 4  # 2 sizes x 2 seeds
    params["finetune"]["grid"]["sizes"]["track"] = [40, 10**6]  # the last task fails
    with pytest.raises(InputError, match="asked for 1000000 jets"):
        run_grid(tasks, backbone, params, data_dir, pre, [tmp_path / f"failed-{t}" for t in tasks])
    assert not list(tmp_path.glob("failed-*"))  # all tasks' runs or none


def test_cwola_datasets_share_one_test_file_whose_outputs_are_stored_once(
    jetclass, tmp_path, monkeypatch
):
    root, params = jetclass
    pre = root / "pre.joblib"
    cwola = tmp_path / "cwola"
    for n_signal, seed in [(10, 0), (10, 1), (20, 0), (20, 1)]:
        build_cwola(root / "jetclass", cwola_dataset(cwola, n_signal, seed),
                    n_signal=n_signal, n_background=None, val_fraction=0.25,
                    n_test_per_class=30, seed=[params["seed"], seed],
                    min_background_at_fpr=0.3)  # fmt: skip
    tests = [h5py.File(p) for p in sorted(cwola.glob("*/test.h5"))]
    for other in tests[1:]:  # the same jets in the same order in every dataset
        for name in tests[0]:
            np.testing.assert_array_equal(other[name][:], tests[0][name][:])
    for file in tests:
        file.close()
    params = _grid_params(params, cwola_signal=[10, 20])
    params["finetune"]["grid"]["sizes"] = {}
    backbone = _backbone(tmp_path / "random.pt")
    stores = _counting_stores(monkeypatch)
    runs = run_grid(["cwola"], backbone, params, cwola, pre, [tmp_path / "runs"])
    names = [p.name for p in stores]
    assert names.count("test.h5") == 1 and names.count("train.h5") == 4  # 2 sizes x 2 seeds
    for run in runs:  # each is the run on its dataset alone
        folder = cwola_dataset(cwola, run["n_signal"], run["seed"])
        single = finetune("cwola", backbone, "frozen", None, run["seed"], params, folder, pre,
                          tmp_path / "single" / folder.name)  # fmt: skip
        assert _without_seconds(single) == _without_seconds(run)


def test_a_frozen_only_grid_runs_without_importing_lightning(jetclass, btag, tmp_path):
    """Lightning costs a process seconds to import: the frozen-only stages (most of the
    downstream ones) never import it."""
    import subprocess
    import sys

    root, params = jetclass
    data_dir, pre = btag
    params = _grid_params(params, seeds=[0], sizes={"vertex": [40]})
    (tmp_path / "params.json").write_text(json.dumps(params))
    script = f"""
import json, sys
from pathlib import Path
from mpm.downstream.grid import run_grid
params = json.loads(Path({str(tmp_path / "params.json")!r}).read_text())
run_grid(["vertex"], Path({str(_backbone(tmp_path / "random.pt"))!r}), params,
         Path({str(data_dir)!r}), Path({str(pre)!r}), [Path({str(tmp_path / "runs")!r})])
print("lightning imported:", "lightning" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert "lightning imported: False" in done.stdout
    assert (tmp_path / "runs" / "frozen-40-s0" / "metrics.json").is_file()
