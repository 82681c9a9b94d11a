"""MaskingCollator: the 80/10/10 statistics on real text, eligibility, labels, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_ssb.data import MaskingCollator

SPECIAL = {0, 100, 101, 102, 103}  # [PAD] [UNK] [CLS] [SEP] [MASK]


def _binomial_ok(k: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def masked(wiki_sample):
    """All ~2,850 training articles of the sample, masked in batches of 64 with one generator."""
    examples = [wiki_sample.train_dataset[i] for i in range(len(wiki_sample.train_dataset))]
    collator = MaskingCollator(wiki_sample.tokenizer)
    gen = torch.Generator().manual_seed(1234)
    batches = [(examples[i : i + 64], collator(examples[i : i + 64], generator=gen))
               for i in range(0, len(examples), 64)]
    return collator, batches


def test_rates_match_80_10_10(masked):
    _, batches = masked
    eligible = chosen = to_mask = changed = 0
    for examples, batch in batches:
        original = _original(examples, batch["input_ids"].shape)
        is_chosen = batch["labels"] != -100
        real = batch["attention_mask"].bool()
        eligible += int((real & ~torch.isin(original, torch.tensor(sorted(SPECIAL)))).sum())
        chosen += int(is_chosen.sum())
        to_mask += int((is_chosen & (batch["input_ids"] == 103)).sum())
        changed += int((is_chosen & (batch["input_ids"] != 103) & (batch["input_ids"] != original)).sum())
    assert eligible > 250_000  # real text, not a toy
    assert _binomial_ok(chosen, eligible, 0.15), chosen / eligible
    assert _binomial_ok(to_mask, chosen, 0.8), to_mask / chosen
    # "random" draws the original token itself with probability ~1/30000: negligible here.
    assert _binomial_ok(changed, chosen, 0.1), changed / chosen
    unchanged = chosen - to_mask - changed
    assert _binomial_ok(unchanged, chosen, 0.1), unchanged / chosen


def _original(examples, shape):
    """The unmasked ids, padded like the batch."""
    ids = torch.zeros(shape, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
    return ids


def test_labels_are_original_ids_at_chosen_positions_only(masked):
    _, batches = masked
    for examples, batch in batches[:10]:
        original = _original(examples, batch["input_ids"].shape)
        chosen = batch["labels"] != -100
        assert torch.equal(batch["labels"][chosen], original[chosen])
        # Positions not chosen are untouched.
        assert torch.equal(batch["input_ids"][~chosen], original[~chosen])


def test_special_and_padding_never_chosen(masked):
    _, batches = masked
    for examples, batch in batches:
        original = _original(examples, batch["input_ids"].shape)
        chosen = batch["labels"] != -100
        assert not chosen[batch["attention_mask"] == 0].any()
        assert not torch.isin(original[chosen], torch.tensor(sorted(SPECIAL))).any()
        assert (batch["input_ids"][:, 0] == 101).all()  # [CLS] kept in place
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["input_ids"].shape[1] == max(lengths)  # padded to the longest in the batch
    assert batch["attention_mask"].sum(1).tolist() == lengths


def test_random_replacements_are_real_tokens(masked):
    collator, batches = masked
    for examples, batch in batches:
        original = _original(examples, batch["input_ids"].shape)
        chosen = batch["labels"] != -100
        replaced = batch["input_ids"][chosen & (batch["input_ids"] != 103) & (batch["input_ids"] != original)]
        assert not torch.isin(replaced, torch.tensor(sorted(SPECIAL))).any()
        assert not ((replaced >= 1) & (replaced <= 998)).any()  # ids 1-998 are [unusedN] or special: never drawn
    assert 0 not in collator.random_ids and 103 not in collator.random_ids
    assert len(collator.random_ids) > 29_000


def test_same_generator_seed_same_masks(wiki_sample):
    examples = [wiki_sample.val_dataset[i] for i in range(32)]
    collator = wiki_sample.collate_fn
    a = collator(examples, generator=torch.Generator().manual_seed(7))
    b = collator(examples, generator=torch.Generator().manual_seed(7))
    c = collator(examples, generator=torch.Generator().manual_seed(8))
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["labels"], c["labels"])


def test_options(tokenizer):
    examples = [{"input_ids": [101, 2023, 2003, 102]}, {"input_ids": [101, 7592, 102]}]
    batch = MaskingCollator(tokenizer, pad_to_multiple_of=8)(examples)
    assert batch["input_ids"].shape == (2, 8) and batch["input_ids"].dtype == torch.long
    none = MaskingCollator(tokenizer, mlm_probability=0.0)(examples)
    assert (none["labels"] == -100).all()
    all_masked = MaskingCollator(tokenizer, mlm_probability=1.0, mask_ratio=1.0, random_ratio=0.0)(examples)
    assert all_masked["input_ids"].tolist() == [[101, 103, 103, 102], [101, 103, 102, 0]]
    assert all_masked["labels"].tolist() == [[-100, 2023, 2003, -100], [-100, 7592, -100, -100]]
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskingCollator(tokenizer, mask_ratio=0.95, random_ratio=0.1)
