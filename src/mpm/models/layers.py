"""Transformer building blocks: pre-norm layers with SwiGLU, LayerScale and SDPA attention
(MPMv2), and the NormFormer layers of MPMv1 for the Table 1 ablation.

Sets are batched as padded tensors [B, N, D] with a boolean `mask` [B, N] (True = real
element). Inside a `Transformer` the real elements are packed into [T, D] (T = mask.sum()), so
the per-element work (projections, feed-forward, norms) is never spent on padding; only the
attention itself runs on the padded layout, through
`torch.nn.functional.scaled_dot_product_attention` with the mask (it picks the fused kernel of
the device). No positional encoding anywhere: every block is permutation equivariant.
"""

import torch
import torch.nn.functional as F
from torch import nn

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


class Attention(nn.Module):
    """Multi-head attention; `heads` must divide `dim`."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _attend(self, q, k, v, key_mask) -> torch.Tensor:
        """[B, Nq, D], [B, Nk, D] x2, [B, Nk] -> [B, Nq, D]."""
        b, nq, d = q.shape
        q = q.view(b, nq, self.heads, -1).transpose(1, 2)
        k = k.view(b, k.shape[1], self.heads, -1).transpose(1, 2)
        v = v.view(b, v.shape[1], self.heads, -1).transpose(1, 2)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return y.transpose(1, 2).reshape(b, nq, d)

    def forward(self, x, context=None, context_mask=None) -> torch.Tensor:
        """Padded queries `x` [B, N, D] over `context` (self-attention when None), whose
        `context_mask` marks the keys that may be attended to."""
        context = x if context is None else context
        k, v = self.kv(context).chunk(2, dim=-1)
        return self.out(self._attend(self.q(x), k, v, context_mask))

    def packed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Self-attention of packed tokens [T, D] (the True entries of `mask`, row by row)."""
        qkv = torch.cat([self.q(tokens), self.kv(tokens)], dim=-1)
        padded = qkv.new_zeros(*mask.shape, qkv.shape[-1])
        padded[mask] = qkv
        q, k, v = padded.chunk(3, dim=-1)
        return self.out(self._attend(q, k, v, mask)[mask])


class TransformerLayer(nn.Module):
    """Pre-norm self-attention + SwiGLU feed-forward, LayerScale on both residual branches;
    works on packed tokens [T, D] with the [B, N] mask that places them."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 2,
                 layer_scale_init: float = LAYER_SCALE_INIT):  # fmt: skip
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.scale_attn = LayerScale(dim, layer_scale_init)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = SwiGLU(dim, ff_mult)
        self.scale_ff = LayerScale(dim, layer_scale_init)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.scale_attn(self.attn.packed(self.norm_attn(tokens), mask))
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

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.norm_attn_out(self.attn.packed(self.norm_attn(tokens), mask))
        return tokens + self.ff(tokens)


LAYERS = {"prenorm": TransformerLayer, "normformer": NormFormerLayer}


class Transformer(nn.Module):
    """A stack of layers (`prenorm`: MPMv2's, `normformer`: MPMv1's) with a final LayerNorm,
    over padded sets [B, N, D]; padded positions of the output are zero."""

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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        tokens = x[mask]
        for layer in self.layers:
            tokens = layer(tokens, mask)
        out = x.new_zeros(x.shape)
        out[mask] = self.norm(tokens)
        return out
