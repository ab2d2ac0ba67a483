"""Choosing the dropped constituents."""

import torch


def choose_dropped(
    mask: torch.Tensor, rate: float | torch.Tensor, generator=None, min_kept: int = 1
) -> torch.Tensor:
    """Drop round(rate * n) of each jet's n constituents uniformly at random, keeping at least
    `min_kept`. `mask` [B, N] marks real constituents; `rate` is one number or one per jet
    [B]; returns the dropped ones [B, N]."""
    n = mask.sum(1)
    n_drop = torch.minimum(torch.round(rate * n), n - min_kept).clamp(min=0)
    scores = torch.rand(mask.shape, generator=generator, device=mask.device)
    scores = scores.masked_fill(~mask, 2.0)  # padding ranks last
    ranks = scores.argsort(1).argsort(1)
    return ranks < n_drop[:, None]
