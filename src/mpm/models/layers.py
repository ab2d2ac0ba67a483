"""Transformer building blocks: pre-norm layers with SwiGLU, LayerScale and attention
(MPMv2), and the NormFormer layers of MPMv1 for the Table 1 ablation.

Everything works on packed jets (`mpm.models.packing`): tokens [T, D] of all jets end to end,
so projections, norms and feed-forwards never see padding. Attention is block-diagonal over
the jets: on CUDA in half precision the variable-length flash kernel (`varlen_attn`) runs
on the packed tokens directly; elsewhere (CPU, fp32: no variable-length kernel exists, and
FlexAttention has no CPU backward) the tokens are laid out for SDPA inside the attention
only, in groups of jets of similar length, each group padded to its own longest jet. No
positional encoding anywhere: every block is permutation equivariant.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from mpm.models.packing import Packing, PaddedGroups, padded_groups

try:  # the CUDA variable-length attention kernel (PyTorch >= 2.9)
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None

LAYER_SCALE_INIT = 1e-3
# Groups of jets of similar length for SDPA on padded batches (CPU; bench/bench_pretrain.py)
ATTENTION_GROUPS = 8
ATTENTION_LAYOUTS = ("packed", "padded")
_attention = {"layout": "packed"}


@contextmanager
def attention_layout(layout: str):
    """Within: attention on `packed` jets (the default: the varlen kernel where it runs, else
    padded groups of jets of similar length) or `padded` (one jet per row, padded to the
    longest: SDPA as it runs without packing, for benchmarks)."""
    if layout not in ATTENTION_LAYOUTS:
        raise ValueError(f"attention layout '{layout}' is not one of {list(ATTENTION_LAYOUTS)}")
    before, _attention["layout"] = _attention["layout"], layout
    try:
        yield
    finally:
        _attention["layout"] = before


class SwiGLU(nn.Module):
    """Feed-forward block with a SwiGLU activation; hidden width `mult` * dim."""

    def __init__(self, dim: int, mult: int = 2):
        super().__init__()
        hidden = mult * dim
        self.proj_in = nn.Linear(dim, 2 * hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(F.silu(gate) * value)


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch, initialised small (Touvron et al.)."""

    def __init__(self, dim: int, init: float = LAYER_SCALE_INIT):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual + gamma * x, in one pass."""
        return torch.addcmul(residual, x, self.gamma)


def _varlen_kernel(x: torch.Tensor) -> bool:
    """The variable-length flash kernel runs on CUDA in half precision (bf16 autocast)."""
    return (_attention["layout"] == "packed" and varlen_attn is not None and x.is_cuda
            and x.dtype in (torch.bfloat16, torch.float16))  # fmt: skip


def _groups() -> int:
    return ATTENTION_GROUPS if _attention["layout"] == "packed" else 1


def _grids(x: torch.Tensor, slot: torch.Tensor, shapes: list) -> list:
    """Packed x [T, H, Dh] -> per group of `shapes` (jets, length) [jets, H, length, Dh], zero
    at padding. (q, k and v each get their own buffer: the CPU kernel is slower on strided
    views into a joint one.)"""
    sizes = [n * length for n, length in shapes]
    flat = x.new_zeros(sum(sizes), *x.shape[1:]).index_copy(0, slot, x)
    # one split, not slices: its backward is one concatenation, not a zero buffer per group
    return [part.view(n, length, *x.shape[1:]).transpose(1, 2)
            for part, (n, length) in zip(flat.split(sizes), shapes)]  # fmt: skip


def _grouped_sdpa(q, k, v, groups: PaddedGroups) -> torch.Tensor:
    """SDPA of packed q [Tq, H, Dh] over packed k, v [Tk, H, Dh], group by group of `groups`
    -> packed [Tq, H, Dh]."""
    q_shapes = [(n, n_q) for n, n_q, _ in groups.sizes]
    k_shapes = [(n, n_k) for n, _, n_k in groups.sizes]
    outputs = []
    for q_grid, k_grid, v_grid, key_mask in zip(
        _grids(q, groups.q_slot, q_shapes), _grids(k, groups.k_slot, k_shapes),
        _grids(v, groups.k_slot, k_shapes), groups.key_masks,
    ):  # fmt: skip
        # a jet without keys has no queries either; letting it see its padding avoids NaNs
        mask = (key_mask | ~key_mask.any(1, keepdim=True))[:, None, None, :]
        y = F.scaled_dot_product_attention(q_grid, k_grid, v_grid, attn_mask=mask)
        outputs.append(y.transpose(1, 2).flatten(0, 1))
    return torch.cat(outputs).index_select(0, groups.q_slot)


def self_attention(qkv: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Block-diagonal self-attention of packed qkv [T, 3, H, Dh] -> [T, H, Dh]: each jet's
    elements attend to their own jet only."""
    q, k, v = qkv.unbind(1)
    if _varlen_kernel(qkv):
        n = packing.max_len
        return varlen_attn(q, k, v, packing.offsets, packing.offsets, n, n)
    return _grouped_sdpa(q, k, v, padded_groups(packing, packing, _groups()))


