"""A head trained on a frozen backbone's stored outputs, in a plain PyTorch loop.

A head step on stored outputs costs a few milliseconds on a CPU, so Lightning's per-step and
per-validation machinery (hooks, logging, a checkpoint file at every improvement, a Trainer
per run) is most of such a run's time. This loop keeps the recipe of `FinetuneModule` (its
loss, optimizer, schedule and predictions) and of the Lightning runs (gradient clipping,
validation every `val_every_steps` steps on the batch-size-weighted mean loss, early stopping
after `patience` validations without improvement, the best validated head kept), with the
best head held in memory instead of a checkpoint file.
"""

import copy
import math
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from mpm.downstream.finetune import FinetuneModule


def _forever(loader: DataLoader) -> Iterator[dict]:
    """The loader's batches, epoch after epoch (each pass has its own order)."""
    while True:
        yield from loader


def mean_loss(module: FinetuneModule, batches: Iterable[dict]) -> float:
    """The loss over `batches`, each weighted by its jets (as Lightning's epoch mean is)."""
    total, jets = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            size = len(batch["labels"])
            total += float(module.loss(module(batch), batch)) * size
            jets += size
    return total / jets


def fit_stored_head(module: FinetuneModule, train: DataLoader,
                    val: DataLoader) -> tuple[float, int]:  # fmt: skip
    """Train `module`'s head (its encoder a `StoredEncoder`) on `train` with early stopping on
    `val`; leaves the best validated head in `module`: (its validation loss, steps taken)."""
    recipe = module.recipe
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    best, best_head, waited, step = math.inf, None, 0, 0
    module.train()
    module.read_split("train")
    for batch in _forever(train):
        loss = module.loss(module(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.head.parameters(), recipe["grad_clip"])
        optimizer.step()
        scheduler.step()
        step += 1
        if step % recipe["val_every_steps"] == 0:
            module.read_split("val")
            loss = mean_loss(module, val)
            module.read_split("train")
            if loss < best:
                best, best_head, waited = loss, copy.deepcopy(module.head.state_dict()), 0
            else:
                waited += 1
            if waited >= recipe["patience"]:
                break
        if step >= recipe["max_steps"]:
            break
    module.head.load_state_dict(best_head)  # max_steps >= val_every_steps: validated once
    return best, step


def predict_stored(module: FinetuneModule, test: DataLoader) -> list[dict]:
    """`module.predict_step` on every batch of `test` (the stored outputs of the test split)."""
    module.eval()
    module.read_split("test")
    with torch.no_grad():
        return [module.predict_step(batch, i) for i, batch in enumerate(test)]
