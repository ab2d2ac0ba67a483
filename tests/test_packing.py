"""Packed jets: the packing helpers, block-diagonal attention on every path it can take, and
every model pass on a packed batch equal (outputs and gradients, fp32) to each jet run alone,
without any padding, including jets of one constituent and the registers."""

import pytest
import torch
import torch.nn.functional as F

from mpm.downstream.heads import JetClassifier
from mpm.models import layers
from mpm.models.bert import BertStyleModel
from mpm.models.encoder import JetEncoder
from mpm.models.layers import Transformer, cross_attention, self_attention
from mpm.models.mae import MaskedAutoencoder
from mpm.models.masking import choose_dropped
from mpm.models.packing import concat_jets, pack, packing_of, padded_groups, rank_in_jet, unpack
from mpm.models.ssfm import SetToSetFlowMatching


@pytest.fixture(autouse=True)
def _groups_of_several_jets(monkeypatch):
    # the batches here have a handful of jets: two groups make each hold jets of other lengths
    monkeypatch.setattr(layers, "ATTENTION_GROUPS", 2)


def test_packing_of_places_every_token():
    p = packing_of(torch.tensor([2, 0, 3]))
    assert p.offsets.tolist() == [0, 2, 2, 5] and p.offsets.dtype == torch.int32
    assert p.max_len == 3 and p.n_tokens == 5 and p.jet.tolist() == [0, 0, 2, 2, 2]
    assert p.slot.tolist() == [0, 1, 6, 7, 8]
    assert p.padding_mask().tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]


def test_pack_and_unpack_round_trip():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    x = torch.randn(3, 4, 5) * mask[..., None]
    tokens, p = pack(x, mask)
    assert tokens.shape == (7, 5)
    assert torch.equal(unpack(tokens, p), x)
    assert torch.equal(rank_in_jet(mask), torch.tensor([0, 1, 0, 1, 2, 3, 0]))


def test_concat_jets_is_a_per_jet_concatenation():
    a_len, b_len = torch.tensor([1, 2, 0]), torch.tensor([3, 0, 2])
    a, b = torch.arange(3.0)[:, None], 10 + torch.arange(5.0)[:, None]
    tokens, p, (at_a, at_b) = concat_jets((a, a_len), (b, b_len))
    assert tokens[:, 0].tolist() == [0, 10, 11, 12, 1, 2, 13, 14]
    assert p.lengths.tolist() == [4, 2, 2]
    assert torch.equal(tokens[at_a], a) and torch.equal(tokens[at_b], b)


def test_padded_groups_sort_jets_by_length_and_pad_each_group_to_its_longest():
    lengths = torch.tensor([5, 1, 9, 2, 8, 0])
    p = packing_of(lengths)
    groups = padded_groups(p, p, 3)
    # sorted by length: (0, 1), (2, 5), (8, 9)
    assert groups.sizes == [(2, 1, 1), (2, 5, 5), (2, 9, 9)]
    assert [m.sum(1).tolist() for m in groups.key_masks] == [[0, 1], [2, 5], [8, 9]]
    # every token has its own place, inside its group's stretch of the flat buffer
    assert len(set(groups.q_slot.tolist())) == p.n_tokens and int(groups.q_slot.max()) < 2 + 10 + 18
    # one group: every jet in order, padded to the longest (the plain padded layout)
    one = padded_groups(p, p, 1)
    assert one.sizes == [(6, 9, 9)] and torch.equal(one.q_slot, p.slot)


def _lengths():
    return torch.tensor([1, 7, 3, 1, 12, 5])


def _per_jet_attention(q, k, v, q_packing, kv_packing):
    """Reference: each jet's queries over its own keys, one jet at a time, no padding."""
    out = []
    for j in range(q_packing.n_jets):
        qs = slice(int(q_packing.offsets[j]), int(q_packing.offsets[j + 1]))
        ks = slice(int(kv_packing.offsets[j]), int(kv_packing.offsets[j + 1]))
        qj, kj, vj = (t.transpose(0, 1)[None] for t in (q[qs], k[ks], v[ks]))
        out.append(F.scaled_dot_product_attention(qj, kj, vj)[0].transpose(0, 1))
    return torch.cat(out)


