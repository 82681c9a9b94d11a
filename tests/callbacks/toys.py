"""Tiny data modules and LightningModules that follow docs/ARCHITECTURE.md, for the callback tests.

Real Hugging Face BERT models (a few layers, hidden 32-64) and a real WordPiece tokenizer; the
data is synthetic but learnable: a classification label is carried by one token in the
sentence (whose position is ``head_pos``), MLM sequences follow a skewed unigram distribution.
"""

from __future__ import annotations

import functools

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

PAD, CLS, SEP, MASK = 0, 101, 102, 103
FIRST_WORD = 2000  # ids 2000.. are ordinary words in bert-base-uncased


@functools.lru_cache(maxsize=1)
def tokenizer():
    from lightning_ssb.data.tokenizer import load_tokenizer

    return load_tokenizer()  # the shipped bert-base-uncased WordPiece vocabulary


def pad(examples: list[dict]) -> dict:
    T = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), T, dtype=torch.long)
    mask = torch.zeros(len(examples), T, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        mask[i, : len(e["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask}


def mask_tokens(batch: dict, generator: torch.Generator | None, vocab: int, p: float = 0.15) -> dict:
    """BERT masking: choose p of the real non-special tokens; 80% [MASK], 10% random, 10% kept."""
    ids = batch["input_ids"]
    special = (ids == PAD) | (ids == CLS) | (ids == SEP)
    chosen = (torch.rand(ids.shape, generator=generator) < p) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(FIRST_WORD, vocab, ids.shape, generator=generator)
    new = torch.where(chosen & (roll < 0.8), torch.full_like(ids, MASK), ids)
    new = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, new)
    return {**batch, "input_ids": new, "labels": labels}


class _ToyData(L.LightningDataModule):
    """What both toy data modules share: seeded splits built by ``_make`` and plain loaders."""

    sizes: tuple[int, int]
    batch_size: int
    seed: int

    def setup(self, stage: str) -> None:
        g = torch.Generator().manual_seed(self.seed)
        self.train_dataset = self._make(self.sizes[0], g)
        self.val_dataset = self._make(self.sizes[1], g)

    def train_dataloader(self):
        return DataLoader(self.train_dataset, self.batch_size, shuffle=True, collate_fn=self.collate_fn)

    def val_dataloader(self):
        return DataLoader(self.val_dataset, self.batch_size, collate_fn=self.collate_fn)


class ToyClassificationData(_ToyData):
    """K classes; class k puts word FIRST_WORD+k at a random position (its ``head_pos``)."""

    task = "classification"

    def __init__(self, num_labels: int = 4, train_per_class: int = 24, test_per_class: int = 8,
                 batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.num_labels, self.batch_size, self.seed = num_labels, batch_size, seed
        self.sizes = (train_per_class, test_per_class)
        self.tokenizer = tokenizer()
        self.vocab_size = self.tokenizer.vocab_size
        self.label_names = [f"relation_{k}" for k in range(num_labels)]

    def _make(self, per_class: int, g: torch.Generator) -> list[dict]:
        out = []
        for k in range(self.num_labels):
            for _ in range(per_class):
                n = int(torch.randint(5, 12, (1,), generator=g))
                words = torch.randint(FIRST_WORD + 100, FIRST_WORD + 400, (n,), generator=g).tolist()
                pos = int(torch.randint(0, n, (1,), generator=g))
                words[pos] = FIRST_WORD + k
                out.append({"input_ids": [CLS, *words, SEP], "label": k, "head_pos": pos + 1})
        return out


    def collate_fn(self, examples: list[dict], generator: torch.Generator | None = None) -> dict:
        batch = pad(examples)
        batch["labels"] = torch.tensor([e["label"] for e in examples])
        batch["head_pos"] = torch.tensor([e["head_pos"] for e in examples])
        return batch


class ToyMLMData(_ToyData):
    """Sequences of words drawn from a skewed distribution over 60 words; BERT masking in collate."""

    task = "mlm"

    def __init__(self, train_size: int = 96, val_size: int = 32, batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.sizes, self.batch_size, self.seed = (train_size, val_size), batch_size, seed
        self.tokenizer = tokenizer()
        self.vocab_size = self.tokenizer.vocab_size

    def _make(self, n: int, g: torch.Generator) -> list[dict]:
        probs = 1.0 / torch.arange(1, 61).float()
        out = []
        for _ in range(n):
            length = int(torch.randint(8, 20, (1,), generator=g))
            words = (FIRST_WORD + torch.multinomial(probs, length, replacement=True, generator=g)).tolist()
            out.append({"input_ids": [CLS, *words, SEP]})
        return out


    def collate_fn(self, examples: list[dict], generator: torch.Generator | None = None) -> dict:
        return mask_tokens(pad(examples), generator, FIRST_WORD + 60)


def bert_config(layers: int = 2, hidden: int = 32, heads: int = 4, num_labels: int = 4, attn="sdpa") -> BertConfig:
    return BertConfig(vocab_size=tokenizer().vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=64,
                      num_labels=num_labels, attn_implementation=attn)


class ToyTask(L.LightningModule):
    """``model`` is a HF BERT, ``task`` as the data; the HF loss is the training loss."""

    def __init__(self, task: str = "classification", lr: float = 3e-3, **config) -> None:
        super().__init__()
        self.task = task
        cls = BertForMaskedLM if task == "mlm" else BertForSequenceClassification
        self.model = cls(bert_config(**config))
        self.lr = lr

    def _loss(self, batch):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
        return self.model(**inputs).loss

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch), batch_size=batch["input_ids"].shape[0])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def fast_analysis(**overrides):
    """An ``AnalysisConfig`` for callback tests: one read-out family, no null and fixed penalties (the
    nulls and the cross-validation multiply the analysis time; the analysis tests cover them), plus
    ``overrides``."""
    import dataclasses

    from lightning_ssb.analysis import AnalysisConfig

    names = {f.name for f in dataclasses.fields(AnalysisConfig)}
    quick = {k: v for k, v in {"readout": "shared", "null_mode": "off", "l2": 1e-3, "own_l2": 1e-3,
                               "own_group_l2": 1e-3}.items() if k in names}
    return AnalysisConfig(**{**quick, **overrides})
