"""Preprocessor, loader and CWoLa builder on converted generated data."""

import h5py
import numpy as np
import pytest
import torch

from mpm.data import loader as loader_module
from mpm.data import schema
from mpm.data.convert import convert_dataset
from mpm.data.datamodule import JetDataModule
from mpm.data.loader import JetDataset, choose_blocks, make_loader
from mpm.data.preprocess import fit_preprocessor, load_preprocessor, save_preprocessor
from mpm.errors import InputError


@pytest.fixture(scope="module")
def converted(tmp_path_factory, generated):
    """Generated JetClass and BTag converted to HDF5, and a fitted preprocessor."""
    raw, params = generated
    root = tmp_path_factory.mktemp("data")
    for name in ("jetclass", "btag"):
        convert_dataset(params, name, raw, root / name)
    transformer = fit_preprocessor(root / "jetclass/train.h5", 600, 500, 100_000, seed=0)
    save_preprocessor(transformer, root / "pre.joblib")
    return root


def test_preprocessor_is_normal_and_fills_neutral_impact_parameters(converted):
    pre = load_preprocessor(converted / "pre.joblib")
    with h5py.File(converted / "jetclass/train.h5") as f:
        csts, ids, mask = f["csts"][:500], f["csts_id"][:500], f["mask"][:500]
    out = pre(csts, ids, mask, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == csts.shape
    assert (out[~mask] == 0).all() and np.isfinite(out).all()
    flat, neutral = out[mask], np.isin(ids[mask], schema.NEUTRAL_IDS)
    # Charged features follow N(0, 1) roughly; neutral IPs are N(0, 1) noise, not a spike.
    assert abs(flat[:, 0].mean()) < 0.1 and abs(flat[:, 0].std() - 1) < 0.1
    ips = flat[neutral][:, list(schema.IMPACT_PARAMETER_FEATURES)]
    assert abs(ips.mean()) < 0.1 and abs(ips.std() - 1) < 0.1
    assert len(np.unique(ips)) > 0.99 * ips.size  # noise, not a constant
    # Invertible for charged particles.
    charged = ~neutral
    np.testing.assert_allclose(
        pre.inverse(flat[charged])[:, 0], csts[mask][charged][:, 0], rtol=1e-3, atol=1e-3
    )


def test_preprocessor_errors(tmp_path):
    with pytest.raises(InputError, match="preprocessor file not found"):
        load_preprocessor(tmp_path / "missing.joblib")
    (tmp_path / "bad.joblib").write_text("junk")
    with pytest.raises(InputError, match="bad.joblib"):
        load_preprocessor(tmp_path / "bad.joblib")


def test_choose_blocks_is_seeded_and_exact():
    s1, l1 = choose_blocks(10_000, 1000, seed=1)
    s2, l2 = choose_blocks(10_000, 1000, seed=1)
    s3, _ = choose_blocks(10_000, 1000, seed=2)
    assert l1.sum() == 1000 and np.array_equal(s1, s2) and not np.array_equal(s1, s3)
    starts, lengths = choose_blocks(1000, None, seed=0)
    assert lengths.sum() == 1000 and starts[0] == 0


def _indices(loader) -> list[np.ndarray]:
    return [b["index"].numpy() for b in loader]


def test_epoch_covers_subset_once_and_reshuffles(converted):
    def subset(seed):
        return JetDataset(converted / "jetclass/train.h5", converted / "pre.joblib",
                          batch_size=50, n_jets=400, seed=seed, batches_per_read=2)  # fmt: skip

    ds = subset(3)
    first, second = _indices(ds), _indices(ds)
    assert len(first) == len(ds) == 8
    a, b = np.concatenate(first), np.concatenate(second)
    assert len(np.unique(a)) == 400 and set(a) == set(b)  # same subset each epoch
    assert not np.array_equal(a, b)  # new order each epoch
    assert set(np.concatenate(_indices(subset(4)))) != set(a)  # the seed changes the content


def test_loader_is_deterministic_and_workers_cover_everything(converted):
    kwargs = dict(batch_size=64, n_jets=500, seed=5, shuffle=True, drop_last=False)
    ds0 = JetDataset(converted / "jetclass/train.h5", converted / "pre.joblib", **kwargs)
    ds2 = JetDataset(converted / "jetclass/train.h5", converted / "pre.joblib", **kwargs)
    single = list(make_loader(ds0, 0))
    multi = list(make_loader(ds2, 2))
    assert len(single) == len(multi) == len(ds0) == 8
    key = lambda batches: sorted(tuple(b["index"].tolist()) for b in batches)  # noqa: E731
    assert key(single) == key(multi)  # workers split the groups, nothing lost or repeated
    by_first = {int(b["index"][0]): b for b in multi}
    for b in single:
        torch.testing.assert_close(b["csts"], by_first[int(b["index"][0])]["csts"])


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_a_loader_started_at_a_step_continues_the_stream_of_a_whole_run(converted, workers):
    """A resumed run's loader: started at step k, it yields batch k of the uninterrupted
    stream first (within a group, past whole groups, past an epoch), with the same content."""

    def dataset():
        return JetDataset(converted / "jetclass/train.h5", converted / "pre.joblib",
                          batch_size=25, n_jets=500, seed=2, drop_last=True,
                          batches_per_read=3)  # fmt: skip

    loader = make_loader(dataset(), workers)
    whole = [b for _ in range(3) for b in loader]  # three epochs of 20 batches
    for step in (1, 5, 8, 23, 47):
        resumed = dataset()
        resumed.start_at(step)
        stream = make_loader(resumed, workers)
        after = [b for _ in range(2) for b in stream]  # the rest of one epoch, and the next
        assert len(after) == 40 - step % 20
        for got, expected in zip(after, whole[step:]):
            assert torch.equal(got["index"], expected["index"])
            torch.testing.assert_close(got["csts"], expected["csts"])  # the same noise too


@pytest.mark.parametrize("drop_last", [True, False])
def test_ddp_ranks_split_the_epoch(converted, monkeypatch, drop_last):
    """Each of 3 ranks reads its own groups; training sets give every rank the same number
    of whole batches, evaluation sets lose nothing."""
    kwargs = dict(batch_size=20, n_jets=530, seed=2, shuffle=True, drop_last=drop_last,
                  batches_per_read=2, shard=True)  # fmt: skip
    per_rank = []
    for rank in range(3):
        monkeypatch.setattr(loader_module, "distributed_rank", lambda rank=rank: (rank, 3))
        ds = JetDataset(converted / "jetclass/train.h5", converted / "pre.joblib", **kwargs)
        batches = list(make_loader(ds, 2))
        assert len(batches) == len(ds)
        per_rank.append(np.concatenate([b["index"].numpy() for b in batches]))
    every = np.concatenate(per_rank)
    assert len(np.unique(every)) == len(every)  # no jet on two ranks
    if drop_last:  # 13 whole groups of 40 jets: 4 per rank, the 13th and the last 10 jets left
        assert [len(r) for r in per_rank] == [160, 160, 160]
    else:  # read one batch per group: 27 batches, 9 per rank
        assert len(every) == 530 and [len(r) for r in per_rank] == [180, 180, 170]


def test_ddp_training_set_too_small_for_the_ranks(converted, monkeypatch):
    monkeypatch.setattr(loader_module, "distributed_rank", lambda: (0, 20))
    ds = JetDataset(converted / "jetclass/train.h5", converted / "pre.joblib", batch_size=20,
                    n_jets=530, drop_last=True, batches_per_read=2, shard=True)  # fmt: skip
    with pytest.raises(InputError, match="530 jets are fewer than one group of 40 per rank"):
        len(ds)
    unsharded = JetDataset(converted / "jetclass/train.h5", converted / "pre.joblib",
                           batch_size=20, n_jets=530, batches_per_read=2)  # fmt: skip
    assert len(unsharded) == 27  # read whole outside Lightning (probes, predictions)


def test_batch_layout_and_padding_trim(converted):
    ds = JetDataset(
        converted / "btag/train.h5", converted / "pre.joblib", batch_size=64, shuffle=False
    )
    batch = next(iter(ds))
    width = batch["mask"].shape[1]
    assert width == int(batch["mask"].sum(1).max()) and width <= 15
    assert batch["csts"].shape == (64, width, 7) and batch["csts"].dtype == torch.float32
    assert batch["csts_id"].dtype == torch.long and batch["labels"].shape == (64,)
    assert batch["vtx_id"].shape == batch["track_origin"].shape == (64, width)
    assert ((batch["track_origin"] >= 0) == batch["mask"]).all()
    assert (batch["csts"][~batch["mask"]] == 0).all()
    assert torch.equal(batch["index"], torch.arange(64))  # unshuffled: file order


def test_too_many_jets_requested(converted):
    with pytest.raises(InputError, match="asked for 999999 jets"):
        JetDataset(
            converted / "jetclass/train.h5", converted / "pre.joblib", batch_size=10, n_jets=999_999
        )


def test_datamodule(converted):
    dm = JetDataModule(
        converted / "jetclass", converted / "pre.joblib", batch_size=50, n_train=500, seed=1
    )
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 10 and all(len(b["labels"]) == 50 for b in train)
    n_val = sum(len(b["labels"]) for b in dm.val_dataloader())
    assert n_val == 200  # the whole validation split


@pytest.mark.parametrize("n_total, n_jets", [(3000, 2900), (300, 1), (257, 256), (1000, 999)])
def test_choose_blocks_handles_a_short_last_block(n_total, n_jets):
    for seed in range(20):
        starts, lengths = choose_blocks(n_total, n_jets, seed)
        assert lengths.sum() == n_jets and (lengths > 0).all()
        assert (starts + lengths <= n_total).all() and (starts[1:] > starts[:-1]).all()
