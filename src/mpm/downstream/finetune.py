"""Fine-tuning a backbone with a task head (paper section 5.2, appendix D).

Recipe (params `finetune.recipe`): AdamW with separate head and backbone learning rates; in
`finetuned` mode the backbone is held fixed for the first `freeze_steps` steps, then its rate
ramps linearly to `backbone_lr` over `ramp_steps`, so a random head cannot wreck pre-trained
features; in `frozen` mode it never trains. Validation loss drives early stopping and picks
the checkpoint that is evaluated.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mpm.data import schema
from mpm.downstream.embeddings import StoredEncoder
from mpm.downstream.heads import JetClassifier, TrackClassifier, VertexFinder
from mpm.errors import InputError
from mpm.models.encoder import JetEncoder
from mpm.params import get, non_negative_int, positive_float, positive_int

MODES = ("finetuned", "frozen")


@dataclass(frozen=True)
class Task:
    data: str  # converted dataset folder under data/processed
    kind: str  # jet | edge | track
    n_classes: int = 0


TASKS = {
    "jetclass": Task("jetclass", "jet", len(schema.JETCLASS_CLASSES)),
    "cwola": Task("cwola", "jet", 2),
    "btag": Task("btag", "jet", len(schema.BTAG_CLASSES)),
    "vertex": Task("btag", "edge"),
    "track": Task("btag", "track", len(schema.TRACK_ORIGINS)),
}


def build_head(task: Task, encoder: JetEncoder | StoredEncoder, head_cfg: dict) -> nn.Module:
    if task.kind == "jet":
        return JetClassifier(encoder.dim, task.n_classes, head_cfg["dim"], head_cfg["heads"],
                             head_cfg["depth"])  # fmt: skip
    if task.kind == "edge":
        return VertexFinder(encoder.dim, encoder.n_registers, head_cfg["hidden"])
    return TrackClassifier(encoder.dim, encoder.n_registers, task.n_classes, head_cfg["hidden"])


def pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, N] -> the distinct pairs i < j of real tracks [B, N, N]."""
    upper = torch.ones(mask.shape[1], mask.shape[1], dtype=torch.bool, device=mask.device)
    return mask[:, :, None] & mask[:, None, :] & upper.triu(1)


def backbone_lr_factor(step: int, freeze_steps: int, ramp_steps: int) -> float:
    """The backbone's share of its learning rate at `step`: 0 while frozen, then a linear ramp."""
    if step < freeze_steps:
        return 0.0
    return min(1.0, (step - freeze_steps + 1) / max(ramp_steps, 1))


