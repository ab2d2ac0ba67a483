"""Downstream heads on the backbone's outputs (paper section 5.1 and appendix D).

All take the encoder outputs [B, R + N, D] with their mask; the first R are the registers.
"""

import torch
import torch.nn.functional as F
from torch import nn

from mpm.models.layers import Attention, SwiGLU


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers of widths `dims` with SiLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(a, b)] + ([nn.SiLU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers)


class ClassAttentionBlock(nn.Module):
    """Class attention (CaiT): only the class token is updated, attending to itself and every
    element (registers included); pre-norm, SwiGLU feed-forward. On padded elements: one query
    per jet is one masked attention call, cheaper than packing (a head trains on stored
    outputs in milliseconds per step, where packing's bookkeeping would dominate)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = (nn.LayerNorm(dim) for _ in range(3))
        self.attn = Attention(dim, heads)  # its q, kv and out projections
        self.ff = SwiGLU(dim)

    def forward(self, cls, x, mask) -> torch.Tensor:
        """cls [B, D] (one per jet), x [B, L, D] padded elements with their mask [B, L]."""
        (b, length, d), h = x.shape, self.attn.heads
        context = self.norm_kv(torch.cat([cls[:, None], x], 1))
        keep = torch.cat([mask.new_ones(b, 1), mask], 1)[:, None, None, :]
        q = self.attn.q(self.norm_q(cls)).view(b, h, 1, d // h)
        k, v = self.attn.kv(context).view(b, length + 1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        cls = cls + self.attn.out(y.reshape(b, d))
        return cls + self.ff(self.norm_ff(cls))


class JetClassifier(nn.Module):
    """Jet classification: class-attention pooling (`depth` blocks) + linear (paper: 2 blocks,
    width 128, 4 heads). Invariant to the order of the constituents."""

    def __init__(self, in_dim: int, n_classes: int, dim: int = 128, heads: int = 4, depth: int = 2):
        super().__init__()
        self.project = nn.Linear(in_dim, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ClassAttentionBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, n_classes)

    def forward(self, encoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> logits [B, n_classes]."""
        x = self.project(encoded)
        cls = self.cls[0].expand(len(encoded), -1).to(x.dtype)
        for block in self.blocks:
            cls = block(cls, x, mask)
        return self.out(self.norm(cls))


class VertexFinder(nn.Module):
    """Secondary-vertex finding as edge classification: a per-track MLP F and an edge MLP G
    give the logit that tracks i and j share a vertex, G(|F(z_i) - F(z_j)|), symmetric by
    construction."""

    def __init__(self, in_dim: int, n_registers: int, hidden: int = 64):
        super().__init__()
        self.n_registers = n_registers
        self.track = mlp([in_dim, hidden, hidden])
        self.edge = mlp([hidden, hidden, 1])

    def forward(self, encoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> edge logits [B, N, N] over the tracks (registers left out)."""
        f = self.track(encoded[:, self.n_registers :])
        return self.edge((f[:, :, None] - f[:, None, :]).abs())[..., 0]


class TrackClassifier(nn.Module):
    """Per-track origin: a 3-layer MLP on each track's encoder output."""

    def __init__(self, in_dim: int, n_registers: int, n_classes: int, hidden: int = 64):
        super().__init__()
        self.n_registers = n_registers
        self.net = mlp([in_dim, hidden, hidden, n_classes])

    def forward(self, encoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> logits [B, N, n_classes] over the tracks (registers left out)."""
        return self.net(encoded[:, self.n_registers :])
