"""The probe set: fixed examples (and, for MLM, fixed masks) that every analysis of a run sees.

A probe set is rebuilt from ``(seed, train_indices, test_indices)`` alone, which the monitor
stores in its checkpoint state, so a resumed run analyses exactly the same examples.

- classification (FewRel): probe-train is a seeded subset of ``train_dataset``, probe-test is
  ``val_dataset`` (the test split) or a seeded subset of it; one example per sentence at the
  position of the rule (``cls`` or ``head_entity``).
- MLM: probe-train is a seeded subset of ``train_dataset``, probe-test of ``val_dataset``;
  masks are drawn once by ``collate_fn(examples, generator)`` with a seeded generator; every
  masked (chosen) position is one example labelled by its original token, restricted to the
  ``top_k`` tokens most frequently masked in probe-train among those also masked in probe-test
  (``"all"``: every such token), since every class needs test examples for its recall.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class ProbeBatch:
    """One padded batch of probe inputs and the ``(row, position) -> label`` examples it yields."""

    inputs: dict[str, torch.Tensor]  # model inputs only: input_ids, attention_mask [, token_type_ids]
    rows: torch.Tensor  # [n] long
    positions: torch.Tensor  # [n] long
    labels: torch.Tensor  # [n] long in 0..K-1

    @property
    def num_examples(self) -> int:
        return int(self.labels.numel())


@dataclass
class ProbeSet:
    """Probe-train and probe-test batches, the class set and what is needed to rebuild them."""

    task: str
    position_rule: str
    seed: int
    train_indices: list[int]
    test_indices: list[int]
    num_classes: int
    label_names: list[str]
    train_batches: list[ProbeBatch] = field(repr=False)
    test_batches: list[ProbeBatch] = field(repr=False)
    class_ids: list[int] | None = None  # MLM: the token id of each class

    @property
    def y_train(self) -> torch.Tensor:
        return torch.cat([b.labels for b in self.train_batches])

    @property
    def y_test(self) -> torch.Tensor:
        return torch.cat([b.labels for b in self.test_batches])

    def state_dict(self) -> dict:
        return {"seed": self.seed, "train_indices": list(self.train_indices),
                "test_indices": list(self.test_indices), "class_ids": self.class_ids,
                "position_rule": self.position_rule}


def seeded_subset(n_total: int, size: int | None, generator: torch.Generator) -> list[int]:
    """``size`` distinct indices of ``range(n_total)`` drawn with ``generator`` (all when None or too big), sorted."""
    if size is None or size >= n_total:
        return list(range(n_total))
    return sorted(torch.randperm(n_total, generator=generator)[:size].tolist())


def stratified_subset(labels: list[int], size: int | None, generator: torch.Generator) -> list[int]:
    """``size`` indices with every class represented as evenly as possible (seeded), sorted.

    A plain random subset of a few examples per class misses some classes, and a read-out cannot be
    scored on a class it never saw: each class gets ``size // K`` examples (all it has when fewer),
    the remainder goes to randomly chosen classes.
    """
    n_total = len(labels)
    if size is None or size >= n_total:
        return list(range(n_total))
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    classes = sorted(by_class)
    pools = {c: [by_class[c][j] for j in torch.randperm(len(by_class[c]), generator=generator).tolist()]
             for c in classes}
    quota = {c: size // len(classes) for c in classes}
    for j in torch.randperm(len(classes), generator=generator)[: size % len(classes)].tolist():
        quota[classes[j]] += 1
    return sorted(i for c in classes for i in pools[c][: quota[c]])


def _subset(dataset, size: int | None, generator: torch.Generator, task: str) -> list[int]:
    if task != "mlm" and len(dataset) and "label" in dataset[0]:
        return stratified_subset([dataset[i]["label"] for i in range(len(dataset))], size, generator)
    return seeded_subset(len(dataset), size, generator)


def _collate(datamodule, examples: list[dict], generator: torch.Generator) -> dict:
    try:
        return datamodule.collate_fn(examples, generator=generator)
    except TypeError:  # a collate without masking randomness (classification)
        return datamodule.collate_fn(examples)


def _batches(datamodule, dataset, indices: list[int], batch_size: int, generator: torch.Generator) -> list[dict]:
    # sort by length so that padding to the longest of a batch wastes little; stable in the index
    order = sorted(indices, key=lambda i: (len(dataset[i]["input_ids"]), i))
    return [_collate(datamodule, [dataset[i] for i in order[s:s + batch_size]], generator)
            for s in range(0, len(order), batch_size)]


def _select(batch: dict, rule: str, class_of_token: torch.Tensor | None) -> ProbeBatch:
    from lightning_ssb.callbacks.capture import select_positions

    rows, positions, labels = select_positions(batch, rule, class_of_token)
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    return ProbeBatch(inputs, rows, positions, labels.long())


def _masked_counts(batches: list[dict]) -> Counter:
    counts = Counter()
    for batch in batches:
        labels = batch["labels"]
        counts.update(labels[labels != -100].tolist())
    return counts


def top_k_tokens(batches: list[dict], k: int | str, test_batches: list[dict] | None = None) -> list[int]:
    """Token ids most often masked in ``batches`` (ties broken by smaller id), ``k`` of them or all.

    With ``test_batches``, only tokens also masked there count: every class needs probe-test
    examples for its recall.
    """
    counts = _masked_counts(batches)
    if test_batches is not None:
        in_test = _masked_counts(test_batches)
        counts = Counter({t: c for t, c in counts.items() if t in in_test})
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if k != "all":
        ranked = ranked[: int(k)]
    return [token for token, _ in ranked]


def build_probe_set(
    datamodule,
    *,
    task: str,
    position_rule: str,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    batch_size: int,
    top_k: int | str = 100,
    state: dict | None = None,
) -> ProbeSet:
    """Build the probe set from ``datamodule.train_dataset``/``val_dataset``/``collate_fn``.

    ``state`` (a previous ``ProbeSet.state_dict()``) makes it rebuild the same examples and
    masks after a resume even when the sizes given now differ.
    """
    if state is not None:
        seed = state["seed"]
    generator = torch.Generator().manual_seed(seed)
    train_ds, test_ds = datamodule.train_dataset, datamodule.val_dataset
    if state is not None:
        train_idx, test_idx = list(state["train_indices"]), list(state["test_indices"])
    else:
        train_idx = _subset(train_ds, train_size, generator, task)
        test_idx = _subset(test_ds, test_size, generator, task)
    # one generator, drawn in a fixed order: the masks are a function of the seed and indices only
    mask_gen = torch.Generator().manual_seed(seed + 1)
    train_raw = _batches(datamodule, train_ds, train_idx, batch_size, mask_gen)
    test_raw = _batches(datamodule, test_ds, test_idx, batch_size, mask_gen)

    class_ids = None
    if task == "mlm":
        class_ids = state["class_ids"] if state is not None and state.get("class_ids") else top_k_tokens(train_raw, top_k, test_raw)
        vocab = int(datamodule.vocab_size)
        class_of_token = torch.full((vocab,), -1, dtype=torch.long)
        class_of_token[torch.tensor(class_ids, dtype=torch.long)] = torch.arange(len(class_ids))
        label_names = list(datamodule.tokenizer.convert_ids_to_tokens(class_ids))
        num_classes = len(class_ids)
    else:
        class_of_token = None
        num_classes = int(datamodule.num_labels)
        names = getattr(datamodule, "label_names", None)
        label_names = list(names) if names is not None else [str(i) for i in range(num_classes)]
    return ProbeSet(
        task=task, position_rule=position_rule, seed=seed, train_indices=train_idx, test_indices=test_idx,
        num_classes=num_classes, label_names=label_names,
        train_batches=[_select(b, position_rule, class_of_token) for b in train_raw],
        test_batches=[_select(b, position_rule, class_of_token) for b in test_raw],
        class_ids=class_ids,
    )
