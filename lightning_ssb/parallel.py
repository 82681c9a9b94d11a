"""Work spread over forked processes: figures (single-threaded matplotlib) and the per-site analyses
(small batched fits that use two threads at about 60% efficiency, but two processes at nearly 100%).

``fork_map(task, n, workers)`` runs ``task(0..n-1)`` in ``workers`` forked children that inherit
``task`` (a closure over tensors is fine: nothing is pickled on the way in) and return their results
pickled. It is used where the parent waits for the work on a CPU, and beside CPU training with the
children at a lower priority (``children_niced``); a forked child never touches an accelerator. Torch
runs with one thread in each child, which also keeps the children out of the parent's OpenMP pool.
Children ignore SIGINT: a Ctrl-C reaches the parent alone, which stops taking results and leaves the
children to finish the task in hand. On Linux a child ends when its parent process dies (SIGKILL through
``prctl(PR_SET_PDEATHSIG)``), so a killed run leaves no orphans.

``children_niced(n)``: within the block, the children of every ``fork_map`` this thread starts lower
their CPU priority by ``n`` (Unix ``nice``), so that work running beside them at normal priority (a
CPU training loop) keeps the cores it uses and the children take only the time it leaves.

This module imports nothing of the package (layer 0).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

_TASK: Callable[[int], Any] | None = None  # the task of the running `fork_map`, inherited by its children
_LOCAL = threading.local()  # `children_niced`: the nice increment of this thread's fork_map children


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


@contextmanager
def children_niced(increment: int) -> Iterator[None]:
    """Within the block, the children of the ``fork_map`` calls of this thread (only this one) start with
    their nice value raised by ``increment`` (0: unchanged; at most 19). The calling thread keeps its own
    priority. Unix only: elsewhere ``fork_map`` does not fork, and this changes nothing."""
    if not 0 <= int(increment) <= 19:
        raise ValueError(f"a nice increment is between 0 and 19, got {increment!r}")
    previous = getattr(_LOCAL, "nice", 0)
    _LOCAL.nice = int(increment)
    try:
        yield
    finally:
        _LOCAL.nice = previous


def child_nice() -> int:
    """The nice increment the children of a ``fork_map`` started now in this thread get (``children_niced``)."""
    return getattr(_LOCAL, "nice", 0)


def _child_init(nice: int = 0, parent: int | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with(parent)
    torch.set_num_threads(1)
    if nice:
        os.nice(nice)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with(parent: int | None) -> None:
    """On Linux, this child is killed (SIGKILL) when the process that forked it dies, instead of living on
    as an orphan that waits for work for ever: a torchrun rank stopped with SIGTERM once left its two
    analysis children sleeping (430 MB each), and they ignored SIGTERM too, through the handler they
    inherited from Lightning. The signal follows the thread that forked the child, which `fork_map` keeps
    alive until its children end; a parent that died before this call is seen by its pid and the child
    leaves at once."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: the child may outlive a killed parent
        return
    if os.getppid() != parent:
        os._exit(1)


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
                               initializer=_child_init, initargs=(child_nice(), os.getpid()))
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
