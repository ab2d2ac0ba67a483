"""Downstream heads, the fine-tuning recipe and a tiny run of every task kind."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mpm.downstream.cwola import build_cwola
from mpm.downstream.finetune import FinetuneModule, backbone_lr_factor, pair_mask
from mpm.downstream.heads import JetClassifier, TrackClassifier, VertexFinder
from mpm.downstream.run import finetune
from mpm.errors import InputError
from mpm.models.backbone import save_backbone
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
