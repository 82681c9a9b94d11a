"""Fine-tuning trains with dropout on, whatever the encoder starts from (issue #10.4).

``from_pretrained`` returns a model in eval mode and Lightning keeps module modes at the start of
training, so a Hugging Face start used to fine-tune with dropout off; an MLM checkpoint start (built
fresh, then loaded) was always in train mode. Both must be in train mode in the first training step.
"""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from transformers import BertForSequenceClassification

from lightning_ssb.models import BertArchitecture, MLMModule, SequenceClassifier

TINY = BertArchitecture(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                        vocab_size=30522, max_position_embeddings=64)  # default dropout 0.1


def batches(n=2, B=4, T=12, K=5):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1000, 2000, (B, T), generator=g),
             "attention_mask": torch.ones(B, T, dtype=torch.long),
             "labels": torch.randint(0, K, (B,), generator=g)} for _ in range(n)]


class FirstStep(Callback):
    """In the first training step: the module modes, and two forward passes of the same batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx:
            return
        self.training = pl_module.model.training
        self.dropout_modes = {m.training for m in pl_module.model.modules() if isinstance(m, torch.nn.Dropout)}
        with torch.no_grad():
            outputs = [pl_module.model(input_ids=batch["input_ids"]).logits for _ in range(2)]
        self.differ = not torch.equal(*outputs)


def first_step(module, data) -> FirstStep:
    probe = FirstStep()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[probe])
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return probe


def test_from_pretrained_alone_is_in_eval_mode(minilm_path):
    # the premise of the fix: without it the Hugging Face start would fine-tune in eval mode
    assert BertForSequenceClassification.from_pretrained(minilm_path, num_labels=5).training is False


@pytest.mark.parametrize("start", ["huggingface", "mlm_checkpoint"])
def test_fine_tuning_trains_with_dropout_on(start, minilm_path, tmp_path):
    if start == "huggingface":
        pretrained = str(minilm_path)
    else:
        mlm = MLMModule(architecture=TINY)
        trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
        trainer.strategy.connect(mlm)
        trainer.save_checkpoint(tmp_path / "mlm.ckpt")
        pretrained = str(tmp_path / "mlm.ckpt")
    probe = first_step(SequenceClassifier(num_labels=5, pretrained=pretrained), batches())
    assert probe.training is True
    assert probe.dropout_modes == {True}  # every dropout layer of the encoder and the head
    assert probe.differ  # dropout really acts: the same batch gives two different outputs


def test_mlm_pretraining_from_huggingface_trains_with_dropout_on(minilm_path):
    data = batches()
    for b in data:  # MLM targets: a few positions per row, the first always
        chosen = torch.rand(b["input_ids"].shape, generator=torch.Generator().manual_seed(1)) < 0.3
        chosen[:, 0] = True
        b["labels"] = torch.where(chosen, b["input_ids"], -100)
    probe = first_step(MLMModule(pretrained=str(minilm_path)), data)
    assert probe.training is True and probe.dropout_modes == {True} and probe.differ
