"""Where an analysis spends its time: named stages summed per thread (for benchmarks and logs).

``with collect() as seconds: ...`` gathers every ``with timed("nulls"): ...`` run inside it, on the
same thread, into ``seconds`` ({stage: seconds}). A stage's time is exclusive: a stage timed inside
another counts for itself only, so the stages add up to the time they cover. Outside ``collect``
timing costs nothing.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def collect() -> Iterator[dict[str, float]]:
    """Sum every `timed` stage run inside this block (this thread) into the yielded dict."""
    previous = getattr(_local, "seconds", None)
    seconds: dict[str, float] = defaultdict(float)
    _local.seconds = seconds
    try:
        yield seconds
    finally:
        _local.seconds = previous
        if previous is not None:  # nested collections also count in the outer one
            for k, v in seconds.items():
                previous[k] += v


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Add the wall time of the block, less that of stages timed inside it, to `stage` of the current
    `collect` (if any)."""
    seconds = getattr(_local, "seconds", None)
    if seconds is None:
        yield
        return
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(0.0)  # time spent in stages nested in this one
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        nested = stack.pop()
        seconds[stage] += elapsed - nested
        if stack:
            stack[-1] += elapsed


def add_seconds(seconds: dict[str, float]) -> None:
    """Add stage times measured elsewhere (a worker process's `collect`) to the current `collect`, if any."""
    current = getattr(_local, "seconds", None)
    if current is not None:
        for k, v in seconds.items():
            current[k] += v


def so_far() -> dict[str, float]:
    """The stages finished so far in the innermost running `collect` of this thread ({} outside one): what a
    benchmark stopped by its time limit can still print."""
    return dict(getattr(_local, "seconds", None) or {})
