"""Length-grouped batching: batches of similar-length examples pad less (a speed option).

Per epoch, an index sampler gives this rank's shuffled share of the examples; the
share is cut into mega-chunks of ``mega_batch_mult`` batches, each chunk is sorted by
length and sliced into batches, and the order of all batches is shuffled. So the
batch contents stay random at the scale of a chunk while the padding shrinks.

Distributed training: the index sampler is a ``DistributedSampler`` that gives each
rank a disjoint, equal-sized share (ranks pad by repeating a few indices, as
``DistributedSampler`` does), taking rank and world size from ``torch.distributed``
when it is initialised, or from the ``num_replicas``/``rank`` arguments. Under
Lightning with ``use_distributed_sampler=True`` (the default), Lightning re-creates
this batch sampler with its own ``DistributedSampler`` in the ``sampler`` argument
(this class subclasses ``BatchSampler`` and names that argument ``sampler`` so it can)
and calls ``set_epoch`` on it every epoch; outside Lightning call :meth:`set_epoch`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DistributedSampler, Sampler


class LengthGroupedBatchSampler(BatchSampler):
    """Yields lists of indices whose examples have similar lengths.

    Args:
        lengths: tokens per example, ``[N]``.
        batch_size: examples per batch.
        sampler: the index sampler (this rank's share, in order); None builds a
            ``DistributedSampler`` from ``shuffle``, ``seed``, ``num_replicas``, ``rank``.
        drop_last: drop the last, smaller batch.
        shuffle: shuffle the examples and the batch order (per epoch, seeded).
        seed: base seed; epoch ``e`` uses ``seed + e``.
        num_replicas: world size; None: from ``torch.distributed`` if initialised, else 1.
        rank: this process's rank; None: from ``torch.distributed`` if initialised, else 0.
        mega_batch_mult: batches per sorted chunk; larger pads less but is less random.
        epoch: the epoch the first iteration draws (set on the index sampler too). A resumed fit starts
            past 0; as an argument it survives Lightning rebuilding the sampler under DDP.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        sampler: Sampler[int] | None = None,
        drop_last: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        mega_batch_mult: int = 50,
        epoch: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if mega_batch_mult < 1:
            raise ValueError(f"mega_batch_mult must be positive, got {mega_batch_mult}")
        self.lengths = list(map(int, lengths))
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.seed = seed
        self.mega_batch_mult = mega_batch_mult
        self._epoch = epoch
        if sampler is None:
            initialised = dist.is_available() and dist.is_initialized()
            if num_replicas is None:
                num_replicas = dist.get_world_size() if initialised else 1
            if rank is None:
                rank = dist.get_rank() if initialised else 0
            sampler = DistributedSampler(
                range(len(self.lengths)), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
            )
        self.sampler = sampler
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (forwarded to the index sampler)."""
        self._epoch = epoch
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = getattr(self.sampler, "epoch", self._epoch)
        indices = list(self.sampler)
        chunk = self.batch_size * self.mega_batch_mult
        batches: list[list[int]] = []
        for start in range(0, len(indices), chunk):
            part = sorted(indices[start : start + chunk], key=self.lengths.__getitem__, reverse=True)
            batches.extend(part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()  # only the last chunk can end in a short batch
        if self.shuffle:
            order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(self.seed + epoch))
            batches = [batches[i] for i in order.tolist()]
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
