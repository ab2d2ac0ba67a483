"""Learning-rate schedule of the paper: linear warm-up from zero, then exponential decay."""

import math


def warmup_exponential(step: int, warmup_steps: int, half_life_steps: float) -> float:
    """Multiplier of the maximum learning rate at optimizer step `step`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return math.exp(-math.log(2) * (step - warmup_steps) / half_life_steps)
