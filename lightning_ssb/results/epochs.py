"""The one definition of an analysed state's epoch number, its folder name and its label.

Training epochs are 0, 1, 2, ...; three states are not epochs and get negative sentinels:
- ``REFERENCE`` (-1): the model when training starts, before the first step (a pre-trained start,
  or the random initialisation when training starts from one);
- ``ANALYZE`` (-2): a post-hoc analysis of a checkpoint or model (``python -m lightning_ssb analyze``);
- ``INIT`` (-3): the same architecture at a seeded random initialisation, the symmetric state, analysed
  beside a pre-trained start (``SSBMonitor(init_reference=True)``, ``analyze --random_init``).
"""

from __future__ import annotations

import re

REFERENCE = -1
ANALYZE = -2
INIT = -3
SENTINELS = (INIT, REFERENCE, ANALYZE)

_DIRS = {REFERENCE: "reference", ANALYZE: "analyze", INIT: "init"}
_LABELS = {REFERENCE: "before training", ANALYZE: "analyze", INIT: "random init"}
_SHORT = {REFERENCE: "start", ANALYZE: "analyze", INIT: "init"}
# a folder name, with "-N" for a second result of the same epoch (a re-run that never overwrites)
_DIR_RE = re.compile(r"^(reference|analyze|init|epoch_(\d+))(?:-(\d+))?$")


def dirname(epoch: int) -> str:
    """``reference``, ``analyze``, ``init`` or ``epoch_{e:03d}``."""
    if epoch in _DIRS:
        return _DIRS[epoch]
    if epoch < 0:
        raise ValueError(f"no analysed state has epoch {epoch}")
    return f"epoch_{epoch:03d}"


def parse_dirname(name: str) -> tuple[int, int] | None:
    """(epoch, re-run number: 0 for the first result) of a results folder name, or None."""
    m = _DIR_RE.match(name)
    if not m:
        return None
    head = m.group(1)
    epoch = int(m.group(2)) if m.group(2) is not None else {v: k for k, v in _DIRS.items()}[head]
    return epoch, int(m.group(3) or 0)


def label(epoch: int) -> str:
    """``random init``, ``before training``, ``analyze`` or ``epoch N`` (titles, tables)."""
    return _LABELS.get(epoch, f"epoch {epoch}")


def short_label(epoch: int) -> str:
    """``init``, ``start``, ``analyze`` or the epoch number (axis ticks)."""
    return _SHORT.get(epoch, str(epoch))


def order_key(epoch: int) -> tuple[int, int]:
    """Sort key that puts random init first, then the start, the epochs, and analyze last."""
    return {INIT: (0, 0), REFERENCE: (1, 0), ANALYZE: (3, 0)}.get(epoch, (2, epoch))
