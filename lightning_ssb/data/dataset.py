"""Tokenised examples stored as one flat id array plus offsets (compact, fast to cache)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class TokenizedDataset(Sequence):
    """An indexable sequence of examples ``{"input_ids": [...], <column>: int, ...}``.

    Args:
        ids: all token ids, concatenated, ``[total]``.
        offsets: example ``i`` is ``ids[offsets[i]:offsets[i + 1]]``, ``[N + 1]``.
        columns: per-example integer columns (e.g. ``label``, ``head_pos``), each ``[N]``.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, columns: dict[str, np.ndarray] | None = None) -> None:
        self.ids = np.asarray(ids)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.columns = {k: np.asarray(v, dtype=np.int64) for k, v in (columns or {}).items()}
        n = len(self.offsets) - 1
        for name, col in self.columns.items():
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} entries for {n} examples")

    @classmethod
    def from_lists(cls, input_ids: Sequence[Sequence[int]], **columns: Sequence[int]) -> TokenizedDataset:
        lengths = np.fromiter((len(x) for x in input_ids), dtype=np.int64, count=len(input_ids))
        offsets = np.zeros(len(input_ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for seq in input_ids for t in seq), dtype=np.int64, count=int(offsets[-1]))
        dtype = np.uint16 if flat.size == 0 or flat.max() < 2**16 else np.int32  # 30522 ids fit in 16 bits
        return cls(flat.astype(dtype), offsets, {k: np.asarray(v) for k, v in columns.items()})

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        example: dict[str, Any] = {"input_ids": self.ids[self.offsets[index] : self.offsets[index + 1]].tolist()}
        for name, col in self.columns.items():
            example[name] = int(col[index])
        return example

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example, ``[N]`` (for length-grouped batching)."""
        return np.diff(self.offsets)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {f"{prefix}.ids": self.ids, f"{prefix}.offsets": self.offsets}
        arrays.update({f"{prefix}.col.{k}": v for k, v in self.columns.items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> TokenizedDataset:
        col_prefix = f"{prefix}.col."
        columns = {k[len(col_prefix) :]: arrays[k] for k in arrays if k.startswith(col_prefix)}
        return cls(arrays[f"{prefix}.ids"], arrays[f"{prefix}.offsets"], columns)