class FinetuneModule(nn.Module):
    """A task head on a backbone: a JetEncoder, or in frozen mode optionally the encoder's
    stored outputs (`StoredEncoder`). Plain PyTorch: heads on stored outputs train in a plain
    loop (mpm.downstream.stored_fit), runs of the backbone itself with Lightning
    (mpm.downstream.lightning_fit)."""

    def __init__(self, encoder: JetEncoder | StoredEncoder, task: str, mode: str,
                 head_cfg: dict, recipe: dict):  # fmt: skip
        super().__init__()
        if isinstance(encoder, StoredEncoder) and mode != "frozen":
            raise ValueError("stored encoder outputs serve a frozen backbone only")
        self.task = TASKS[task]
        self.mode, self.recipe = mode, recipe
        self.encoder = encoder
        self.head = build_head(self.task, encoder, head_cfg)
        if mode == "frozen":
            self.encoder.requires_grad_(False)

    def forward(self, batch: dict) -> torch.Tensor:
        if isinstance(self.encoder, StoredEncoder):
            encoded, mask = self.encoder(batch["index"], batch["mask"])
        else:
            encoded, mask = self.encoder(batch["csts"], batch["csts_id"], batch["mask"])
        return self.head(encoded, mask)

    def read_split(self, split: str) -> None:
        """Read the stored outputs of `split` (train, val or test) from now on."""
        if isinstance(self.encoder, StoredEncoder):
            self.encoder.split = split

    def hold_backbone(self, step: int) -> None:
        """Before optimizer step `step`: in finetuned mode no backward pass through the
        backbone while it is held."""
        if self.mode == "finetuned":
            self.encoder.requires_grad_(step >= self.recipe["freeze_steps"])

    def loss(self, out: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.task.kind == "jet":
            return F.cross_entropy(out, batch["labels"])
        mask = batch["mask"]
        if self.task.kind == "edge":
            pairs = pair_mask(mask)
            vertex = batch[schema.H5_VERTEX]
            same = (vertex[:, :, None] == vertex[:, None, :]).to(out.dtype)
            if not pairs.any():  # a batch of one-track jets: nothing to learn
                return out.sum() * 0
            return F.binary_cross_entropy_with_logits(out[pairs], same[pairs])
        origin = batch[schema.H5_ORIGIN]
        valid = mask & (origin >= 0)
        return F.cross_entropy(out[valid], origin[valid])

    def predict_step(self, batch, batch_idx) -> dict[str, np.ndarray]:
        """Per-batch outputs for the metrics: jet probabilities, edge probabilities or track
        predictions, with their truth."""
        out = self(batch).float()
        mask = batch["mask"]
        if self.task.kind == "jet":
            return {"probs": out.softmax(-1).cpu().numpy(), "labels": batch["labels"].cpu().numpy()}
        if self.task.kind == "edge":
            return {"edge_probs": out.sigmoid().cpu().numpy(), "mask": mask.cpu().numpy(),
                    "vertex": batch[schema.H5_VERTEX].cpu().numpy()}  # fmt: skip
        return {"pred": out.argmax(-1).cpu().numpy(), "mask": mask.cpu().numpy(),
                "origin": batch[schema.H5_ORIGIN].cpu().numpy()}  # fmt: skip

    def configure_optimizers(self):
        r = self.recipe
        groups = [{"params": list(self.head.parameters()), "lr": r["head_lr"]}]
        lambdas = [lambda step: 1.0]
        if self.mode == "finetuned":
            groups.append({"params": list(self.encoder.parameters()), "lr": r["backbone_lr"]})
            lambdas.append(lambda step: backbone_lr_factor(step, r["freeze_steps"],
                                                           r["ramp_steps"]))  # fmt: skip
        # foreach: one kernel per step for all the head's tensors (the loop over them costs more
        # than a small head's step on a CPU)
        optimizer = torch.optim.AdamW(groups, weight_decay=r["weight_decay"], foreach=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def validate_params(params: dict) -> None:
    """One-line InputError for the first invalid setting of the params this module reads."""
    recipe = "finetune.recipe"
    for key in ("max_steps", "batch_size", "n_val_jets", "val_every_steps", "patience"):
        positive_int(get(params, f"{recipe}.{key}"), f"{recipe}.{key}")
    positive_int(get(params, f"{recipe}.n_test_jets"), f"{recipe}.n_test_jets", allow_none=True)
    for key in ("freeze_steps", "ramp_steps"):
        non_negative_int(get(params, f"{recipe}.{key}"), f"{recipe}.{key}")
    for key in ("head_lr", "backbone_lr", "weight_decay", "grad_clip"):
        positive_float(get(params, f"{recipe}.{key}"), f"{recipe}.{key}")
    for key in ("dim", "heads", "depth", "hidden"):
        positive_int(get(params, f"finetune.head.{key}"), f"finetune.head.{key}")
    if get(params, f"{recipe}.max_steps") < get(params, f"{recipe}.val_every_steps"):
        # the run keeps its best validated model: it must validate at least once
        raise InputError(f"params: '{recipe}.max_steps' is below '{recipe}.val_every_steps'")
    if get(params, "finetune.head.dim") % get(params, "finetune.head.heads"):
        raise InputError("params: 'finetune.head.dim' must be divisible by 'finetune.head.heads'")


def validate_grid(params: dict) -> None:
    """One-line InputError for an invalid `finetune.grid` (the runs of the finetune stages)."""
    grid = "finetune.grid"
    modes = get(params, f"{grid}.modes")
    if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes):
        raise InputError(f"params: '{grid}.modes' must list modes of {', '.join(MODES)}, "
                         f"got {modes!r}")  # fmt: skip
    for key in ("seeds", "cwola_signal", *(f"sizes.{t}" for t in TASKS if t != "cwola")):
        values = get(params, f"{grid}.{key}")
        if not isinstance(values, list):
            raise InputError(f"params: '{grid}.{key}' must be a list, got {values!r}")
        check = non_negative_int if key == "seeds" else positive_int
        for value in values:
            check(value, f"{grid}.{key}")
    for task in TASKS:  # fine-tuned at some of the sizes, or (null) all of them
        subset = get(params, f"{grid}.finetuned_sizes.{task}")
        sizes = get(params, f"{grid}.cwola_signal" if task == "cwola" else f"{grid}.sizes.{task}")
        if subset is not None and (not isinstance(subset, list) or set(subset) - set(sizes)):
            raise InputError(f"params: '{grid}.finetuned_sizes.{task}' must be null or a list "
                             f"of the task's sizes {sizes}, got {subset!r}")  # fmt: skip
