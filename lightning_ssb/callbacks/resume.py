"""What a resumed fit needs besides Lightning's own checkpoint state.

- ``RNGState``: the random state of every generator with every checkpoint, restored on resume. It
  lives in ``lightning_ssb/models/rng.py`` (every BertTask adds it) and is re-exported here.
- ``InterruptCheckpoint``: Ctrl-C, SIGTERM or an error mid-epoch writes ``interrupted.ckpt``
  (the weights survive; single-process runs only, see ``on_exception``), but only after an optimiser
  step of this fit: an error in set-up (a failed download) leaves no checkpoint of untrained weights.
  It is not ``last.ckpt``: resuming from the middle of an epoch cannot replay the rest of that epoch
  exactly, so ``--ckpt_path last`` keeps starting from the last complete epoch.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_ssb.models.rng import RNGState

__all__ = ["InterruptCheckpoint", "RNGState"]


class InterruptCheckpoint(Callback):
    """On Ctrl-C, SIGTERM or an error during fit, save ``<dirpath>/interrupted.ckpt``.

    Args:
        dirpath: Folder of the checkpoint (the run's checkpoint folder).
        filename: File name without ``.ckpt``.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.dirpath, self.filename = dirpath, filename
        self._start_step: int | None = None  # the global step when training started (None: not yet)

    @property
    def path(self) -> str:
        return os.path.join(self.dirpath, f"{self.filename}.ckpt")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._start_step = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_step = trainer.global_step

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # saving is a collective under DDP, and an error on one rank leaves the others elsewhere: a
        # save there would hang every rank, so only a single process writes interrupted.ckpt
        if trainer.state.fn != "fit" or trainer.sanity_checking or trainer.world_size > 1:
            return
        if self._start_step is None or trainer.global_step == self._start_step:
            return  # no optimiser step since the fit started (e.g. a failed download): nothing new to keep
        trainer.save_checkpoint(self.path)
        last = os.path.join(self.dirpath, "last.ckpt")
        resume = ("--ckpt_path last resumes from the last complete epoch" if os.path.isfile(last) else
                  "no epoch was complete, so there is no last.ckpt to resume from: a new fit starts over "
                  "(--if_exists overwrite)")
        rank_zero_info(f"{type(exception).__name__} at global step {trainer.global_step}: weights saved in "
                       f"{self.path}; {resume}")
