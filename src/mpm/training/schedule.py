"""Optimizer and learning-rate schedule of the paper: AdamW, linear warm-up from zero, then
exponential decay."""

import math

import torch


def warmup_exponential(step: int, warmup_steps: int, half_life_steps: float) -> float:
    """Multiplier of the maximum learning rate at optimizer step `step`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return math.exp(-math.log(2) * (step - warmup_steps) / half_life_steps)


def adamw_warmup_exponential(parameters, cfg: dict, weight_decay: float,
                             fused: bool = False) -> dict:  # fmt: skip
    """Lightning `configure_optimizers` result: AdamW at `cfg["lr"]` with the schedule above
    (`cfg["warmup_steps"]`, `cfg["half_life_steps"]`), stepped every optimizer step; `fused`:
    AdamW's fused kernel (one launch for all parameters on CUDA)."""
    optimizer = torch.optim.AdamW(parameters, lr=cfg["lr"], weight_decay=weight_decay,
                                  fused=fused or None)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_exponential(step, cfg["warmup_steps"], cfg["half_life_steps"]),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def fused_adamw(parameters: list, precision: str) -> bool:
    """Whether AdamW's fused kernel fits: every parameter on CUDA and no fp16 gradient scaler
    (Lightning precision "16-mixed") to unscale the gradients first."""
    scaled = str(precision) in ("16-mixed", "16")
    return bool(parameters) and all(p.is_cuda for p in parameters) and not scaled


class PaperOptimizer:
    """LightningModule mixin. `paper_optimizer` configures AdamW with the schedule above, fused
    when every parameter is on CUDA and no fp16 gradient scaler is in play. Gradients of a
    fused optimizer are clipped here: Lightning's mixed-precision plugin refuses to (it could
    not unscale fp16 gradients that the optimizer unscales itself); without a scaler (bf16,
    fp32) the gradients are the true ones."""

    def paper_optimizer(self, parameters, cfg: dict, weight_decay: float) -> dict:
        parameters = list(parameters)
        fused = fused_adamw(parameters, self.trainer.precision)
        return adamw_warmup_exponential(parameters, cfg, weight_decay, fused)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:  # fmt: skip
        if not optimizer.defaults.get("fused"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                       gradient_clip_algorithm)  # fmt: skip
        if gradient_clip_algorithm not in (None, "norm"):
            raise ValueError("a fused optimizer's gradients are clipped by norm only")
        if gradient_clip_val:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)
