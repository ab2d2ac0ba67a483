"""Choosing the dropped constituents and compacting sets without their padding."""

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


def compact(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [B, W] that gather the `selected` elements of each row first, in their original
    order, with W the largest count in the batch, and the mask [B, W] of real entries."""
    order = torch.argsort((~selected).to(torch.int8), dim=1, stable=True)
    width = int(selected.sum(1).max()) if selected.numel() else 0
    index = order[:, :width]
    return index, torch.gather(selected, 1, index)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, N, ...] gathered along dim 1 with index [B, W]."""
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, expanded)
