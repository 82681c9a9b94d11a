"""What the Wikipedia and FewRel data modules share: cached tokenisation and loaders.

``prepare_data`` (run once per node under DDP) tokenises and writes the cache;
``setup`` (every rank) reads it. A subclass says what the cache depends on
(``_cache_parts``) and how to build the splits (``_build_splits``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader, DistributedSampler

from lightning_ssb.data.cache import cache_key, default_cache_dir, load_splits, save_splits
from lightning_ssb.data.dataset import TokenizedDataset
from lightning_ssb.data.sampling import LengthGroupedBatchSampler
from lightning_ssb.data.tokenizer import tokenizer_fingerprint

log = logging.getLogger(__name__)

SPLITS = ("train", "val")


class TokenizedDataModule(pl.LightningDataModule):
    """Base class; subclasses set ``tokenizer``, ``collate_fn`` and the options used below."""

    name = "data"
    batch_size: int
    num_workers: int
    length_grouped: bool
    seed: int

    def __init__(self, cache_dir: str | None = None) -> None:
        super().__init__()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.train_dataset: TokenizedDataset | None = None
        self.val_dataset: TokenizedDataset | None = None
        self.cache_hit: bool | None = None  # set by prepare_data: was the cache already there?
        self._resume_epoch = 0  # from a checkpoint: the epoch the training sampler resumes at

    # --- subclass hooks -------------------------------------------------------------------
    def _cache_parts(self) -> dict[str, Any]:
        raise NotImplementedError

    def _build_splits(self) -> tuple[dict[str, TokenizedDataset], dict[str, Any]]:
        raise NotImplementedError

    # --- caching ----------------------------------------------------------------------------
    @property
    def cache_path(self) -> Path:
        parts = {"module": type(self).__name__, "tokenizer": tokenizer_fingerprint(self.tokenizer),
                 **self._cache_parts()}
        return self.cache_dir / f"{self.name}-{cache_key(parts)}.npz"

    def prepare_data(self) -> None:
        """Tokenise once and cache to disk (skipped when the cache entry exists)."""
        path = self.cache_path
        self.cache_hit = path.exists()
        if self.cache_hit:
            log.info("%s: using cached tokenisation %s", self.name, path)
            return
        splits, meta = self._build_splits()
        save_splits(path, splits, meta)
        sizes = ", ".join(f"{len(splits[k])} {k}" for k in SPLITS)
        print(f"lightning_ssb: {self.name}: tokenised {sizes} examples, cached in {path}", file=sys.stderr)

    def setup(self, stage: str | None = None) -> None:
        """Load the cached splits (tokenising first if ``prepare_data`` has not run)."""
        if self.train_dataset is not None:
            return
        path = self.cache_path
        if not path.exists():
            self.prepare_data()
        splits, _ = load_splits(path, SPLITS)
        self.train_dataset, self.val_dataset = splits["train"], splits["val"]

    # --- loaders ----------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        # The sampler starts at the epoch the fit is about to run. On a resume Lightning 2.6 builds this loader
        # (for estimated_stepping_batches) and its first iterator before it restores the loops or sets the
        # sampler's epoch (issue #21938): without the epoch from load_state_dict the resumed epoch would
        # replay epoch 0's order
        epoch = max(self._resume_epoch, self.trainer.current_epoch if self._trainer_attached() else 0)
        if self.length_grouped:
            sampler = LengthGroupedBatchSampler(self.train_dataset.lengths, self.batch_size, shuffle=True,
                                                seed=self.seed, epoch=epoch)
            return DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.collate_fn, **self._workers())
        if self._trainer_attached() and self.trainer.world_size > 1:
            # the DistributedSampler Lightning would add (its seed included), but at the right epoch
            shuffled = DistributedSampler(self.train_dataset, shuffle=True,
                                          seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
            shuffled.set_epoch(epoch)
            return DataLoader(self.train_dataset, batch_size=self.batch_size, sampler=shuffled,
                              collate_fn=self.collate_fn, **self._workers())
        return DataLoader(
            self.train_dataset, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate_fn, **self._workers()
        )

    def _trainer_attached(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def state_dict(self) -> dict:
        """The epoch the training sampler draws next (a checkpoint at an epoch's end resumes with the next one)."""
        if not self._trainer_attached():
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        return {"sampler_epoch": self.trainer.current_epoch + int(done)}

    def load_state_dict(self, state_dict: dict) -> None:
        # restored before the training loader is first built (see train_dataloader)
        self._resume_epoch = int(state_dict.get("sampler_epoch", 0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate_fn, **self._workers()
        )

    def _workers(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}
