"""The probe set: fixed examples (and, for MLM, fixed masks) that every analysis of a run sees.

A probe set is rebuilt from ``(seed, train_indices, test_indices)`` alone, which the monitor
stores in its checkpoint state, so a resumed run analyses exactly the same examples.

- classification (FewRel): probe-train is a seeded subset of ``train_dataset``, probe-test is
  ``val_dataset`` (the test split) or a seeded subset of it; one example per sentence at the
  position of the rule (``cls`` or ``head_entity``).
- MLM: probe-train is a seeded subset of ``train_dataset``, probe-test of ``val_dataset``;
  masks are drawn once by ``collate_fn(examples, generator)`` with a seeded generator; every
  position whose input is ``[MASK]`` is one example labelled by its original token (chosen
  positions left unchanged or given a random token are not examples), restricted to the
  ``top_k`` tokens most frequently masked in probe-train among those also masked in probe-test
  (``"all"``: every such token), since every class needs test examples for its recall.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import torch

from lightning_ssb.capture import POSITION_RULES, select_positions

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class ProbeConfig:
    """The probe set the monitor analyses: which examples, how many, in which batches."""

    train_size: int | None = 4096
    """Training examples the read-out is fitted on (sequences for MLM; null: all)."""
    test_size: int | None = 1024
    """Held-out examples the read-out is scored on, from the validation split (the FewRel test split; null: all)."""
    batch_size: int = 64
    """Batch size of the probe's eval passes."""
    seed: int = 0
    """Seed of the probe subsets and of the MLM probe masks (kept in the checkpoint)."""
    top_k_tokens: int | Literal["all"] = 100
    """MLM only: labels are the K tokens most often masked in probe-train (and in probe-test), or all."""
    position_rule: Literal["auto", "cls", "head_entity", "masked"] = "auto"
    """Which position of a sequence is its example: auto (masked for MLM, cls for classification), cls,
    head_entity or masked (every position whose input is [MASK])."""

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ValueError(f"probe.{name} must be null or an integer >= 2, got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"probe.batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (self.top_k_tokens == "all" or (isinstance(self.top_k_tokens, int) and self.top_k_tokens >= 2)):
            raise ValueError(f"probe.top_k_tokens must be an integer >= 2 or 'all', got {self.top_k_tokens!r}")
        if self.position_rule not in ("auto", *POSITION_RULES):
            raise ValueError(f"probe.position_rule must be one of {['auto', *POSITION_RULES]}, "
                             f"got {self.position_rule!r}")

    def build(self, datamodule, task: str, state: dict | None = None) -> ProbeSet:
        """The probe set of ``datamodule`` for ``task`` (``state``: rebuild a checkpoint's), checked."""
        probe = build_probe_set(datamodule, task=task, position_rule=self.rule_for(task), train_size=self.train_size,
                                test_size=self.test_size, seed=self.seed, batch_size=self.batch_size,
                                top_k=self.top_k_tokens, state=state)
        probe.check()
        return probe

    def rule_for(self, task: str) -> str:
        """The position rule for ``task``; a ValueError when the rule does not fit it."""
        rule = self.position_rule if self.position_rule != "auto" else ("masked" if task == "mlm" else "cls")
        if (task == "mlm") != (rule == "masked"):
            raise ValueError(f"probe.position_rule {rule!r} does not fit task {task!r}: "
                             "use 'masked' for MLM, 'cls' or 'head_entity' for classification")
        return rule


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

    def check(self) -> None:
        """A read-out needs at least 2 training and 1 test example."""
        n_train, n_test = self.y_train.numel(), self.y_test.numel()
        if n_train < 2 or n_test < 1:
            raise ValueError(f"the probe set has {n_train} train / {n_test} test examples; "
                             "increase probe.train_size / probe.test_size")

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


def _select(batch: dict, rule: str, class_of_token: torch.Tensor | None, mask_id: int | None) -> ProbeBatch:
    rows, positions, labels = select_positions(batch, rule, class_of_token, mask_id)
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    return ProbeBatch(inputs, rows, positions, labels.long())


def _masked_counts(batches: list[dict], mask_id: int | None) -> Counter:
    counts = Counter()
    for batch in batches:
        labels = batch["labels"]
        keep = labels != -100
        if mask_id is not None:
            keep &= batch["input_ids"] == mask_id
        counts.update(labels[keep].tolist())
    return counts


def top_k_tokens(batches: list[dict], k: int | str, test_batches: list[dict] | None = None,
                 mask_id: int | None = None) -> list[int]:
    """Token ids most often masked in ``batches`` (ties broken by smaller id), ``k`` of them or all.

    With ``mask_id``, only positions whose input is ``[MASK]`` count (the probe's examples).

    With ``test_batches``, only tokens also masked there count: every class needs probe-test
    examples for its recall.
    """
    counts = _masked_counts(batches, mask_id)
    if test_batches is not None:
        in_test = _masked_counts(test_batches, mask_id)
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

    class_ids = mask_id = None
    if task == "mlm":
        mask_id = int(datamodule.tokenizer.mask_token_id)
        class_ids = state["class_ids"] if state is not None and state.get("class_ids") else top_k_tokens(
            train_raw, top_k, test_raw, mask_id)
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
        train_batches=[_select(b, position_rule, class_of_token, mask_id) for b in train_raw],
        test_batches=[_select(b, position_rule, class_of_token, mask_id) for b in test_raw],
        class_ids=class_ids,
    )