def _varlen_stand_in(calls):
    """CPU stand-in for torch's CUDA varlen_attn, with its signature and semantics."""

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k):
        assert cu_q.dtype == cu_k.dtype == torch.int32
        calls.append((max_q, max_k))
        return _per_jet_attention(q, k, v, *(packing_of(torch.diff(c)) for c in (cu_q, cu_k)))

    return varlen


@pytest.mark.parametrize("path", ["groups", "padded", "varlen"])
def test_block_diagonal_attention_equals_each_jet_alone(path, monkeypatch):
    calls = []
    if path == "padded":  # one jet per row, padded to the longest
        monkeypatch.setattr(layers, "_attention", {"layout": "padded"})
    if path == "varlen":  # the CUDA branch, its arguments checked on the CPU
        monkeypatch.setattr(layers, "_varlen_kernel", lambda x: True)
        monkeypatch.setattr(layers, "varlen_attn", _varlen_stand_in(calls))
    torch.manual_seed(0)
    packing = packing_of(_lengths())
    qkv = torch.randn(packing.n_tokens, 3, 2, 8, requires_grad=True)
    out = self_attention(qkv, packing)
    expected = _per_jet_attention(*qkv.unbind(1), packing, packing)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, qkv, grad)
    (g_ref,) = torch.autograd.grad(expected, qkv, grad)
    torch.testing.assert_close(g, g_ref)
    # cross-attention: queries of other lengths (none at all for some jets) over the jets
    q_packing = packing_of(torch.tensor([2, 0, 4, 1, 0, 3]))
    q = torch.randn(q_packing.n_tokens, 2, 8)
    kv = qkv[:, 1:].detach()
    expected = _per_jet_attention(q, *kv.unbind(1), q_packing, packing)
    torch.testing.assert_close(cross_attention(q, kv, q_packing, packing), expected)
    if path == "varlen":
        assert calls == [(12, 12), (4, 12)]


@pytest.mark.skipif(not (torch.cuda.is_available() and layers.varlen_attn is not None),
                    reason="the varlen kernel needs CUDA (bench/gpu_check.py)")  # fmt: skip
def test_the_cuda_varlen_kernel_in_bf16_equals_each_jet_alone_in_fp32():
    torch.manual_seed(0)
    lengths = torch.tensor([1, 70, 3, 128, 12, 0, 5])
    packing = packing_of(lengths.cuda())
    qkv = torch.randn(packing.n_tokens, 3, 8, 64, device="cuda")
    expected = _per_jet_attention(*qkv.unbind(1), packing, packing)
    half = qkv.bfloat16().requires_grad_()
    out = self_attention(half, packing)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert torch.isfinite(half.grad).all()


