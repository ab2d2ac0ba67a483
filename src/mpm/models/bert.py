"""The MPMv1 / BERT-style pre-training pass (for the Table 1 ablation).

Every constituent reaches the encoder; the dropped ones carry one identical learned mask
embedding instead of their features. A per-element MLP decodes the encoder outputs at the
dropped positions, with a learned positional encoding of each constituent's pT rank added in
the head only (the encoder stays permutation equivariant), which breaks the degeneracy of the
identical mask tokens.
"""

import torch
from torch import nn

from mpm.models.encoder import JetEncoder


class BertStyleModel(nn.Module):
    def __init__(self, encoder: JetEncoder, decoder_dim: int, max_constituents: int):
        super().__init__()
        self.encoder = encoder
        self.mask_embedding = nn.Parameter(torch.randn(encoder.dim) * 0.02)
        self.positions = nn.Embedding(max_constituents, encoder.dim)
        self.head = nn.Sequential(
            nn.Linear(encoder.dim, decoder_dim), nn.GELU(), nn.Linear(decoder_dim, decoder_dim)
        )

    def forward(self, csts, ids, mask, dropped) -> torch.Tensor:
        """Same contract as `MaskedAutoencoder.forward`."""
        x = self.encoder.embed(csts[mask], ids[mask])
        dropped_tokens = dropped[mask]
        x = torch.where(dropped_tokens[:, None], self.mask_embedding.to(x.dtype), x)
        encoded, _, at = self.encoder.encode(x, mask.sum(1))
        at_dropped = encoded[at[dropped_tokens]]
        rank = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)[dropped]
        return self.head(at_dropped + self.positions(rank))
