"""Masked-jet reconstructions and SSFM generation: the pre-trained model artifact, each
backbone's sampled reconstruction, the physics metric and the stage on real-format files."""

import numpy as np
import pytest
import torch

from conftest import REPO
from mpm.data.preprocess import load_preprocessor
from mpm.errors import InputError
from mpm.evaluation.reconstruction import (
    evaluate_generation,
    evaluate_reconstruction,
    jet_mass,
    load_masked_jets,
    reconstruction_distances,
)
from mpm.evaluation.samples import load_samples, save_samples
from mpm.models.masking import choose_dropped
from mpm.params import load_params
from mpm.plotting.reconstruction import draw_generation, draw_reconstructions
from mpm.tokenizers.kmeans import save_centroids
from mpm.training.pretrain import PretrainModule
from mpm.training.pretrained import load_pretrained, save_pretrained

BACKBONES = ("regression", "kmeans", "flow", "cfm", "ssfm")


def _module(backbone, tmp_path, features="all"):
    params = load_params(REPO / "profiles" / "smoke.yaml")
    params["model"]["encoder"]["features"] = features
    n_features = 7 if features == "all" else 3
    tokenizer = None
    if backbone == "kmeans":
        tokenizer = str(tmp_path / "kmeans.pt")
        save_centroids(np.random.default_rng(0).normal(size=(6, n_features)), tokenizer)
    torch.manual_seed(0)
    return PretrainModule(backbone, params["model"], params["pretrain"], 0.4, 30,
                          tokenizer).eval()  # fmt: skip