def _jets(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(lengths.max())
    mask = torch.arange(n)[None] < lengths[:, None]
    csts = torch.randn(len(lengths), n, 7, generator=g) * mask[..., None]
    ids = torch.randint(0, 8, (len(lengths), n), generator=g) * mask
    return csts, ids, mask


def _assert_batch_equals_alone(module, run, n_jets):
    """`run(jets)` -> output rows of the jets `jets` (a slice); the batched outputs equal
    the jets' outputs run alone, and so do the gradients of a weighted sum of them."""
    batched = run(slice(None))
    weights = torch.randn_like(batched)
    grads = torch.autograd.grad((batched * weights).sum(), list(module.parameters()),
                                allow_unused=True)  # fmt: skip
    alone = [run(slice(j, j + 1)) for j in range(n_jets)]
    torch.testing.assert_close(torch.cat(alone), batched, atol=1e-5, rtol=1e-4)
    loss_alone = (torch.cat(alone) * weights).sum()
    grads_alone = torch.autograd.grad(loss_alone, list(module.parameters()), allow_unused=True)
    for g, g_alone in zip(grads, grads_alone):
        # sums over the jets in another order: a float tolerance of their scale
        if g is not None and g.numel():
            torch.testing.assert_close(g, g_alone, atol=1e-4 * float(g.abs().max()), rtol=1e-3)


@pytest.mark.parametrize("layer", ["prenorm", "normformer"])
def test_a_transformer_on_packed_jets_equals_each_jet_alone(layer):
    torch.manual_seed(0)
    model = Transformer(16, depth=2, heads=4, layer=layer, layer_scale_init=0.5)
    lengths = _lengths()
    x = torch.randn(int(lengths.sum()), 16)
    ends = torch.cumsum(lengths, 0)

    def run(jets):
        chosen = torch.arange(len(lengths))[jets]
        rows = torch.cat([torch.arange(ends[j] - lengths[j], ends[j]) for j in chosen])
        return model(x[rows], packing_of(lengths[jets]))

    _assert_batch_equals_alone(model, run, len(lengths))


def _encoder(layer="prenorm", registers=3):
    torch.manual_seed(0)
    return JetEncoder(32, 2, 4, registers, layer=layer, layer_scale_init=0.5)


@pytest.mark.parametrize("layer", ["prenorm", "normformer"])
@pytest.mark.parametrize("registers", [0, 3])
def test_the_encoder_on_packed_jets_equals_each_jet_alone(layer, registers):
    encoder = _encoder(layer, registers)
    csts, ids, mask = _jets(_lengths())

    def run(jets):
        out, out_mask = encoder(csts[jets], ids[jets], mask[jets])
        return out[out_mask]

    _assert_batch_equals_alone(encoder, run, len(mask))


def _dropped(mask):
    return choose_dropped(mask, 0.4, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", ["mae", "mae-normformer", "bert"])
def test_pre_training_passes_on_packed_jets_equal_each_jet_alone(variant):
    layer = "normformer" if variant.endswith("normformer") else "prenorm"
    encoder = _encoder(layer)
    if variant == "bert":
        model = BertStyleModel(encoder, 16, 12)
    else:
        model = MaskedAutoencoder(encoder, 16, 2, 2, 12, layer=layer, layer_scale_init=0.5)
    csts, ids, mask = _jets(_lengths())
    dropped = _dropped(mask)
    assert dropped[mask.sum(1) == 1].sum() == 0 and dropped.any()  # one-constituent jets too

    def run(jets):
        return model(csts[jets], ids[jets], mask[jets], dropped[jets])

    _assert_batch_equals_alone(model, run, len(mask))


def test_the_ssfm_decoder_on_packed_jets_equals_each_jet_alone():
    torch.manual_seed(0)
    model = SetToSetFlowMatching(_encoder(), dim=16, depth=2, heads=2)
    for p in model.parameters():  # leave the adaLN-Zero start, so every path is exercised
        p.data += 0.05 * torch.randn_like(p)
    csts, ids, mask = _jets(_lengths())
    dropped = _dropped(mask)
    x_t = torch.randn(int(dropped.sum()), 7)
    t = torch.rand(len(mask))
    row_jet = dropped.nonzero()[:, 0]

    def run(jets):
        context, context_packing = model.context(csts[jets], ids[jets], mask[jets], dropped[jets])
        chosen = torch.isin(row_jet, torch.arange(len(mask))[jets])
        packing = packing_of(dropped[jets].sum(1))
        return model.decode(x_t[chosen], packing, t[jets], context, context_packing)

    _assert_batch_equals_alone(model, run, len(mask))


def test_the_jet_classifier_on_packed_jets_equals_each_jet_alone():
    torch.manual_seed(0)
    head = JetClassifier(32, 5, dim=16, heads=2)
    lengths = _lengths() + 3  # registers
    mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]
    encoded = torch.randn(*mask.shape, 32) * mask[..., None]
    _assert_batch_equals_alone(head, lambda jets: head(encoded[jets], mask[jets]), len(mask))
