"""Model building blocks, encoder and the MAE pass: shapes, set symmetries, masking."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from mpm.ablation import TABLE1_ROWS, apply_overrides
from mpm.errors import InputError
from mpm.models.encoder import JetEncoder
from mpm.models.layers import Attention, SwiGLU, Transformer
from mpm.models.mae import MaskedAutoencoder
from mpm.models.masking import choose_dropped
from mpm.models.packing import packing_of
from mpm.params import load_params
from mpm.tasks.generative import ConditionalFlow, FlowMatching, time_embedding
from mpm.tasks.reconstruction import ParticleID, Regression, TokenClassification
from mpm.tokenizers.kmeans import KMeansTokenizer
from mpm.tokenizers.vqvae import VQVAE, VQVAETokenizer, load_vqvae, save_vqvae
from mpm.training.pretrain import PretrainModule


def _batch(b=4, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(3, n + 1, (b,), generator=g)
    mask = torch.arange(n)[None] < counts[:, None]
    csts = torch.randn(b, n, 7, generator=g) * mask[..., None]
    ids = torch.randint(0, 8, (b, n), generator=g) * mask
    return csts, ids, mask


def test_layer_shapes():
    x = torch.randn(9, 16)
    packing, context_packing = packing_of(torch.tensor([4, 5])), packing_of(torch.tensor([3, 4]))
    assert SwiGLU(16).proj_in.out_features == 64 and SwiGLU(16)(x).shape == x.shape
    assert Attention(16, 4)(x, packing).shape == x.shape
    assert Attention(16, 4)(x, packing, torch.randn(7, 16), context_packing).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        Attention(16, 3)


def test_transformer_is_permutation_equivariant_within_jets():
    torch.manual_seed(0)
    model = Transformer(16, depth=2, heads=4).eval()
    packing = packing_of(torch.tensor([4, 6, 2]))
    x = torch.randn(12, 16)
    out = model(x, packing)
    # shuffle the tokens of every jet among themselves
    perm = torch.cat([torch.randperm(n) + o for n, o in zip([4, 6, 2], [0, 4, 10])])
    torch.testing.assert_close(model(x[perm], packing), out[perm])
    # ... and a token of one jet never sees another jet
    moved = x.clone()
    moved[4:10] += 5
    changed = (model(moved, packing) - out).abs().sum(1) > 1e-6
    assert changed[4:10].all() and not changed[:4].any() and not changed[10:].any()


def test_encoder_outputs_and_equivariance():
    torch.manual_seed(0)
    enc = JetEncoder(dim=32, depth=2, heads=4, registers=3).eval()
    csts, ids, mask = _batch()
    out, out_mask = enc(csts, ids, mask)
    assert out.shape == (4, 3 + 12, 32) and out_mask[:, :3].all()
    assert torch.equal(out_mask[:, 3:], mask)
    perm = torch.randperm(12)
    out_p, _ = enc(csts[:, perm], ids[:, perm], mask[:, perm])
    real = mask[:, perm]
    torch.testing.assert_close(out_p[:, 3:][real], out[:, 3:][:, perm][real])
    torch.testing.assert_close(out_p[:, :3], out[:, :3])  # registers: invariant


def test_layer_scale_init_sets_every_residual_gamma_and_mixes_constituents():
    csts, ids, mask = _batch()
    outputs = {}
    for init in (1e-3, 0.5):
        torch.manual_seed(0)
        enc = JetEncoder(dim=16, depth=2, heads=2, registers=1, layer_scale_init=init)
        gammas = [p for n, p in enc.named_parameters() if n.endswith("gamma")]
        assert len(gammas) == 4 and all(torch.all(g == init) for g in gammas)
        outputs[init] = enc(csts, ids, mask)[0][:, 1:][mask]
    # with the same weights, a larger init lets the residual branches (attention: the only
    # place constituents meet) move the outputs further from the per-constituent embedding
    torch.manual_seed(0)
    embedded = JetEncoder(dim=16, depth=0, heads=2, registers=1)(csts, ids, mask)[0][:, 1:][mask]
    moved = {k: (v - embedded).abs().mean() for k, v in outputs.items()}
    assert moved[0.5] > 10 * moved[1e-3]
    mae = MaskedAutoencoder(JetEncoder(16, 1, 2, 1), 8, 1, 2, 12, layer_scale_init=0.25)
    assert all(torch.all(p == 0.25) for n, p in mae.decoder.named_parameters() if "gamma" in n)


def test_choose_dropped_counts_and_never_padding():
    csts, ids, mask = _batch(b=64, n=30)
    g = torch.Generator().manual_seed(1)
    dropped = choose_dropped(mask, 0.4, g)
    n = mask.sum(1)
    assert torch.equal(dropped.sum(1), torch.minimum(torch.round(0.4 * n), n - 1).long())
    assert not (dropped & ~mask).any()
    again = choose_dropped(mask, 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(dropped, again)
    assert (choose_dropped(mask, 1.0).sum(1) == n - 1).all()  # one always survives


def _mae(seed=0):
    torch.manual_seed(seed)
    enc = JetEncoder(dim=32, depth=2, heads=4, registers=2)
    return MaskedAutoencoder(enc, decoder_dim=16, decoder_depth=1, decoder_heads=2,
                             max_constituents=30).eval()  # fmt: skip


def test_mae_decodes_the_dropped_constituents_in_their_order():
    model = _mae()
    csts, ids, mask = _batch()
    dropped = choose_dropped(mask, 0.4, torch.Generator().manual_seed(0))
    decoded = model(csts, ids, mask, dropped)
    assert decoded.shape == (int(dropped.sum()), 16)
    # Output k belongs to csts[dropped][k]: the rows of jet j are the ones where
    # dropped.nonzero() names jet j, and they equal the outputs of jet j passed alone.
    jet_of_row = dropped.nonzero()[:, 0]
    for j in range(len(mask)):
        alone = model(csts[j : j + 1], ids[j : j + 1], mask[j : j + 1], dropped[j : j + 1])
        torch.testing.assert_close(decoded[jet_of_row == j], alone, atol=1e-5, rtol=1e-4)


def test_dropped_constituents_never_reach_the_encoder():
    model = _mae()
    csts, ids, mask = _batch()
    dropped = choose_dropped(mask, 0.5, torch.Generator().manual_seed(2))
    decoded = model(csts, ids, mask, dropped)
    changed = torch.where(dropped[..., None], torch.randn_like(csts) * 50, csts)
    other_ids = torch.where(dropped, (ids + 3) % 8, ids)
    torch.testing.assert_close(model(changed, other_ids, mask, dropped), decoded)
    # ... while the visible ones do.
    moved = torch.where((mask & ~dropped)[..., None], csts + 1, csts)
    assert not torch.allclose(model(moved, ids, mask, dropped), decoded)


@pytest.mark.parametrize(
    "make_task",
    [
        lambda: ParticleID(16),
        lambda: Regression(16),
        lambda: TokenClassification(16, KMeansTokenizer(torch.randn(32, 7).numpy()), 32),
        lambda: TokenClassification(16, VQVAETokenizer(_vqvae(codebook_size=32)), 32),
        lambda: ConditionalFlow(16, blocks=2, hidden=16),
        lambda: FlowMatching(16, hidden=32),
    ],
    ids=["id", "regression", "kmeans", "vqvae", "flow", "cfm"],
)
def test_task_losses_fall_on_a_tiny_batch(make_task):
    torch.manual_seed(0)
    model = _mae().train()
    task = make_task()
    csts, ids, mask = _batch(b=8, n=10)
    dropped = choose_dropped(mask, 0.4, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([*model.parameters(), *task.parameters()], lr=3e-3)
    losses = []
    for _ in range(60):
        decoded = model(csts, ids, mask, dropped)
        torch.manual_seed(1)  # the same noise every step (CFM): a loss that can fall
        loss = task.loss(decoded, {"csts": csts, "csts_id": ids, "mask": mask}, dropped)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "make_task", [lambda: ConditionalFlow(16, blocks=2, hidden=16), lambda: FlowMatching(16)]
)
def test_generative_heads_sample_finite_features(make_task):
    samples = make_task().sample(torch.randn(40, 16))
    assert samples.shape == (40, 7) and torch.isfinite(samples).all()


def test_time_embedding_is_bounded_and_distinguishes_times():
    emb = time_embedding(torch.linspace(0, 1, 101))
    assert emb.shape == (101, 16) and emb.abs().max() <= 1
    assert torch.cdist(emb, emb).fill_diagonal_(9).min() > 1e-3


def test_kmeans_tokenizer_picks_the_nearest_centroid():
    centroids = torch.randn(50, 7)
    x = torch.randn(200, 7)
    expected = torch.cdist(x, centroids).argmin(1)
    assert torch.equal(KMeansTokenizer(centroids.numpy())(x), expected)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (bench/gpu_check.py)")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("tokenizer", ["kmeans", "vqvae"])
def test_token_targets_are_computed_in_fp32_under_bf16_autocast(tokenizer, device):
    # Many close centroids, as at K=16384: bf16 matmuls pick another centroid for some points.
    torch.manual_seed(0)
    if tokenizer == "kmeans":
        task = TokenClassification(16, KMeansTokenizer(torch.randn(2048, 7).numpy()), 2048)
    else:
        task = TokenClassification(16, VQVAETokenizer(_vqvae(codebook_size=256)), 256)
    task = task.to(device)
    csts, ids, mask = (t.to(device) for t in _batch(b=64, n=30))
    batch = {"csts": csts, "csts_id": ids, "mask": mask}
    dropped = mask.clone()
    expected = task.targets(batch, dropped)
    with torch.autocast(device, dtype=torch.bfloat16):
        assert torch.equal(task.targets(batch, dropped), expected)


def test_bert_style_pass_sees_mask_tokens_not_dropped_features():
    from mpm.models.bert import BertStyleModel

    torch.manual_seed(0)
    enc = JetEncoder(dim=32, depth=2, heads=4, registers=2)
    model = BertStyleModel(enc, decoder_dim=16, max_constituents=30).eval()
    csts, ids, mask = _batch()
    dropped = choose_dropped(mask, 0.4, torch.Generator().manual_seed(0))
    decoded = model(csts, ids, mask, dropped)
    assert decoded.shape == (int(dropped.sum()), 16)
    changed = torch.where(dropped[..., None], torch.randn_like(csts), csts)
    torch.testing.assert_close(model(changed, ids, mask, dropped), decoded)


def _vqvae(codebook_size=16, seed=0):
    torch.manual_seed(seed)
    vqvae = VQVAE(dim=16, depth=1, heads=2, codebook_size=codebook_size, codebook_dim=4)
    vqvae(*_batch(b=8, seed=seed)[::2])  # the first training pass initialises the codebook
    return vqvae


@pytest.mark.parametrize("chunk_points", [1, 7, 1000])
def test_kmeans_scoring_in_chunks_equals_the_whole_matmul(chunk_points, monkeypatch):
    from mpm.tokenizers import kmeans

    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(40, 7)).astype(np.float32)
    points = rng.normal(size=(300, 7)).astype(np.float32)
    distances = torch.cdist(torch.from_numpy(points), torch.from_numpy(centroids))
    nearest = distances.argmin(1)
    seen = []
    forward = kmeans.KMeansTokenizer.forward
    monkeypatch.setattr(kmeans.KMeansTokenizer, "forward",
                        lambda self, x, mask=None: seen.append(len(x)) or forward(self, x))
    error, counts = kmeans.quantisation_score(centroids, points, chunk_points)
    assert max(seen) == min(chunk_points, len(points))  # never all points x all centroids
    assert error == pytest.approx(float((distances.min(1).values ** 2).mean()), rel=1e-5)
    assert np.array_equal(counts, np.bincount(nearest.numpy(), minlength=40))


def test_kmeans_tokenizer_takes_whole_jets():
    centroids = torch.randn(20, 7)
    csts, _, mask = _batch()
    tokens = KMeansTokenizer(centroids.numpy())(csts, mask)
    assert tokens.shape == mask.shape
    assert torch.equal(tokens[mask], torch.cdist(csts[mask], centroids).argmin(1))


def test_vqvae_learns_and_its_tokens_are_in_range_and_need_context():
    torch.manual_seed(0)
    vqvae = VQVAE(dim=16, depth=1, heads=2, codebook_size=16, codebook_dim=4)
    csts, _, mask = _batch(b=16, n=10)
    opt = torch.optim.AdamW(vqvae.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = vqvae(csts, mask)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(out["reconstruction"].item())
    assert losses[-1] < 0.6 * losses[0]
    tokenizer = VQVAETokenizer(vqvae).train()  # stays frozen in a training module
    assert not tokenizer.vqvae.training
    tokens = tokenizer(csts, mask)
    assert tokens.shape == mask.shape and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < 16 and (tokens[~mask] == 0).all()
    # A constituent's token depends on the rest of its jet (the tokenizer sees whole jets)...
    others = torch.where(torch.arange(10)[None, :, None] > 0, csts * 3 + 1, csts)
    assert not torch.equal(tokenizer(others, mask)[:, 0], tokens[:, 0])
    # ... but not on the padding, and the codebook is frozen.
    padded = torch.where(mask[..., None], csts, torch.randn_like(csts) * 10)
    codebook = vqvae.quantizer.codebook.clone()
    assert torch.equal(tokenizer(padded, mask), tokens)
    assert torch.equal(vqvae.quantizer.codebook, codebook)


def test_vqvae_file_roundtrip_and_bad_files(tmp_path):
    vqvae = _vqvae().eval()
    config = dict(dim=16, depth=1, heads=2, codebook_size=16, codebook_dim=4)
    save_vqvae(vqvae, config, tmp_path / "vq.pt")
    csts, _, mask = _batch()
    loaded = load_vqvae(tmp_path / "vq.pt")
    assert torch.equal(loaded.tokenize(csts, mask), vqvae.tokenize(csts, mask))
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="bad.pt: not a VQ-VAE tokenizer file"):
        load_vqvae(tmp_path / "bad.pt")
    with pytest.raises(InputError, match="missing.pt: VQ-VAE tokenizer file not found"):
        load_vqvae(tmp_path / "missing.pt")


@pytest.mark.parametrize("row", range(len(TABLE1_ROWS)), ids=[r[0] for r in TABLE1_ROWS])
def test_every_table1_row_is_a_params_setting_that_trains(row):
    params = apply_overrides(load_params(REPO / "profiles" / "smoke.yaml"), TABLE1_ROWS[row][1])
    module = PretrainModule("regression", params["model"], params["pretrain"],
                            params["mask_rate"], max_constituents=30)  # fmt: skip
    csts, ids, mask = _batch(b=8, n=12)
    losses = module._losses({"csts": csts, "csts_id": ids, "mask": mask})
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    encoder_cfg = params["model"]["encoder"]
    assert ("id" in losses) == encoder_cfg["ids"]
    # The encoder reads only its feature set (and IDs only if asked to).
    encoder = module.encoder.eval()
    out, _ = encoder(csts, ids, mask)
    other = csts.clone()
    other[..., 3:] += 1.0  # impact-parameter features
    ignores_ips = torch.allclose(encoder(other, ids, mask)[0], out)
    assert ignores_ips == (encoder_cfg["features"] == "kinematic")
    ignores_ids = torch.allclose(encoder(csts, (ids + 1) % 8, mask)[0], out)
    assert ignores_ids == (not encoder_cfg["ids"])
    layer = type(encoder.transformer.layers[0]).__name__
    assert (
        layer
        == {"prenorm": "TransformerLayer", "normformer": "NormFormerLayer"}[encoder_cfg["layer"]]
    )


def test_table1_rows_add_one_change_each():
    settings = [dict(o.split("=") for o in overrides) for _, overrides in TABLE1_ROWS]
    assert settings[0]["model.variant"] == "bert" and settings[-1] == {}
    for before, after in zip(settings, settings[1:]):
        assert set(after) < set(before)  # each row drops overrides, i.e. adopts MPMv2 parts


def _torchpq_runs() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import torchpq  # noqa: F401
    except Exception:  # not installed, or cupy without a matching CUDA
        return False
    return True


@pytest.mark.skipif(not _torchpq_runs(), reason="torchpq needs CUDA (requirements-gpu.txt)")
def test_faiss_and_torchpq_fit_the_same_kmeans_on_toy_data():
    from mpm.tokenizers.kmeans import fit_kmeans

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 7, generator=g) * 10  # well separated: a unique optimum
    points = (centres.repeat_interleave(500, 0) + torch.randn(4000, 7, generator=g)).numpy()
    fits = [
        torch.from_numpy(fit_kmeans(points, 8, 30, seed=0, backend=backend))
        for backend in ("faiss", "torchpq")
    ]
    # The same centroids up to their order, hence the same tokens.
    match = torch.cdist(fits[0], fits[1]).argmin(1)
    assert sorted(match.tolist()) == list(range(8))
    torch.testing.assert_close(fits[1][match], fits[0], atol=0.1, rtol=0)
    x = torch.from_numpy(points)
    tokens = [KMeansTokenizer(f.numpy())(x) for f in fits]
    assert torch.equal(match[tokens[0]], tokens[1])


def _ssfm(seed=0, ids=True):
    from mpm.models.ssfm import SetToSetFlowMatching

    torch.manual_seed(seed)
    enc = JetEncoder(dim=32, depth=1, heads=4, registers=2, ids=ids)
    model = SetToSetFlowMatching(enc, dim=16, depth=2, heads=2, ids=ids, sample_steps=8)
    for p in model.parameters():  # leave the adaLN-Zero start, so every path is exercised
        p.data += 0.05 * torch.randn_like(p)
    return model.eval()


def test_ssfm_shapes_and_dropped_features_never_reach_it():
    model = _ssfm()
    csts, ids, mask = _batch()
    dropped = choose_dropped(mask, 0.5, torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    out = model(csts, ids, mask, dropped)
    m = int(dropped.sum())
    assert out["ssfm"].ndim == 0 and out["id_logits"].shape == (m, 8)
    assert torch.equal(out["ids"], ids[dropped])
    # The context is computed from the visible constituents alone.
    context, _ = model.context(csts, ids, mask, dropped)
    changed = torch.where(dropped[..., None], torch.randn_like(csts) * 50, csts)
    other_ids = torch.where(dropped, (ids + 1) % 8, ids)
    torch.testing.assert_close(model.context(changed, other_ids, mask, dropped)[0], context)


def test_ssfm_decoder_is_permutation_equivariant_in_the_generated_set():
    model = _ssfm()
    csts, ids, mask = _batch()
    dropped = choose_dropped(mask, 0.5, torch.Generator().manual_seed(0))
    context, context_packing = model.context(csts, ids, mask, dropped)
    packing = packing_of(dropped.sum(1))
    x_t = torch.randn(packing.n_tokens, 7)
    t = torch.rand(len(mask))
    out = model.decode(x_t, packing, t, context, context_packing)

    def shuffled_within_jets(p, first=0):  # a permutation of the tokens of each jet
        return torch.cat([torch.cat([torch.arange(first), torch.randperm(int(n) - first) + first])
                          + int(o) for n, o in zip(p.lengths, p.offsets)])  # fmt: skip

    perm = shuffled_within_jets(packing)
    out_p = model.decode(x_t[perm], packing, t, context, context_packing)
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-4)
    # ... and invariant to the order of the visible constituents (registers stay first).
    order = shuffled_within_jets(context_packing, first=2)
    out_v = model.decode(x_t, packing, t, context[order], context_packing)
    torch.testing.assert_close(out_v, out, atol=1e-5, rtol=1e-4)


def test_ssfm_loss_falls_on_a_tiny_batch():
    model = _ssfm().train()
    csts, ids, mask = _batch(b=8, n=10)
    dropped = choose_dropped(mask, 0.5, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        torch.manual_seed(1)  # the same t and noise every step: a loss that can fall
        out = model(csts, ids, mask, dropped)
        loss = out["ssfm"] + F.cross_entropy(out["id_logits"], out["ids"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("ids", [True, False])
def test_ssfm_samples_the_dropped_set_and_whole_jets(ids):
    model = _ssfm(ids=ids)
    csts, id_in, mask = _batch()
    dropped = choose_dropped(mask, 0.4, torch.Generator().manual_seed(0))
    x, gen_ids, set_mask = model.sample(csts, id_in, mask, dropped)
    assert torch.equal(set_mask.sum(1), dropped.sum(1)) and x.shape == (*set_mask.shape, 7)
    assert torch.isfinite(x).all() and (x[~set_mask] == 0).all()
    assert gen_ids.min() >= 0 and gen_ids.max() < 8
    # D_f = 0: nothing visible, whole jets of the given multiplicities from the registers.
    x, _, set_mask = model.sample(csts, id_in, mask, mask)
    assert torch.equal(set_mask.sum(1), mask.sum(1)) and torch.isfinite(x).all()


def test_ssfm_pretraining_module_draws_kept_fractions_in_training():
    params = load_params(REPO / "profiles" / "smoke.yaml")
    module = PretrainModule("ssfm", params["model"], params["pretrain"], params["mask_rate"],
                            max_constituents=30)  # fmt: skip
    csts, ids, mask = _batch(b=8, n=12)
    batch = {"csts": csts, "csts_id": ids, "mask": mask}
    losses = module.train()._losses(batch)
    assert set(losses) == {"ssfm", "id", "total"} and torch.isfinite(losses["total"])
    losses["total"].backward()
    assert torch.isfinite(module.eval()._losses(batch)["total"])
