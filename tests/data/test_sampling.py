"""LengthGroupedBatchSampler: complete epochs, less padding, disjoint DDP shares (also as Lightning injects them)."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from lightning_ssb.data import FewRelDataModule, LengthGroupedBatchSampler


@pytest.fixture(scope="module")
def fewrel_lengths(tmp_path_factory):
    """Token lengths of the shipped FewRel sample's 2,560 training sentences."""
    dm = FewRelDataModule(train_per_relation=40, test_per_relation=10,
                          cache_dir=str(tmp_path_factory.mktemp("c")))
    dm.setup("fit")
    return dm, dm.train_dataset.lengths


def _padding(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_each_index_once_per_epoch_and_reshuffled(fewrel_lengths):
    _, lengths = fewrel_lengths
    sampler = LengthGroupedBatchSampler(lengths, 32, seed=3)
    epoch0 = list(sampler)
    assert len(epoch0) == len(sampler) == 80
    assert sorted(i for b in epoch0 for i in b) == list(range(len(lengths)))
    assert list(sampler) == epoch0  # same epoch, same order
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(i for b in epoch1 for i in b) == list(range(len(lengths)))
    assert epoch1 != epoch0


def test_uneven_tail_and_drop_last():
    lengths = list(range(100))
    kept = list(LengthGroupedBatchSampler(lengths, 32, mega_batch_mult=2))
    assert sorted(len(b) for b in kept) == [4, 32, 32, 32]
    dropped = LengthGroupedBatchSampler(lengths, 32, mega_batch_mult=2, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 3 and all(len(b) == 32 for b in dropped)


def test_less_padding_than_random_batches(fewrel_lengths):
    _, lengths = fewrel_lengths
    grouped = list(LengthGroupedBatchSampler(lengths, 32, seed=0))
    perm = np.random.default_rng(0).permutation(len(lengths))
    random = [perm[i : i + 32].tolist() for i in range(0, len(perm), 32)]
    assert _padding(grouped, lengths) < 0.25 * _padding(random, lengths)


@pytest.mark.parametrize("n", [1000, 1001])
def test_ddp_shares_are_disjoint_and_equal(n):
    lengths = np.random.default_rng(1).integers(5, 120, n)
    world = 4
    shares = [[i for b in LengthGroupedBatchSampler(lengths, 16, num_replicas=world, rank=r, seed=5) for i in b]
              for r in range(world)]
    assert len({len(s) for s in shares}) == 1  # same number of examples (and steps) on every rank
    assert {len(LengthGroupedBatchSampler(lengths, 16, num_replicas=world, rank=r)) for r in range(world)} == {16}
    everything = [i for s in shares for i in s]
    assert set(everything) == set(range(n))
    # Disjoint, except the few indices DistributedSampler repeats to even out the shares.
    assert len(everything) - len(set(everything)) == (-n) % world


def test_lightning_injects_its_distributed_sampler(fewrel_lengths):
    """Under DDP Lightning rebuilds the batch sampler with its own DistributedSampler
    (the ``sampler`` argument) and calls set_epoch on it: check that path keeps the
    length grouping and gives disjoint shares."""
    from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader

    dm, lengths = fewrel_lengths
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()  # as Lightning calls the hook
    shares = []
    for rank in range(2):
        dist_sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        injected = _update_dataloader(loader, dist_sampler, mode=RunningStage.TRAINING)
        assert isinstance(injected.batch_sampler, LengthGroupedBatchSampler)
        assert injected.batch_sampler.sampler is dist_sampler and injected.batch_sampler.batch_size == 32
        _set_sampler_epoch(injected, 2)
        assert dist_sampler.epoch == 2
        batches = list(injected.batch_sampler)
        shares.append({i for b in batches for i in b})
        in_order = [list(range(i, i + 32)) for i in range(0, 1280, 32)]
        assert _padding(batches, lengths) < 0.25 * _padding(in_order, lengths)
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == len(lengths)


def test_a_resumed_loader_starts_at_the_checkpoints_epoch(tmp_path):
    """The training loader a resume builds (before Lightning restores its loops, and before it sets the
    sampler's epoch: Lightning issue #21938) draws the order of the epoch the checkpoint names, not epoch 0's."""
    from lightning_ssb.data import FewRelDataModule

    def first_batches(dm, epoch=None):
        loader = dm.train_dataloader()
        if epoch is not None:
            loader.batch_sampler.set_epoch(epoch)
        return [b["labels"].tolist() for b in loader][:3]

    dm = FewRelDataModule(train_per_relation=4, test_per_relation=1, batch_size=16, cache_dir=str(tmp_path))
    dm.setup("fit")
    at_3 = first_batches(dm, epoch=3)
    assert first_batches(dm) != at_3  # a new loader draws epoch 0
    dm.load_state_dict({"sampler_epoch": 3})  # what a checkpoint at the end of epoch 2 holds
    assert first_batches(dm) == at_3
