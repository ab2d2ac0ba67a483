"""The MPMv2 pre-training pass (an MAE over sets, paper section 4).

Dropped constituents are removed before the encoder; the encoder outputs (registers
included) are mapped to the decoder width; the k-th dropped constituent in pT order gets the
learned mask token k (position information only among the dropped set); a smaller transformer
decoder sees both, and the task heads read its outputs at the dropped positions.
"""

import torch
from torch import nn

from mpm.models.encoder import JetEncoder
from mpm.models.layers import LAYER_SCALE_INIT, Transformer
from mpm.models.packing import concat_jets, rank_in_jet


class MaskedAutoencoder(nn.Module):
    def __init__(
        self,
        encoder: JetEncoder,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        max_constituents: int,
        layer: str = "prenorm",
        layer_scale_init: float = LAYER_SCALE_INIT,
    ):
        super().__init__()
        self.encoder = encoder
        self.to_decoder = nn.Linear(encoder.dim, decoder_dim)
        self.mask_tokens = nn.Parameter(torch.randn(max_constituents, decoder_dim) * 0.02)
        self.decoder = Transformer(decoder_dim, decoder_depth, decoder_heads, layer=layer,
                                   layer_scale_init=layer_scale_init)

    def forward(self, csts, ids, mask, dropped) -> torch.Tensor:
        """Decoder outputs at the dropped constituents [M, decoder_dim], M being the number of
        dropped constituents in the batch, in the order of `csts[dropped]`.

        `mask` [B, N] marks real constituents (pT-descending), `dropped` [B, N] the ones to
        reconstruct; only `mask & ~dropped` reach the encoder.
        """
        encoded, packing, _ = self.encoder.encode_constituents(csts, ids, mask & ~dropped)
        # the k-th dropped constituent of a jet (in row order) gets mask token k; index_select,
        # not advanced indexing: its backward adds the repeated rows in a fixed order (CPU
        # index_put accumulates with atomics across threads, so its float sums vary by run)
        tokens = self.mask_tokens.index_select(0, rank_in_jet(dropped))
        x, decoder_packing, (_, at_dropped) = concat_jets(
            (self.to_decoder(encoded), packing.lengths), (tokens, dropped.sum(1))
        )
        return self.decoder(x, decoder_packing)[at_dropped]
