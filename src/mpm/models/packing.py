"""Jets as one packed sequence: the elements of all jets of a batch laid end to end, [T, ...],
with a `Packing` that says where each jet starts (the `cu_seqlens` of variable-length
attention). The transformers work on packed tokens only, so no projection, norm or
feed-forward is ever spent on padding, and attention is block-diagonal over the jets.
"""

from typing import NamedTuple

import torch


class Packing(NamedTuple):
    """Jet `j` holds tokens `offsets[j]:offsets[j + 1]` of a packed tensor."""

    lengths: torch.Tensor  # [B] elements per jet (int64)
    offsets: torch.Tensor  # [B + 1] cumulative lengths (int32, as the varlen kernels want)
    max_len: int  # longest jet
    jet: torch.Tensor  # [T] the jet of each token
    slot: torch.Tensor  # [T] each token's place in the padded [B * max_len] layout

    @property
    def n_jets(self) -> int:
        return len(self.lengths)

    @property
    def n_tokens(self) -> int:
        return len(self.jet)

    def padding_mask(self) -> torch.Tensor:
        """[B, max_len], True at real elements."""
        positions = torch.arange(self.max_len, device=self.lengths.device)
        return positions[None] < self.lengths[:, None]


def packing_of(lengths: torch.Tensor) -> Packing:
    """The packing of jets of `lengths` [B] elements, in order."""
    lengths = lengths.long()
    ends = torch.cumsum(lengths, 0)
    n_tokens = int(ends[-1]) if len(lengths) else 0
    max_len = int(lengths.max()) if len(lengths) else 0
    offsets = torch.cat([ends.new_zeros(1), ends]).int()
    jet = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths,
                                  output_size=n_tokens)  # fmt: skip
    rank = torch.arange(n_tokens, device=lengths.device) - (ends - lengths)[jet]
    return Packing(lengths, offsets, max_len, jet, jet * max_len + rank)


def pack(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Packing]:
    """Padded x [B, N, ...] with mask [B, N] -> (tokens [T, ...] in row order, packing)."""
    return x[mask], packing_of(mask.sum(1))


def unpack(tokens: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Packed tokens [T, ...] -> padded [B, max_len, ...], zero at padding."""
    b, n = packing.n_jets, packing.max_len
    padded = tokens.new_zeros(b * n, *tokens.shape[1:])
    return padded.index_copy(0, packing.slot, tokens).view(b, n, *tokens.shape[1:])


def rank_in_jet(selected: torch.Tensor) -> torch.Tensor:
    """Each True element of `selected` [B, N]: its rank among its jet's selected ones, in
    row order (the order of `x[selected]`)."""
    return (torch.cumsum(selected, 1) - 1)[selected]


def concat_jets(*parts: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Packing, list]:
    """Per-jet concatenation of packed parts: each part is (tokens [T_i, D], lengths [B]);
    jet j of the result is part 1's jet j, then part 2's, ... Returns the tokens, their
    packing and, per part, where its tokens landed (index [T_i] into the result)."""
    lengths = torch.stack([n.long() for _, n in parts])  # [P, B]
    packing = packing_of(lengths.sum(0))
    # where each part's stretch of jet j starts in the result
    starts = packing.offsets[:-1].long() + torch.cumsum(lengths, 0) - lengths
    positions = []
    for (tokens, _), n, start in zip(parts, lengths, starts):
        own = packing_of(n)
        rank = torch.arange(len(tokens), device=n.device) - own.offsets[:-1].long()[own.jet]
        positions.append(start[own.jet] + rank)
    source = torch.empty(packing.n_tokens, dtype=torch.long, device=lengths.device)
    source[torch.cat(positions)] = torch.arange(packing.n_tokens, device=lengths.device)
    tokens = torch.cat([t for t, _ in parts]).index_select(0, source)
    return tokens, packing, positions