def cross_attention(q, kv, q_packing: Packing, kv_packing: Packing) -> torch.Tensor:
    """Packed queries q [Tq, H, Dh] of each jet over that jet's packed keys and values
    kv [Tk, 2, H, Dh] -> [Tq, H, Dh]."""
    k, v = kv.unbind(1)
    if _varlen_kernel(q):
        return varlen_attn(q, k, v, q_packing.offsets, kv_packing.offsets, q_packing.max_len,
                           kv_packing.max_len)  # fmt: skip
    return _grouped_sdpa(q, k, v, padded_groups(q_packing, kv_packing, _groups()))


class Attention(nn.Module):
    """Multi-head attention over packed jets; `heads` must divide `dim`."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens, packing: Packing, context=None, context_packing=None):
        """Packed tokens [T, D] of jets `packing` over the `context` tokens of the same jets
        (self-attention when None) -> [T, D]."""
        t, d = tokens.shape
        if context is None:
            # one matmul for q, k and v (the parameters stay separate, as checkpoints hold them)
            weight = torch.cat([self.q.weight, self.kv.weight])
            bias = torch.cat([self.q.bias, self.kv.bias])
            qkv = F.linear(tokens, weight, bias).view(t, 3, self.heads, d // self.heads)
            y = self_attention(qkv, packing)
        else:
            q = self.q(tokens).view(t, self.heads, d // self.heads)
            kv = self.kv(context).view(len(context), 2, self.heads, d // self.heads)
            y = cross_attention(q, kv, packing, context_packing)
        return self.out(y.reshape(t, d))


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + SwiGLU feed-forward, LayerScale on both residual branches;
    works on packed tokens [T, D]."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 2,
                 layer_scale_init: float = LAYER_SCALE_INIT):  # fmt: skip
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.scale_attn = LayerScale(dim, layer_scale_init)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = SwiGLU(dim, ff_mult)
        self.scale_ff = LayerScale(dim, layer_scale_init)

    def forward(self, tokens: torch.Tensor, packing: Packing) -> torch.Tensor:
        tokens = self.scale_attn(tokens, self.attn(self.norm_attn(tokens), packing))
        return self.scale_ff(tokens, self.ff(self.norm_ff(tokens)))


class NormFormerLayer(nn.Module):
    """MPMv1's layer (NormFormer, Shleifer et al.): pre-norm attention with a LayerNorm on its
    output, and a GELU feed-forward with a LayerNorm after the activation; no LayerScale."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 2):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm_attn_out = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, ff_mult * dim),
            nn.GELU(),
            nn.LayerNorm(ff_mult * dim),
            nn.Linear(ff_mult * dim, dim),
        )

    def forward(self, tokens: torch.Tensor, packing: Packing) -> torch.Tensor:
        tokens = tokens + self.norm_attn_out(self.attn(self.norm_attn(tokens), packing))
        return tokens + self.ff(tokens)


LAYERS = {"prenorm": TransformerLayer, "normformer": NormFormerLayer}


class Transformer(nn.Module):
    """A stack of layers (`prenorm`: MPMv2's, `normformer`: MPMv1's) with a final LayerNorm,
    over packed jets."""

    def __init__(self, dim: int, depth: int, heads: int, ff_mult: int = 2, layer="prenorm",
                 layer_scale_init: float = LAYER_SCALE_INIT):  # fmt: skip
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer type '{layer}' is not one of {list(LAYERS)}")
        # LayerScale belongs to the pre-norm layers only (MPMv1's NormFormer has none)
        extra = {"layer_scale_init": layer_scale_init} if layer == "prenorm" else {}
        self.layers = nn.ModuleList(
            LAYERS[layer](dim, heads, ff_mult, **extra) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, packing: Packing) -> torch.Tensor:
        """Packed tokens [T, D] -> [T, D]."""
        for layer in self.layers:
            tokens = layer(tokens, packing)
        return self.norm(tokens)
