"""The jet encoder (the backbone every downstream task loads)."""

import torch
from torch import nn

from mpm.data import schema
from mpm.models.layers import Transformer


class JetEncoder(nn.Module):
    """Embeds constituents (Linear on the 7 continuous features + Embedding of the 8 particle
    IDs, summed), prepends learned registers and runs a pre-norm transformer. No positional
    encoding: outputs are permutation equivariant in the constituents."""

    def __init__(self, dim: int, depth: int, heads: int, registers: int):
        super().__init__()
        self.dim = dim
        self.n_registers = registers
        self.embed_features = nn.Linear(len(schema.CONTINUOUS_FEATURES), dim)
        self.embed_ids = nn.Embedding(len(schema.PARTICLE_IDS), dim)
        self.registers = nn.Parameter(torch.randn(registers, dim) * 0.02)
        self.transformer = Transformer(dim, depth, heads)

    def embed(self, csts: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """[B, N, 7], [B, N] -> constituent embeddings [B, N, dim]."""
        return self.embed_features(csts) + self.embed_ids(ids)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [B, N, dim] -> (outputs [B, R + N, dim], mask [B, R + N]); the first R
        outputs are the registers."""
        b = x.shape[0]
        x = torch.cat([self.registers.expand(b, -1, -1).to(x.dtype), x], dim=1)
        mask = torch.cat([mask.new_ones(b, self.n_registers), mask], dim=1)
        return self.transformer(x, mask), mask

    def forward(self, csts, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N, 7], [B, N], [B, N] -> (outputs [B, R + N, dim], mask [B, R + N])."""
        return self.encode(self.embed(csts, ids), mask)