def _batch(b=5, n=14):
    g = torch.Generator().manual_seed(3)
    mask = torch.arange(n)[None] < torch.randint(4, n + 1, (b,), generator=g)[:, None]
    csts = torch.randn(b, n, 7, generator=g) * mask[..., None]
    ids = torch.randint(0, 8, (b, n), generator=g) * mask
    return csts, ids, mask, choose_dropped(mask, 0.4, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("features", ["all", "kinematic"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_samples_finite_reconstructions_of_the_dropped_set(
    backbone, features, tmp_path
):
    module = _module(backbone, tmp_path, features)
    csts, ids, mask, dropped = _batch()
    torch.manual_seed(1)
    x = module.reconstruct(csts, ids, mask, dropped)
    assert x.shape == (int(dropped.sum()), 7 if features == "all" else 3)
    assert torch.isfinite(x).all()
    torch.manual_seed(1)
    assert torch.equal(module.reconstruct(csts, ids, mask, dropped), x)  # seeded
    if backbone == "kmeans":  # a sampled token's features are its centroid
        centroids = module.tasks["kmeans"].tokenizer.centroids
        assert torch.cdist(x, centroids).min(1).values.max() < 1e-5


def test_vqvae_tokens_refuse_per_constituent_decoding():
    from mpm.tasks.reconstruction import TokenClassification
    from mpm.tokenizers.vqvae import VQVAE, VQVAETokenizer

    vqvae = VQVAE(dim=16, depth=1, heads=2, codebook_size=8, codebook_dim=4)
    task = TokenClassification(16, VQVAETokenizer(vqvae), 8)
    with pytest.raises(NotImplementedError, match="one constituent at a time"):
        task.sample(torch.randn(3, 16))


def test_pretrained_model_round_trip_and_errors(tmp_path):
    module = _module("kmeans", tmp_path)
    save_pretrained(module, {"steps": 7}, tmp_path / "m.pt")
    loaded, info = load_pretrained(tmp_path / "m.pt")
    assert info == {"steps": 7} and loaded.hparams.backbone == "kmeans" and not loaded.training
    for (ka, a), (kb, b) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    csts, ids, mask, dropped = _batch()
    torch.manual_seed(2)
    expected = module.reconstruct(csts, ids, mask, dropped)
    torch.manual_seed(2)
    assert torch.equal(loaded.reconstruct(csts, ids, mask, dropped), expected)
    with pytest.raises(InputError, match="missing.pt: pre-trained model file not found"):
        load_pretrained(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(InputError, match="junk.pt: not a readable pre-trained model file"):
        load_pretrained(tmp_path / "junk.pt")


def test_jet_mass_of_massless_constituents_by_hand():
    pt = np.array([[100.0, 50.0, 7.0]])
    deta = np.array([[0.1, -0.2, 3.0]])
    dphi = np.array([[0.3, -0.1, 1.0]])
    mask = np.array([[True, True, False]])  # the padded entry must not count
    # two massless particles: m^2 = 2 pT1 pT2 (cosh(d_eta) - cos(d_phi))
    expected = np.sqrt(2 * 100 * 50 * (np.cosh(0.3) - np.cos(0.4)))
    np.testing.assert_allclose(jet_mass(pt, deta, dphi, mask), [expected], rtol=1e-9)
    # only differences of angles enter: a shift of the axis leaves the mass unchanged
    np.testing.assert_allclose(jet_mass(pt, deta + 0.5, dphi - 0.7, mask), [expected], rtol=1e-9)


def test_reconstruction_distances_vanish_for_the_truth_and_grow_with_a_shift():
    truth = np.random.default_rng(0).normal(size=(500, 3))
    zero = reconstruction_distances(truth, truth)
    assert zero == {"pt": 0.0, "deta": 0.0, "dphi": 0.0, "mean": 0.0}
    shifted = reconstruction_distances(truth, truth + [0.5, 0.0, 0.0])
    assert shifted["pt"] == pytest.approx(0.5) and shifted["deta"] == 0.0


def test_reconstruction_and_generation_on_converted_jets(jetclass, tmp_path):
    root, _ = jetclass
    test_h5, pre_path = root / "jetclass" / "test.h5", root / "pre.joblib"
    jets = load_masked_jets(test_h5, pre_path, 60, 0.4, seed=5)
    again = load_masked_jets(test_h5, pre_path, 60, 0.4, seed=5)
    assert torch.equal(jets.dropped, again.dropped) and torch.equal(jets.csts, again.csts)
    n = jets.mask.sum(1)
    assert torch.equal(jets.dropped.sum(1), torch.round(0.4 * n).clamp(max=n - 1))
    preprocessor = load_preprocessor(pre_path)
    # the raw features are the file's: the preprocessed ones map back to them
    back = preprocessor.inverse(jets.csts[jets.mask].numpy())[:, :3]
    np.testing.assert_allclose(back, jets.raw[jets.mask.numpy()][:, :3], rtol=1e-3, atol=1e-3)
    ssfm = _module("ssfm", tmp_path)
    rec = evaluate_reconstruction(ssfm, jets, preprocessor, seed=1)
    assert rec.dropped.shape == (int(jets.dropped.sum()), 3) and np.isfinite(rec.dropped).all()
    assert set(rec.w1) == {"pt", "deta", "dphi", "mean"} and rec.w1["mean"] > 0
    generation = evaluate_generation(ssfm, jets, preprocessor, seed=1)
    metrics = generation["metrics"]
    assert metrics["n_jets"] == 30 and all(np.isfinite(v) for v in metrics.values())
    # whole jets of the first half's multiplicities, generated from nothing
    assert len(generation["cst_pt"]["generated"]) == int(n[:30].sum())
    assert (generation["cst_pt"]["generated"] > 0).all()
    # Saved for the notebook: the figure jets, each model's reconstruction of their dropped
    # constituents, and the generation, read back as drawn.
    save_samples(tmp_path / "samples.npz", jets, {"ssfm": rec}, 2, generation)
    loaded = load_samples(tmp_path / "samples.npz")
    assert loaded["mask"].shape == loaded["dropped"].shape == (2, jets.mask.shape[1])
    n_dropped = int(jets.dropped[:2].sum())
    np.testing.assert_array_equal(loaded["reconstructions"]["ssfm"], rec.dropped[:n_dropped])
    np.testing.assert_array_equal(loaded["raw"], jets.raw[:2, :, :3])
    np.testing.assert_array_equal(loaded["generation"]["cst_pt"]["generated"],
                                  generation["cst_pt"]["generated"])  # fmt: skip
    fig = draw_reconstructions(loaded)
    assert len(fig.axes) == 2 * 3
    assert len(draw_generation(loaded["generation"]).axes) == 2
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz: not a reconstruction samples file"):
        load_samples(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="none.npz: not found"):
        load_samples(tmp_path / "none.npz")
