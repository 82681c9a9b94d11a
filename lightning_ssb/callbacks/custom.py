"""User-defined nodal analyses: subclass ``NodalAnalysis`` and pass it to ``SSBMonitor(analyses=[...])``.

Each analysed epoch (and the reference before training), after the built-in analysis, the
monitor calls ``analyze(snapshot)`` in the same place the built-in analysis runs (the
background worker when ``background=True``: do not touch the trainer or the model there).
Returned floats are logged as ``{prefix}/{name}/{key}``, returned matplotlib figures as images
under the same names, through the same sinks (W&B, disk, Lightning loggers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class EpochSnapshot:
    """What one analysis sees: the probe activations of every captured site and their read-outs.

    Attributes:
        epoch: the training epoch just finished; -1 for the reference before the first step.
        step: the trainer's global step when the probe was captured.
        train, test: ``{snapshot name: [N, H, d]}`` float32 CPU tensors on probe-train / probe-test
            (names as in ``capture.snapshot_names``, e.g. ``blocks.3.attn.heads``).
        y_train, y_test: ``[N]`` long labels in ``0..num_classes-1``.
        num_classes, label_names: the probe's classes (FewRel relation names, or MLM token strings).
        results: ``{snapshot name: SiteAnalysis}``: the built-in analysis, with its fitted read-out.
    """

    epoch: int
    step: int
    train: dict[str, Tensor]
    test: dict[str, Tensor]
    y_train: Tensor
    y_test: Tensor
    num_classes: int
    label_names: list[str]
    results: dict[str, Any] = field(default_factory=dict)


class NodalAnalysis:
    """Base class of a custom analysis; override ``analyze``.

    Args:
        name: the key segment its results are logged under (``{prefix}/{name}/...``).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__

    def analyze(self, snapshot: EpochSnapshot) -> dict[str, Any]:
        """Return ``{key: float | matplotlib Figure}`` for this epoch; an empty dict logs nothing."""
        raise NotImplementedError
