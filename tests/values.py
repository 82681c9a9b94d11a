"""Comparing results that may hold undefined statistics (NaN), as the tests of one computation done two ways do."""

from __future__ import annotations


def same(a, b) -> bool:
    """Equal, NaN (an undefined statistic) equal to NaN; dicts, lists and tuples compared item by item."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b, strict=True))
    return a == b or (a != a and b != b)
