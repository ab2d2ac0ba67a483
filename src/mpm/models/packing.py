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


class PaddedGroups(NamedTuple):
    """Packed queries and keys laid out for an attention kernel that wants padded batches:
    the jets in groups of similar length, each group padded to its own longest jet, all
    groups one after the other in a flat buffer."""

    q_slot: torch.Tensor  # [Tq] each query's place in the flat query buffer
    k_slot: torch.Tensor  # [Tk] each key's place in the flat key buffer
    sizes: list  # per group: (jets, query length, key length)
    key_masks: list  # per group: [jets, key length], True at real keys


def padded_groups(q: Packing, k: Packing, n_groups: int) -> PaddedGroups:
    """Jets sorted by length (queries plus keys) and cut into `n_groups` groups of as many jets
    (1: all jets in order, padded to the longest: the plain padded layout). On a CPU the
    attention kernels' cost follows the padded area (every masked pair still costs its
    exponential), which sorting cuts to near the jets' own sum of squared lengths."""
    device, b = q.lengths.device, q.n_jets
    n_groups = max(1, min(n_groups, b))
    jets = torch.arange(b, device=device)
    order = torch.argsort(q.lengths + k.lengths, stable=True) if n_groups > 1 else jets
    position = torch.empty_like(jets).index_copy_(0, order, jets)  # each jet's sorted place
    group = position * n_groups // max(b, 1)  # each jet's group
    counts = torch.bincount(group, minlength=n_groups)
    first = torch.cumsum(counts, 0) - counts  # sorted position of each group's first jet
    row = position - first[group]  # each jet's row in its group

    def longest(lengths):
        return torch.zeros(n_groups, dtype=lengths.dtype, device=device).scatter_reduce(
            0, group, lengths, "amax")

    q_len, k_len = longest(q.lengths), longest(k.lengths)

    def slots(p: Packing, length: torch.Tensor) -> torch.Tensor:
        base = torch.cumsum(counts * length, 0) - counts * length  # each group's start
        start = base[group] + row * length[group]  # each jet's start in the flat buffer
        rank = torch.arange(p.n_tokens, device=device) - p.offsets[:-1].long()[p.jet]
        return start[p.jet] + rank

    sizes = list(zip(counts.tolist(), q_len.tolist(), k_len.tolist()))
    key_masks, at = [], 0
    for n, _, n_k in sizes:
        lengths = k.lengths[order[at:at + n]]
        key_masks.append(torch.arange(n_k, device=device)[None] < lengths[:, None])
        at += n
    return PaddedGroups(slots(q, q_len), slots(k, k_len), sizes, key_masks)


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
