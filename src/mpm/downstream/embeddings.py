"""A frozen backbone's outputs computed once per jet (the `frozen` mode's speed).

A frozen backbone maps each preprocessed jet to the same outputs at every step, so a frozen
run's head trains on stored outputs instead of running the backbone for every batch: one
encoder pass over the jets a set of runs reads, after which a head step costs what the head
costs. Each jet is encoded with one draw of the preprocessing noise (the random impact
parameters of neutral constituents), fixed by `seed` and the jet's file position, instead of a
fresh draw at every pass.
"""

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mpm.data import schema
from mpm.data.h5io import CHUNK_JETS, open_jets
from mpm.data.loader import choose_blocks
from mpm.data.preprocess import load_preprocessor
from mpm.models.encoder import JetEncoder


def rows_of(path: Path, n_jets: int | None, seed: int) -> np.ndarray:
    """The file rows of the seeded subset JetDataset(path, n_jets=n_jets, seed=seed) reads."""
    with open_jets(path) as file:
        n_total = file[schema.H5_LABELS].shape[0]
    starts, lengths = choose_blocks(n_total, n_jets, seed)
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])


def memory_budget() -> int:
    """Bytes a set of runs' stored outputs may take: a quarter of this machine's memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def stored_bytes(encoder: JetEncoder, path: Path, n_rows: int) -> int:
    """About the bytes `StoredOutputs` takes for `n_rows` jets of `path` (float32 outputs of
    the registers and constituents, as many per jet as in the file's first chunk)."""
    with open_jets(path) as file:
        per_jet = float(file[schema.H5_MASK][:CHUNK_JETS].sum(1).mean()) + encoder.n_registers
    return int(n_rows * per_jet * encoder.dim * 4)


class StoredOutputs:
    """The encoder outputs of some rows of one file: packed per jet (registers, then
    constituents in row order) as `JetEncoder.encode_constituents` gives them."""

    def __init__(self, encoder: JetEncoder, path: Path, preprocessor: Path, rows: np.ndarray,
                 seed: int, batch_size: int = 512):  # fmt: skip
        preprocess = load_preprocessor(preprocessor)
        rows = np.unique(rows)
        parts, counts, n_stored = [], [], 0
        was_training = encoder.training
        encoder.eval()
        with open_jets(path) as file, torch.no_grad():
            self.slot = torch.full((file[schema.H5_LABELS].shape[0],), -1, dtype=torch.long)
            # chunk by chunk, each whole chunk with its own noise draw: a jet's outputs depend
            # on `seed` and its position only, not on which other rows are stored
            for chunk in np.unique(rows // CHUNK_JETS):
                start = int(chunk) * CHUNK_JETS
                picked = rows[(rows >= start) & (rows < start + CHUNK_JETS)]
                ids = file[schema.H5_IDS][start : start + CHUNK_JETS]
                mask = file[schema.H5_MASK][start : start + CHUNK_JETS].astype(bool)
                csts = preprocess(file[schema.H5_CONSTITUENTS][start : start + CHUNK_JETS], ids,
                                  mask, np.random.default_rng([seed, start]))  # fmt: skip
                at = picked - start
                csts, ids, mask = csts[at], ids[at].astype(np.int64), mask[at]
                for lo in range(0, len(picked), batch_size):
                    m = torch.from_numpy(mask[lo : lo + batch_size])
                    outputs, _, _ = encoder.encode_constituents(
                        torch.from_numpy(csts[lo : lo + batch_size]),
                        torch.from_numpy(ids[lo : lo + batch_size]), m
                    )
                    parts.append(outputs)
                    counts.append(m.sum(1) + encoder.n_registers)
                self.slot[torch.from_numpy(picked)] = torch.arange(len(picked)) + n_stored
                n_stored += len(picked)
        encoder.train(was_training)
        self.n_registers = encoder.n_registers
        self.tokens = torch.cat(parts) if parts else torch.zeros(0, encoder.dim)
        counts = torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long)
        self.starts = torch.cumsum(counts, 0) - counts

    def __call__(self, index: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:  # fmt: skip
        """Rows `index` [B] of the file with their (trimmed) mask [B, N] -> what the encoder's
        forward gives: (outputs [B, R + N, dim], mask [B, R + N])."""
        slots = self.slot[index.cpu()]
        if (slots < 0).any():
            raise RuntimeError(f"rows {index[slots < 0].tolist()[:5]} have no stored outputs")
        full_mask = torch.cat([mask.new_ones(len(mask), self.n_registers), mask], dim=1)
        counts = full_mask.sum(1).cpu()
        # each jet's tokens: its start, then consecutive rows
        first = torch.repeat_interleave(self.starts[slots] - (torch.cumsum(counts, 0) - counts),
                                        counts)  # fmt: skip
        rows = first + torch.arange(int(counts.sum()))
        out = self.tokens.new_zeros(*full_mask.shape, self.tokens.shape[1])
        out[full_mask.cpu()] = self.tokens[rows]
        return out.to(mask.device), full_mask


class StoredEncoder(nn.Module):
    """Stands in for a frozen encoder: the stored outputs of the split being read (`split`,
    which the fine-tuning module sets at each phase); the encoder's attributes the heads
    read (dim, n_registers) come from the encoder itself."""

    def __init__(self, encoder: JetEncoder, outputs: dict[str, StoredOutputs]):
        super().__init__()
        self.dim, self.n_registers = encoder.dim, encoder.n_registers
        self.outputs = outputs
        self.split = "train"

    def forward(self, index: torch.Tensor, mask: torch.Tensor):
        return self.outputs[self.split](index, mask)
