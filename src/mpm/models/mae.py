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
from mpm.models.masking import compact, gather_rows


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
        visible_index, visible_mask = compact(mask & ~dropped)
        encoded, encoded_mask = self.encoder(
            gather_rows(csts, visible_index), gather_rows(ids, visible_index), visible_mask
        )
        dropped_index, dropped_mask = compact(dropped)
        b, width = dropped_index.shape
        tokens = self.mask_tokens[:width].expand(b, -1, -1)
        x = torch.cat([self.to_decoder(encoded), tokens], dim=1)
        x = self.decoder(x, torch.cat([encoded_mask, dropped_mask], dim=1))
        # compact() keeps each jet's order, so this is the order of csts[dropped].
        return x[:, -width:][dropped_mask] if width else x.new_zeros(0, x.shape[-1])
