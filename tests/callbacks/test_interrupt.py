"""interrupted.ckpt keeps weights that training changed, and only those; its hint names what can be resumed."""

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback

from lightning_ssb.callbacks import InterruptCheckpoint
from tests.callbacks.toys import ToyClassificationData, ToyTask


class FailAt(Callback):
    """Raise in set-up (``step=None``, as a failed download does) or after training batch ``step`` of epoch 0."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def setup(self, trainer, pl_module, stage) -> None:
        if self.step is None:
            raise ConnectionError("no network")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.step:
            raise RuntimeError("boom")


def fit(tmp_path, step: int | None) -> InterruptCheckpoint:
    L.seed_everything(0)
    keep = InterruptCheckpoint(str(tmp_path / "checkpoints"))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[keep, FailAt(step)])
    with pytest.raises((ConnectionError, RuntimeError)):
        trainer.fit(ToyTask("classification"), ToyClassificationData(train_per_class=8, test_per_class=2, batch_size=8))
    return keep


def test_an_error_before_the_first_step_writes_no_checkpoint(tmp_path):
    keep = fit(tmp_path, step=None)
    assert not (tmp_path / "checkpoints").exists() and not list(tmp_path.rglob("*.ckpt")), keep.path


def test_an_error_after_a_step_keeps_the_weights_and_says_there_is_no_epoch_to_resume(tmp_path, caplog):
    import torch

    with caplog.at_level("INFO"):
        keep = fit(tmp_path, step=1)
    saved = torch.load(keep.path, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 2  # batches 0 and 1 were trained on
    assert ("RuntimeError at global step 2: weights saved in " f"{keep.path}; no epoch was complete, so there is no "
            "last.ckpt to resume from: a new fit starts over (--if_exists overwrite)") in caplog.text
