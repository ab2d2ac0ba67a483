"""The Lightning DataModule over a folder of converted files (apart from `mpm.data.loader`, so
that what reads jets without Lightning starts without importing it)."""

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from mpm.data.loader import JetDataset, make_loader, split_datasets


class JetDataModule(L.LightningDataModule):
    """train/val/test loaders over a folder of converted files (`split_datasets`)."""

    def __init__(
        self,
        data_dir: str | Path,
        preprocessor_path: str | Path,
        *,
        batch_size: int,
        n_train: int | None = None,
        n_val: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        start_step: int = 0,
        features: bool = True,
    ):
        super().__init__()
        self.start_step = start_step  # training batches already taken (a resumed run)
        self.kwargs = dict(data_dir=data_dir, preprocessor_path=preprocessor_path,
                           batch_size=batch_size, n_train=n_train, n_val=n_val, seed=seed,
                           features=features)  # fmt: skip
        self.num_workers = num_workers
        self.datasets: dict[str, JetDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.datasets = split_datasets(**self.kwargs)
        self.datasets["train"].start_at(self.start_step)

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.datasets["train"], self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.datasets["val"], self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return make_loader(self.datasets["test"], self.num_workers)
