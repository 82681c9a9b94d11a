"""User-defined nodal analyses: subclass ``NodalAnalysis`` and pass it to ``SSBMonitor(analyses=[...])``.

Each analysed epoch (and the reference before training), after the built-in analysis, the
monitor calls ``analyze(snapshot)`` in the same place the built-in analysis runs (the
background worker when ``background=True``: do not touch the trainer or the model there).
The snapshot carries the activations, ``results`` (one read-out family per site) and ``families``
(every family). ``analyze`` returns an ``AnalysisOutput`` (or a dict read the same way): scalars are
logged as ``{prefix}/{name}/{key}``, arrays saved in ``arrays.pt`` as ``{name}/{key}``, matplotlib
figures logged as images under ``{prefix}/{name}/{key}``, through the same sinks (W&B, disk, Lightning
loggers); the report gives each analysis a section (its scalars by state and its last figures).
A name that would collide with a built-in key is refused when the analysis is made.
"""

from __future__ import annotations

from typing import Any

from lightning_ssb.results.build import AnalysisOutput, EpochSnapshot  # re-exported: what ``analyze`` sees, returns
from lightning_ssb.results.keys import check_custom_name


class NodalAnalysis:
    """Base class of a custom analysis; override ``analyze``.

    Args:
        name: the key segment its results are logged under (``{prefix}/{name}/...``); default the class name.
            A name of a built-in (``epoch``, ``heads``, ``nodes``, ``report``, ``blocks.*``, ...) is a ValueError.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = check_custom_name(name or type(self).__name__)

    def analyze(self, snapshot: EpochSnapshot) -> AnalysisOutput | dict[str, Any]:
        """Return this epoch's ``AnalysisOutput`` (or ``{key: number | tensor | matplotlib Figure}``); an
        empty one logs nothing."""
        raise NotImplementedError
