"""Optimizer and learning-rate schedule of the paper: AdamW, linear warm-up from zero, then
exponential decay."""

import math

import torch


def warmup_exponential(step: int, warmup_steps: int, half_life_steps: float) -> float:
    """Multiplier of the maximum learning rate at optimizer step `step`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return math.exp(-math.log(2) * (step - warmup_steps) / half_life_steps)


def adamw_warmup_exponential(parameters, cfg: dict, weight_decay: float) -> dict:
    """Lightning `configure_optimizers` result: AdamW at `cfg["lr"]` with the schedule above
    (`cfg["warmup_steps"]`, `cfg["half_life_steps"]`), stepped every optimizer step."""
    optimizer = torch.optim.AdamW(parameters, lr=cfg["lr"], weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_exponential(step, cfg["warmup_steps"], cfg["half_life_steps"]),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
