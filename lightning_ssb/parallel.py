"""Work spread over forked processes: figures (single-threaded matplotlib) and the per-site analyses
(small batched fits that use two threads at about 60% efficiency, but two processes at nearly 100%).

``fork_map(task, n, workers)`` runs ``task(0..n-1)`` in ``workers`` forked children that inherit
``task`` (a closure over tensors is fine: nothing is pickled on the way in) and return their results
pickled. It is used only where the parent waits for the work on a CPU; a forked child never touches
an accelerator. Torch runs with one thread in each child, which also keeps the children out of the
parent's OpenMP pool. Children ignore SIGINT: a Ctrl-C reaches the parent alone, which stops taking
results and leaves the children to finish the task in hand.

This module imports nothing of the package (layer 0).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from typing import Any

import torch

_TASK: Callable[[int], Any] | None = None  # the task of the running `fork_map`, inherited by its children


def default_workers() -> int:
    """Processes for ``fork_map``: up to 4 of the cores this process may use, on Linux (where ``fork``
    is available); 1 elsewhere (everything runs in this process). ``LIGHTNING_SSB_WORKERS`` overrides
    it (1: never fork)."""
    env = os.environ.get("LIGHTNING_SSB_WORKERS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"LIGHTNING_SSB_WORKERS must be an integer, got {env!r}") from None
    if not sys.platform.startswith("linux"):
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0))))


def _child_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _run(i: int) -> bytes:
    assert _TASK is not None, "fork_map's task is set before its children fork"
    return pickle.dumps(_TASK(i), protocol=pickle.HIGHEST_PROTOCOL)


def fork_map(task: Callable[[int], Any], n: int, workers: int, done: Callable[[int], object] | None = None) -> list:
    """``[task(0), ..., task(n - 1)]``, computed by ``workers`` forked processes (here when ``workers``
    <= 1 or ``n`` <= 1). ``done(1)`` is called as each task finishes (in any order); an exception it
    raises (an interrupt) abandons the rest. An exception in a task is raised here."""
    global _TASK
    if workers <= 1 or n <= 1:
        out = []
        for i in range(n):
            out.append(task(i))
            if done is not None:
                done(1)
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    _TASK = task
    pool = ProcessPoolExecutor(min(workers, n), mp_context=multiprocessing.get_context("fork"),
                               initializer=_child_init)
    finished = False
    try:
        futures = [pool.submit(_run, i) for i in range(n)]
        for future in as_completed(futures):
            future.result()  # a task's error, raised as soon as it happens
            if done is not None:
                done(1)
        finished = True
        return [pickle.loads(f.result()) for f in futures]
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
        _TASK = None
