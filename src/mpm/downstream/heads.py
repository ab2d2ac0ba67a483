"""Downstream heads on the backbone's outputs (paper section 5.1 and appendix D).

All take the encoder outputs [B, R + N, D] with their mask; the first R are the registers.
"""

import torch
from torch import nn

from mpm.models.layers import Attention, SwiGLU
from mpm.models.packing import concat_jets, pack, packing_of


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers of widths `dims` with SiLU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(a, b)] + ([nn.SiLU()] if i < len(dims) - 2 else [])
    return nn.Sequential(*layers)


class ClassAttentionBlock(nn.Module):
    """Class attention (CaiT): only the class token is updated, attending to itself and every
    element (registers included); pre-norm, SwiGLU feed-forward."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = (nn.LayerNorm(dim) for _ in range(3))
        self.attn = Attention(dim, heads)
        self.ff = SwiGLU(dim)

    def forward(self, cls, x, lengths) -> torch.Tensor:
        """cls [B, D] (one per jet), x [T, D] packed elements of jets of `lengths` [B]."""
        ones = torch.ones_like(lengths)
        context, context_packing, _ = concat_jets((cls, ones), (x, lengths))
        cls = cls + self.attn(self.norm_q(cls), packing_of(ones), self.norm_kv(context),
                              context_packing)  # fmt: skip
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
        x, packing = pack(encoded, mask)
        x = self.project(x)
        cls = self.cls[0].expand(len(encoded), -1).to(x.dtype)
        for block in self.blocks:
            cls = block(cls, x, packing.lengths)
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
