"""Padding helpers and the classification collator (batch format of docs/ARCHITECTURE.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def pad_input_ids(
    sequences: Sequence[Sequence[int]], pad_token_id: int = 0, pad_to_multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one.

    Returns:
        ``input_ids`` ``[B, T]`` long and ``attention_mask`` ``[B, T]`` long (1 = real token).
    """
    lengths = [len(s) for s in sequences]
    width = max(lengths, default=0)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : lengths[i]] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[i, : lengths[i]] = 1
    return input_ids, attention_mask


class ClassificationCollator:
    """Batches ``{"input_ids", "label", "head_pos"}`` examples.

    Output: ``input_ids``/``attention_mask`` ``[B, T]``, ``labels`` ``[B]``, ``head_pos`` ``[B]``.
    ``generator`` is accepted for interface parity with :class:`MaskingCollator` and unused.
    """

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict[str, Any]], generator: torch.Generator | None = None) -> dict:
        input_ids, attention_mask = pad_input_ids(
            [e["input_ids"] for e in examples], self.pad_token_id, self.pad_to_multiple_of
        )
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([int(e["label"]) for e in examples], dtype=torch.long),
            "head_pos": torch.tensor([int(e["head_pos"]) for e in examples], dtype=torch.long),
        }
