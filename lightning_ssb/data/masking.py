"""BERT's masked-language-modelling corruption (docs/method.md section 1).

Each eligible token is chosen independently with probability ``mlm_probability``
(15%); a chosen token becomes [MASK] with probability ``mask_ratio`` (80%), a random
token with probability ``random_ratio`` (10%), and stays unchanged otherwise (10%).
The loss is taken on chosen positions only: ``labels`` holds the original id there
and -100 elsewhere.

Choices:
- Eligible = every real token that is not a special token of the tokenizer, i.e. not
  [CLS], [SEP], [PAD], [MASK], [UNK] (predicting [UNK] teaches nothing) nor entity
  markers. Padding is added here, so it is never chosen.
- Random replacements are drawn uniformly from the non-special ids, excluding the
  ``[unusedN]`` placeholders, which never occur in text.
- Choices are independent Bernoulli draws (as in Hugging Face's collator), so a short
  sequence may have no chosen token; no minimum is forced because that would raise the
  rate above 15% on short sequences. A whole batch with none is possible only for tiny
  batches; the MLM loss must tolerate an all -100 ``labels``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from lightning_ssb.data.collate import pad_input_ids

IGNORE_INDEX = -100  # positions the loss skips (PyTorch's cross-entropy default)


class MaskingCollator:
    """Pads MLM examples and applies the 80/10/10 corruption.

    Args:
        tokenizer: supplies the [MASK]/[PAD] ids, the special ids and the vocabulary.
        mlm_probability: fraction of eligible tokens chosen for the loss.
        mask_ratio: of the chosen tokens, the fraction replaced by [MASK].
        random_ratio: of the chosen tokens, the fraction replaced by a random token.
        pad_to_multiple_of: round the padded length up to a multiple of this.
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = 0.15,
        mask_ratio: float = 0.8,
        random_ratio: float = 0.1,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        if not 0.0 <= mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
        if mask_ratio < 0 or random_ratio < 0 or mask_ratio + random_ratio > 1.0:
            raise ValueError(f"mask_ratio + random_ratio must be in [0, 1], got {mask_ratio} + {random_ratio}")
        self.mlm_probability = mlm_probability
        self.mask_ratio = mask_ratio
        self.random_ratio = random_ratio
        self.pad_to_multiple_of = pad_to_multiple_of
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id
        vocab_size = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        self.special_ids = torch.tensor(sorted(special), dtype=torch.long)
        unused = re.compile(r"^\[unused\d+\]$")
        tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
        self.random_ids = torch.tensor(
            [i for i, t in enumerate(tokens) if i not in special and not unused.match(t or "")], dtype=torch.long
        )

    def __call__(self, examples: Sequence[dict[str, Any]], generator: torch.Generator | None = None) -> dict:
        """Build ``input_ids``, ``attention_mask``, ``labels`` (all ``[B, T]`` long).

        ``generator`` makes the masks reproducible (e.g. a fixed probe set); without it
        the global torch RNG is used (seeded per worker by the DataLoader).
        """
        input_ids, attention_mask = pad_input_ids(
            [e["input_ids"] for e in examples], self.pad_token_id, self.pad_to_multiple_of
        )
        eligible = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)
        chosen = (torch.rand(input_ids.shape, generator=generator) < self.mlm_probability) & eligible
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

        action = torch.rand(input_ids.shape, generator=generator)
        to_mask = chosen & (action < self.mask_ratio)
        to_random = chosen & (action >= self.mask_ratio) & (action < self.mask_ratio + self.random_ratio)
        random_tokens = self.random_ids[torch.randint(len(self.random_ids), input_ids.shape, generator=generator)]

        corrupted = input_ids.clone()
        corrupted[to_mask] = self.mask_token_id
        corrupted[to_random] = random_tokens[to_random]
        return {"input_ids": corrupted, "attention_mask": attention_mask, "labels": labels}
