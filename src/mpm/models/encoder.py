"""The jet encoder (the backbone every downstream task loads)."""

import torch
from torch import nn

from mpm.data import schema
from mpm.models.layers import LAYER_SCALE_INIT, Transformer
from mpm.models.packing import Packing, concat_jets

# Continuous features the model sees and reconstructs (indices into schema.CONTINUOUS_FEATURES):
# all 7, or MPMv1's kinematics (pT, d_eta, d_phi) for the Table 1 ablation.
FEATURE_SETS = {"all": (0, 1, 2, 3, 4, 5, 6), "kinematic": (0, 1, 2)}


def feature_index(features: str) -> list[int]:
    if features not in FEATURE_SETS:
        raise ValueError(f"feature set '{features}' is not one of {list(FEATURE_SETS)}")
    return list(FEATURE_SETS[features])


class JetEncoder(nn.Module):
    """Embeds constituents (Linear on the continuous features of `features` + Embedding of the
    8 particle IDs if `ids`, summed), prepends learned registers and runs a transformer of
    `layer` type. No positional encoding: outputs are permutation equivariant in the
    constituents. Inputs always carry all 7 features; the encoder picks its own.
    `layer_scale_init` starts the prenorm layers' residual branches small (paper: 1e-3)."""

    def __init__(self, dim: int, depth: int, heads: int, registers: int, layer: str = "prenorm",
                 features: str = "all", ids: bool = True,
                 layer_scale_init: float = LAYER_SCALE_INIT):  # fmt: skip
        super().__init__()
        self.dim = dim
        self.n_registers = registers
        self.features = feature_index(features)
        self.embed_features = nn.Linear(len(self.features), dim)
        self.embed_ids = nn.Embedding(len(schema.PARTICLE_IDS), dim) if ids else None
        self.registers = nn.Parameter(torch.randn(registers, dim) * 0.02)
        self.transformer = Transformer(dim, depth, heads, layer=layer,
                                       layer_scale_init=layer_scale_init)

    def embed(self, csts: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Features [..., 7] and IDs [...] -> constituent embeddings [..., dim]."""
        x = self.embed_features(csts[..., self.features])
        return x if self.embed_ids is None else x + self.embed_ids(ids)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, Packing,
                                                                       torch.Tensor]:  # fmt: skip
        """Packed embeddings x [T, dim] of jets of `lengths` [B] -> (outputs [B * R + T, dim]
        packed per jet as [R registers, constituents], their packing, and where each input
        token's output is [T])."""
        b = len(lengths)
        registers = self.registers.to(x.dtype).repeat(b, 1)
        tokens, packing, (_, at) = concat_jets(
            (registers, lengths.new_full((b,), self.n_registers)), (x, lengths)
        )
        return self.transformer(tokens, packing), packing, at

    def encode_constituents(self, csts, ids, selected) -> tuple[torch.Tensor, Packing,
                                                                torch.Tensor]:  # fmt: skip
        """`encode` of the `selected` [B, N] constituents of padded jets csts [B, N, 7],
        ids [B, N] (each jet's in row order)."""
        return self.encode(self.embed(csts[selected], ids[selected]), selected.sum(1))

    def forward(self, csts, ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded [B, N, 7], [B, N], [B, N] -> (outputs [B, R + N, dim], mask [B, R + N]); the
        first R outputs are the registers, padding is zero."""
        encoded, _, _ = self.encode_constituents(csts, ids, mask)
        full_mask = torch.cat([mask.new_ones(len(mask), self.n_registers), mask], dim=1)
        # the packed order (per jet: registers, then constituents in row order) is the row
        # order of full_mask
        out = encoded.new_zeros(*full_mask.shape, self.dim)
        out[full_mask] = encoded
        return out, full_mask
