"""What both training stages share: the optimiser, the vocabulary check, the NaN guard."""

from __future__ import annotations

import math

import lightning as L
import torch

from lightning_ssb.models.optim import OptimizerConfig, configure_adamw


class BertTask(L.LightningModule):
    """Base of the two stages. Subclasses set ``task`` and build ``self.model`` (a HF model)."""

    task: str = ""
    model: torch.nn.Module

    def __init__(self, optimizer: OptimizerConfig | None = None) -> None:
        super().__init__()
        if isinstance(optimizer, dict):  # from a checkpoint's hyper-parameters
            optimizer = OptimizerConfig(**optimizer)
        self.optim_cfg = optimizer or OptimizerConfig()

    @property
    def bert(self):
        """The encoder (``transformers.BertModel``); ``bert.encoder.layer[l]`` is layer ``l``."""
        return self.model.bert

    def check_vocabulary(self) -> None:
        """Stop early when the data module's tokenizer and the model's vocabulary disagree."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        size = getattr(dm, "vocab_size", None)
        if size is not None and size != self.model.config.vocab_size:
            raise ValueError(
                f"data.tokenizer has {size} tokens but model vocab_size is {self.model.config.vocab_size}: "
                "set model.architecture.vocab_size to match, or use the tokenizer the model was trained with"
            )

    def check_finite(self, loss: torch.Tensor, stage: str) -> None:
        """A NaN/inf loss stops the run with one line instead of silently poisoning the weights."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{stage} loss is {loss.item()} at global step {self.global_step}: lower model.optimizer.lr, "
                "set trainer.gradient_clip_val, or check the data (already logged results are kept)"
            )

    # validation and test share one metric set; subclasses log it in _log_eval(stage)
    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _log_eval(self, stage: str) -> None:
        raise NotImplementedError

    def configure_callbacks(self):
        """Every fit of a BERT task keeps its random state in its checkpoints, so a resume draws the same
        masks, data order and dropout as the uninterrupted run (see models/rng.py)."""
        from lightning_ssb.models.rng import RNGState  # here: models/__init__ need not load the callback

        return [RNGState()]

    def configure_optimizers(self):
        total = self.trainer.estimated_stepping_batches
        total = total if math.isfinite(total) else 10_000
        mixed = "mixed" in str(self.trainer.precision)  # bf16-mixed / 16-mixed: no fused kernel with clipping
        return configure_adamw(self.model, self.optim_cfg, int(total), fused=not mixed)
