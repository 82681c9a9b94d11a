"""User-defined nodal analyses: subclass ``NodalAnalysis`` and pass it to ``SSBMonitor(analyses=[...])``.

Each analysed epoch (and the reference before training), after the built-in analysis, the
monitor calls ``analyze(snapshot)`` in the same place the built-in analysis runs (the
background worker when ``background=True``: do not touch the trainer or the model there).
Returned floats are logged as ``{prefix}/{name}/{key}``, returned matplotlib figures as images
under the same names, through the same sinks (W&B, disk, Lightning loggers).
"""

from __future__ import annotations

from typing import Any

from lightning_ssb.results.build import EpochSnapshot  # re-exported: what ``analyze`` receives


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
