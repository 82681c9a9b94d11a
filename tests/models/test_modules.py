"""The two LightningModules: loss definitions, checkpoint hand-over, schedule, bad input."""

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from transformers import BertForMaskedLM

from lightning_ssb.models import BertArchitecture, MLMModule, OptimizerConfig, SequenceClassifier
from lightning_ssb.models.optim import configure_adamw

TINY = BertArchitecture(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                        vocab_size=120, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)


def mlm_batch(seed=0, B=3, T=10, V=120):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 7:] = 0
    ids[0, 7:] = 0
    labels = torch.full((B, T), -100)
    chosen = torch.rand(B, T, generator=g) < 0.3
    chosen &= mask.bool()
    chosen[1, 2] = True
    labels[chosen] = ids[chosen]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_masked_only_decoder_gives_the_full_decoder_loss():
    torch.manual_seed(0)
    module = MLMModule(architecture=TINY)
    batch = mlm_batch()
    logits, target = module.masked_logits(batch)
    ours = F.cross_entropy(logits, target)
    # the reference: Hugging Face's own loss, decoder applied at every position
    ref = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).loss
    assert logits.shape == (int((batch["labels"] != -100).sum()), TINY.vocab_size)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_classifier_starts_from_the_mlm_checkpoint(tmp_path):
    torch.manual_seed(0)
    mlm = MLMModule(architecture=TINY)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(mlm)
    ckpt = tmp_path / "mlm.ckpt"
    trainer.save_checkpoint(ckpt)
    clf = SequenceClassifier(num_labels=5, pretrained=str(ckpt))
    # architecture taken from the checkpoint, not the (BERT-6) default
    assert clf.model.config.hidden_size == 32 and clf.model.config.num_hidden_layers == 2
    for name, p in mlm.model.bert.named_parameters():
        if not name.startswith("pooler."):
            assert torch.equal(p, dict(clf.model.bert.named_parameters())[name]), name
    # the classifier's own checkpoint restores without the MLM checkpoint it started from
    trainer.strategy.connect(clf)
    ckpt2 = tmp_path / "clf.ckpt"
    trainer.save_checkpoint(ckpt2)
    ckpt.unlink()
    again = SequenceClassifier.load_from_checkpoint(ckpt2)
    ids = torch.randint(5, 120, (2, 6))
    clf.eval()
    again.eval()
    assert torch.allclose(clf(ids), again(ids))


def test_wrong_or_missing_checkpoint_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pretrained: .*nope.ckpt"):
        SequenceClassifier(num_labels=3, pretrained=str(tmp_path / "nope.ckpt"))
    clf = SequenceClassifier(num_labels=3, architecture=TINY)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(clf)
    trainer.save_checkpoint(tmp_path / "clf.ckpt")
    with pytest.raises(ValueError, match="task 'classification', expected an MLM"):
        SequenceClassifier(num_labels=3, pretrained=str(tmp_path / "clf.ckpt"))
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt: not a readable PyTorch checkpoint"):
        SequenceClassifier(num_labels=3, pretrained=str(tmp_path / "junk.ckpt"))


def test_hf_directory_checkpoint(tmp_path):
    torch.manual_seed(1)
    hf = BertForMaskedLM(TINY.to_config())
    hf.save_pretrained(tmp_path / "hf")
    mlm = MLMModule(pretrained=str(tmp_path / "hf"))
    assert torch.equal(mlm.model.bert.embeddings.word_embeddings.weight, hf.bert.embeddings.word_embeddings.weight)
    clf = SequenceClassifier(num_labels=4, pretrained=str(tmp_path / "hf"))
    assert torch.equal(clf.model.bert.encoder.layer[1].output.dense.weight,
                       hf.bert.encoder.layer[1].output.dense.weight)


def test_linear_warmup_then_decay_schedule():
    model = torch.nn.Linear(3, 3)
    cfg = OptimizerConfig(lr=1.0, warmup=4)
    opt = configure_adamw(model, cfg, total_steps=12)
    sched = opt["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(12):
        lrs.append(opt["optimizer"].param_groups[0]["lr"])
        opt["optimizer"].step()
        sched.step()
    # warm-up (s+1)/(w+1) for s < 4, then (12 - s) / 8
    expected = [1 / 5, 2 / 5, 3 / 5, 4 / 5] + [(12 - s) / 8 for s in range(4, 12)]
    assert lrs == pytest.approx(expected)
    # no decay on biases (the usual BERT rule)
    groups = opt["optimizer"].param_groups
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert groups[1]["params"][0] is model.bias


def test_architecture_validation():
    with pytest.raises(ValueError, match="hidden_size=100 is not a multiple of num_attention_heads=12"):
        BertArchitecture(hidden_size=100)
    with pytest.raises(ValueError, match="optimizer.schedule"):
        OptimizerConfig(schedule="cosine")


def test_nan_loss_stops_with_one_line():
    module = MLMModule(architecture=TINY)
    with pytest.raises(FloatingPointError, match="train loss is nan"):
        module.check_finite(torch.tensor(math.nan), "train")


def test_vocabulary_that_does_not_match_the_model_stops_before_training(tmp_path):
    from lightning_ssb.data import FewRelDataModule

    dm = FewRelDataModule(train_per_relation=40, test_per_relation=10, cache_dir=str(tmp_path))
    clf = SequenceClassifier(architecture=TINY)  # a 120-token vocabulary against bert-base-uncased's 30522
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", max_steps=1,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="data.tokenizer has 30522 tokens but model vocab_size is 120"):
        trainer.fit(clf, datamodule=dm)
    assert trainer.global_step == 0


def test_a_model_folder_without_weights_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        MLMModule(pretrained=str(tmp_path / "empty"))
    assert str(err.value) == (f"model.pretrained: {tmp_path / 'empty'}: a folder without config.json (expected a "
                              "Hugging Face model folder, or an MLM checkpoint .ckpt of this project)")
    BertForMaskedLM(TINY.to_config()).config.save_pretrained(tmp_path / "config_only")  # config, no weights
    with pytest.raises(FileNotFoundError, match="config_only: a folder without model.safetensors or pytorch_model.bin"):
        SequenceClassifier(num_labels=3, pretrained=str(tmp_path / "config_only"))
