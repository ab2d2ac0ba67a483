"""Loading converted jets for training: a streaming Dataset and the splits of a data folder.

The converted files are globally shuffled at conversion time, so any set of whole HDF5 chunks
is a uniform random sample of jets. The loader exploits that: a subset of n jets is a seeded
random choice of chunks (the seed changes the content), and an epoch reads groups of chunks
in a fresh random order, shuffles the jets inside each group and cuts it into batches. Every
read is a contiguous chunk: fast on any disk, and no random access per jet.

Under DDP each process (rank) reads every world-size-th group of the epoch, and its loader
workers split those again. Training sets keep only whole groups, as many per rank, so every
rank takes the same number of optimizer steps per epoch; evaluation sets are read one batch
per group, so that every rank gets a share of a small validation set.
"""

import math
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mpm.data import schema
from mpm.data.h5io import CHUNK_JETS, open_jets
from mpm.data.preprocess import load_preprocessor
from mpm.errors import InputError

TARGETS = (schema.H5_VERTEX, schema.H5_ORIGIN)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _jets(ranges: list[tuple[int, int]]) -> int:
    return sum(stop - start for start, stop in ranges)


def choose_blocks(n_total: int, n_jets: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of the chunk-aligned blocks forming a seeded subset of `n_jets` jets."""
    starts = np.arange(0, n_total, CHUNK_JETS)
    lengths = np.minimum(CHUNK_JETS, n_total - starts)
    if n_jets is None or n_jets >= n_total:
        return starts, lengths
    order = np.random.default_rng(seed).permutation(len(starts))
    cum = np.cumsum(lengths[order])
    last = int(np.searchsorted(cum, n_jets))  # the block that reaches n_jets ...
    lengths[order[last]] -= int(cum[last]) - n_jets  # ... is trimmed to give exactly n_jets
    keep = np.sort(order[: last + 1])
    return starts[keep], lengths[keep]


class JetDataset(IterableDataset):
    """Batches of preprocessed jets from one converted HDF5 file.

    Yields dicts of tensors: csts [B, P, 7] (preprocessed), csts_id [B, P], mask [B, P],
    jets [B, 5], labels [B], index [B] (row in the file) and, for BTag, vtx_id and
    track_origin [B, P]. P is trimmed to the longest jet of the batch. The file is opened
    lazily in each worker. Each pass over the dataset is one epoch with its own order.
    `shard`: under DDP, read only this rank's share (the DataModule's loaders do).
    `features=False`: no csts (neither read nor preprocessed), for a head on stored encoder
    outputs (mpm.downstream.embeddings).
    """

    def __init__(
        self,
        path: str | Path,
        preprocessor_path: str | Path,
        *,
        batch_size: int,
        n_jets: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        batches_per_read: int = 8,
        shard: bool = False,
        features: bool = True,
    ):
        self.path = Path(path)
        self.features = features
        self.preprocessor_path = Path(preprocessor_path)
        with open_jets(self.path) as file:
            n_total = file[schema.H5_LABELS].shape[0]
            self.targets = [t for t in TARGETS if t in file]
        if n_jets is not None and n_jets > n_total:
            raise InputError(f"{self.path}: asked for {n_jets} jets but the file holds {n_total}")
        self.block_starts, self.block_lengths = choose_blocks(n_total, n_jets, seed)
        self.n_jets = int(self.block_lengths.sum())
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.shard = shard
        self.group_jets = batch_size * batches_per_read
        self.epoch = 0
        self.skip_batches = 0  # of the next epoch (start_at)
        self._file: h5py.File | None = None
        self._preprocessor = None

    def __len__(self) -> int:
        """Batches per epoch of this rank (under DDP: its share)."""
        groups = self._epoch_groups(0)
        return sum(self._batches_in(_jets(groups[i])) for i in self._rank_indices(groups))

    def start_at(self, step: int) -> None:
        """Make the next pass continue the batch stream after `step` batches of this rank:
        epoch step // len(self), from its batch step % len(self) (a resumed run's loader)."""
        self.epoch, self.skip_batches = divmod(step, len(self))

    def _world(self) -> tuple[int, int]:
        return distributed_rank() if self.shard else (0, 1)

    def _batches_in(self, n_jets: int) -> int:
        return n_jets // self.batch_size if self.drop_last else math.ceil(n_jets / self.batch_size)

    def _rank_indices(self, groups: list) -> list[int]:
        """Indices of this rank's groups: every world-size-th one; for training sets whole
        groups only, as many for every rank."""
        rank, world = self._world()
        indices = list(range(len(groups)))
        if world > 1 and self.drop_last:
            indices = [i for i in indices if _jets(groups[i]) == self.group_jets]
            indices = indices[: len(indices) // world * world]
        if len(indices) < world:
            unit = (f"group of {self.group_jets}" if self.drop_last
                    else f"batch of {self.batch_size}")  # fmt: skip
            raise InputError(f"{self.path}: {self.n_jets} jets are fewer than one {unit} per "
                             f"rank for {world} ranks")  # fmt: skip
        return indices[rank::world]

    def __getstate__(self):
        # h5py handles cannot cross process boundaries; each worker reopens the file.
        return {**self.__dict__, "_file": None, "_preprocessor": None}

    def _open(self):
        if self._file is None:
            self._file = open_jets(self.path)
            self._preprocessor = load_preprocessor(self.preprocessor_path)
        return self._file

    def _epoch_groups(self, epoch: int) -> list[list[tuple[int, int]]]:
        """Row ranges (start, stop) of each group of the epoch, in reading order."""
        order = np.arange(len(self.block_starts))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(order)
        sharded = self._world()[1] > 1
        group_jets = self.batch_size if sharded and not self.drop_last else self.group_jets
        groups, current, filled = [], [], 0
        for start, length in zip(self.block_starts[order], self.block_lengths[order]):
            offset = 0
            while offset < length:
                take = min(length - offset, group_jets - filled)
                current.append((int(start + offset), int(start + offset + take)))
                offset += take
                filled += take
                if filled == group_jets:
                    groups.append(current)
                    current, filled = [], 0
        if current:
            groups.append(current)
        return groups

    def _read(self, ranges: list[tuple[int, int]]) -> dict[str, np.ndarray]:
        file = self._open()
        names = [
            *([schema.H5_CONSTITUENTS] if self.features else []),
            schema.H5_IDS,
            schema.H5_MASK,
            schema.H5_JETS,
            schema.H5_LABELS,
            *self.targets,
        ]
        rows = {n: np.concatenate([file[n][a:b] for a, b in ranges]) for n in names}
        rows["index"] = np.concatenate([np.arange(a, b) for a, b in ranges])
        return rows

    def _worker_skips(self, groups: list, indices: list[int], n_workers: int
                      ) -> tuple[list[int], int]:  # fmt: skip
        """(batches each worker's share skips, the worker whose turn is next) so that the
        stream, which the DataLoader takes from the workers in turn (one batch each, passing
        over those that are done), starts after `skip_batches`."""
        counts = [sum(self._batches_in(_jets(groups[g])) for g in indices[w::n_workers])
                  for w in range(n_workers)]  # fmt: skip
        skips, left, last = [0] * n_workers, self.skip_batches, -1
        while left:
            for w in range(n_workers):
                if left and skips[w] < counts[w]:
                    skips[w] += 1
                    left -= 1
                    last = w
        return skips, (last + 1) % n_workers

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        groups = self._epoch_groups(epoch)
        indices = self._rank_indices(groups)
        share, skip = worker_id, 0
        if self.skip_batches:  # a resumed run: the DataLoader starts its turns at worker 0, so
            skips, turn = self._worker_skips(groups, indices, n_workers)  # the shares rotate
            share = (worker_id + turn) % n_workers
            skip = skips[share]
        self.skip_batches = 0  # later epochs start at their beginning
        for g in indices[share::n_workers]:
            n_batches = self._batches_in(_jets(groups[g]))
            if skip >= n_batches:  # a whole group before the start: not even read
                skip -= n_batches
                continue
            rng = np.random.default_rng([self.seed, epoch, g])
            rows = self._read(groups[g])
            if self.shuffle:
                perm = rng.permutation(len(rows["index"]))
                rows = {k: v[perm] for k, v in rows.items()}
            if self.features:
                rows[schema.H5_CONSTITUENTS] = self._preprocessor(
                    rows[schema.H5_CONSTITUENTS], rows[schema.H5_IDS], rows[schema.H5_MASK], rng
                )
            for lo in range(skip * self.batch_size, len(rows["index"]), self.batch_size):
                batch = {k: v[lo : lo + self.batch_size] for k, v in rows.items()}
                if self.drop_last and len(batch["index"]) < self.batch_size:
                    break
                yield self._to_tensors(batch)
            skip = 0

    @staticmethod
    def _to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        width = max(int(batch[schema.H5_MASK].sum(axis=1).max()), 1)
        out = {}
        for name, values in batch.items():
            if values.ndim >= 2 and name != schema.H5_JETS:
                values = values[:, :width]
            tensor = torch.from_numpy(np.ascontiguousarray(values))
            out[name] = tensor.long() if values.dtype.kind in "iu" else tensor
        return out


def make_loader(dataset: JetDataset, num_workers: int) -> DataLoader:
    """A DataLoader over pre-batched items; persistent workers keep the epoch counters."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if num_workers > 0 else None,
    )


def split_datasets(data_dir: str | Path, preprocessor_path: str | Path, *, batch_size: int,
                   n_train: int | None = None, n_val: int | None = None, seed: int = 0,
                   features: bool = True) -> dict[str, JetDataset]:  # fmt: skip
    """The train (seeded subset, shuffled, whole batches), val (seeded subset) and test
    datasets of a folder of converted files (train.h5, val.h5, test.h5)."""
    data_dir = Path(data_dir)
    common = dict(preprocessor_path=preprocessor_path, batch_size=batch_size, shard=True,
                  features=features, seed=seed)  # fmt: skip
    return {
        "train": JetDataset(data_dir / "train.h5", n_jets=n_train, shuffle=True, drop_last=True,
                            **common),  # fmt: skip
        "val": JetDataset(data_dir / "val.h5", n_jets=n_val, shuffle=False, **common),
        "test": JetDataset(data_dir / "test.h5", shuffle=False, **common),
    }
