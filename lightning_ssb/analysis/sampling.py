"""The one seeded row subsample of the package: which examples a capped fit or probe uses."""

from __future__ import annotations

import torch
from torch import Tensor


def seeded_rows(n_total: int, size: int | None, seed: int) -> Tensor:
    """`size` distinct row indices of range(n_total), drawn with a generator seeded by `seed`, sorted
    (all rows, in order, when size is None or at least n_total)."""
    if size is None or size >= n_total:
        return torch.arange(n_total)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(n_total, generator=gen)[:size]).values
