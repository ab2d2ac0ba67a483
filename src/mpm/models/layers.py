"""Transformer building blocks: pre-norm layers with SwiGLU, LayerScale and attention
(MPMv2), and the NormFormer layers of MPMv1 for the Table 1 ablation.

Everything works on packed jets (`mpm.models.packing`): tokens [T, D] of all jets end to end,
so projections, norms and feed-forwards never see padding. Attention is block-diagonal over
the jets: on CUDA in half precision the variable-length flash kernel (`varlen_attn`) runs
on the packed tokens directly; elsewhere (CPU, fp32: no variable-length kernel exists, and
FlexAttention has no CPU backward) the tokens are laid out padded for SDPA inside the
attention only. No positional encoding anywhere: every block is permutation equivariant.
"""

import torch
import torch.nn.functional as F
from torch import nn

from mpm.models.packing import Packing, unpack

try:  # the CUDA variable-length attention kernel (PyTorch >= 2.9)
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None

LAYER_SCALE_INIT = 1e-3


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _varlen_kernel(x: torch.Tensor) -> bool:
    """The variable-length flash kernel runs on CUDA in half precision (bf16 autocast)."""
    return varlen_attn is not None and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16)


def _padded_sdpa(q, k, v, q_packing: Packing, kv_packing: Packing) -> torch.Tensor:
    """SDPA of padded q [B, H, Nq, Dh] over k, v [B, H, Nk, Dh] -> packed [Tq, H, Dh]."""
    # a jet without keys has no queries either; letting it see its padding avoids NaNs
    key_mask = kv_packing.padding_mask() | (kv_packing.lengths == 0)[:, None]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    b, h, n, d = y.shape
    return y.transpose(1, 2).reshape(b * n, h, d).index_select(0, q_packing.slot)


def self_attention(qkv: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Block-diagonal self-attention of packed qkv [T, 3, H, Dh] -> [T, H, Dh]: each jet's
    elements attend to their own jet only."""
    if _varlen_kernel(qkv):
        q, k, v = qkv.unbind(1)
        n = packing.max_len
        return varlen_attn(q, k, v, packing.offsets, packing.offsets, n, n)
    q, k, v = unpack(qkv, packing).permute(2, 0, 3, 1, 4)
    return _padded_sdpa(q, k, v, packing, packing)


def cross_attention(q, kv, q_packing: Packing, kv_packing: Packing) -> torch.Tensor:
    """Packed queries q [Tq, H, Dh] of each jet over that jet's packed keys and values
    kv [Tk, 2, H, Dh] -> [Tq, H, Dh]."""
    if _varlen_kernel(q):
        k, v = kv.unbind(1)
        return varlen_attn(q, k, v, q_packing.offsets, kv_packing.offsets, q_packing.max_len,
                           kv_packing.max_len)  # fmt: skip
    k, v = unpack(kv, kv_packing).permute(2, 0, 3, 1, 4)
    return _padded_sdpa(unpack(q, q_packing).transpose(1, 2), k, v, q_packing, kv_packing)


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
        tokens = tokens + self.scale_attn(self.attn(self.norm_attn(tokens), packing))
        return tokens + self.scale_ff(self.ff(self.norm_ff(tokens)))


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
