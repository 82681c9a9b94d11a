"""The statistics registry: one entry per statistic the analysis logs, the one owner of its name.

An entry says what the statistic is (name, description), where it exists (the levels: ``node``,
``head``, ``site``; the read-out families; whether the nulls carry it), how it is computed when it is
a function of a granularity's learned label sets (``compute``), and how it is shown (a panel of the
report's by-epoch figure, a row of the report's table of the deepest layer, a column of ``compare``,
a curve of the sensitivity figure). The analysis computes every entry with a ``compute`` for every
site, family and granularity (``unit_statistics``); keys, W&B panels, disk files, the report and
``compare`` then follow from the name alone. Adding a statistic is its entry::

    from lightning_ssb.statistics import Plot, Statistic, register

    register(Statistic(
        "max_labels", "the largest learned label set of the granularity's units",
        compute=lambda u: float(u.labels.sum(1).max()) if len(u.labels) else float("nan"),
        plot=Plot("largest label set", "max |L_u| (labels)"), compare=True))

Register it before the analysis runs (at import of the module that holds it, e.g. the module of a
custom callback named in the config). A name that is already registered is refused with one line;
``unregister`` removes an entry (tests). This module imports nothing of the package (layer 0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

LEVELS = ("node", "head", "site")
UNIT_LEVELS = ("node", "head")
FAMILIES = ("own", "shared")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_PREFIXES = ("null_",)  # a key segment that names a null, never a statistic


@dataclass(frozen=True)
class Units:
    """What a unit statistic is computed from: the units of one granularity of one site and family.

    labels `[U, K]` bool: the learned label sets L_u; accuracy `[U]` float64 (None when not given);
    num_classes: K."""

    labels: Tensor
    accuracy: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return int(self.labels.shape[1])

    @property
    def sizes(self) -> Tensor:
        """|L_u| `[U]`."""
        return self.labels.sum(1)

    @property
    def live(self) -> Tensor:
        """The live units' sets `[U_live, K]` (at least one learned label)."""
        return self.labels[self.sizes > 0]


@dataclass(frozen=True)
class Plot:
    """A panel of the report's figure of the statistics by epoch: its title, y label and y range (None: automatic;
    an end given as None stays automatic, so ``(0.0, None)`` keeps a count's axis at 0 and fits its top)."""

    title: str
    ylabel: str
    ylim: tuple[float | None, float | None] | None = None
    chance: bool = False  # draw the chance level 1/K (accuracies)


@dataclass(frozen=True)
class Statistic:
    """One registered statistic.

    Attributes:
        name: the last segment of its key (``ssb/<site>/<family>/<granularity>/<name>``).
        description: one sentence (docs/RESULTS.md, the report's glossary).
        levels: the granularities it is logged for: ``node``, ``head`` (unit statistics) or ``site``.
        families: the read-out families that carry it.
        nulls: whether the nulls (permuted probe labels) carry it too.
        compute: ``Units -> float`` (NaN: undefined; None: not computable from what it was given, e.g. an
            accuracy statistic without accuracies) for a statistic of a granularity's learned sets; None
            when the analysis computes it elsewhere (the hull, the clusters, the fits' records).
        plot: its panel in the report's figure of the statistics by epoch (None: no panel).
        table: a row in the report's table of the deepest layer at every state.
        table_nulls: that table also shows its value under each null.
        compare: a column of ``compare``'s summary across seeds.
        sensitivity: a column of ``sensitivity.csv`` (the statistic against the L2 penalty).
        sensitivity_plot: and a panel of the report's sensitivity figure (needs ``plot`` for its title).
        undefined: what a NaN value means, when it can be one.
    """

    name: str
    description: str
    levels: tuple[str, ...] = UNIT_LEVELS
    families: tuple[str, ...] = FAMILIES
    nulls: bool = True
    compute: Callable[[Units], float | None] | None = None
    plot: Plot | None = None
    table: bool = False
    table_nulls: bool = False
    compare: bool = False
    sensitivity: bool = False
    sensitivity_plot: bool = False
    undefined: str | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or self.name.startswith(RESERVED_PREFIXES):
            raise ValueError(f"a statistic name is lower case letters, digits and _ (not null_...), got {self.name!r}")
        if not self.levels or any(level not in LEVELS for level in self.levels):
            raise ValueError(f"statistic {self.name!r}: levels must be from {LEVELS}, got {self.levels}")
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise ValueError(f"statistic {self.name!r}: families must be from {FAMILIES}, got {self.families}")
        if self.sensitivity_plot and not (self.sensitivity and self.plot is not None):
            raise ValueError(f"statistic {self.name!r}: sensitivity_plot needs sensitivity and a plot")
        if self.compute is not None and "site" in self.levels:
            raise ValueError(f"statistic {self.name!r}: compute works on units (node, head), not on the site level")


_REGISTRY: dict[str, Statistic] = {}


def register(statistic: Statistic) -> Statistic:
    """Add ``statistic``; a name already registered is a ValueError naming it."""
    if not isinstance(statistic, Statistic):
        raise TypeError(f"register takes a Statistic, got {type(statistic).__name__}")
    if statistic.name in _REGISTRY:
        raise ValueError(f"statistic {statistic.name!r} is already registered "
                         f"({_REGISTRY[statistic.name].description!r}); choose another name")
    _REGISTRY[statistic.name] = statistic
    return statistic


def unregister(name: str) -> None:
    """Remove a registered statistic (KeyError naming it when there is none)."""
    if name not in _REGISTRY:
        raise KeyError(f"no statistic {name!r} is registered")
    del _REGISTRY[name]


@contextmanager
def registered(statistic: Statistic) -> Iterator[Statistic]:
    """``statistic`` registered inside the block only."""
    register(statistic)
    try:
        yield statistic
    finally:
        _REGISTRY.pop(statistic.name, None)


def get(name: str) -> Statistic | None:
    """The entry named ``name``, None when none is registered."""
    return _REGISTRY.get(name)


def statistics() -> list[Statistic]:
    """Every registered statistic, in registration order (the built-ins first)."""
    return list(_REGISTRY.values())


def plotted() -> list[Statistic]:
    return [s for s in _REGISTRY.values() if s.plot is not None]


def in_table() -> list[Statistic]:
    return [s for s in _REGISTRY.values() if s.table]


def compared() -> list[Statistic]:
    return [s for s in _REGISTRY.values() if s.compare]


def in_sensitivity() -> list[Statistic]:
    return [s for s in _REGISTRY.values() if s.sensitivity]


def carried_by_nulls(name: str) -> bool:
    """Whether the nulls log ``name`` (an unregistered name: yes, as every unit statistic)."""
    entry = _REGISTRY.get(name)
    return entry is None or entry.nulls


def unit_statistics(labels: Tensor, accuracy: Tensor | None = None, level: str | None = None) -> dict[str, float]:
    """Every registered statistic with a ``compute`` (for ``level`` when given) of the learned sets
    `[U, K]` (and accuracies `[U]`); an entry that needs the accuracy is left out without it."""
    units = Units(labels, None if accuracy is None else accuracy.double())
    out = {}
    for s in _REGISTRY.values():
        if s.compute is None or (level is not None and level not in s.levels):
            continue
        value = s.compute(units)
        if value is not None:
            out[s.name] = float(value)
    return out


# ---------------------------------------------------------------------------------------------------
# The built-in statistics (docs/method.md 4-6, docs/RESULTS.md), in the order they are shown.


def jaccard_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Jaccard index `[U, V]` between the label sets a `[U, K]` and b `[V, K]` (0 when both are empty)."""
    af, bf = a.double(), b.double()
    inter = af @ bf.T
    union = af.sum(1, keepdim=True) + bf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def _overlap(u: Units) -> float:
    live = u.live
    n = live.shape[0]
    if n < 2:
        return math.nan
    jac = jaccard_matrix(live, live)
    return ((jac.sum() - jac.diagonal().sum()) / (n * (n - 1))).item()


def _acc(reduce: Callable[[Tensor], Tensor]) -> Callable[[Units], float | None]:
    return lambda u: None if u.accuracy is None else (reduce(u.accuracy).item() if len(u.accuracy) else math.nan)


_UNDEFINED_PHI = "fewer than two live units"
_PROBABILITY = (0, 1.02)

for _s in (
    Statistic("live", "units with at least one learned label", compute=lambda u: float(u.live.shape[0]),
              sensitivity=True),
    Statistic("live_fraction", "live units over all units of the granularity",
              compute=lambda u: u.live.shape[0] / max(u.labels.shape[0], 1),
              plot=Plot("live units", "fraction of units with a learned label", _PROBABILITY), table=True,
              table_nulls=True, compare=True, sensitivity=True, sensitivity_plot=True),
    Statistic("overlap", "mean Jaccard index of the learned sets over pairs of live units", compute=_overlap,
              undefined=_UNDEFINED_PHI),
    Statistic("phi", "order parameter 1 - overlap (0: all live units alike; towards 1: each its own labels)",
              compute=lambda u: 1.0 - _overlap(u), plot=Plot("order parameter \u03a6 = 1 \u2212 overlap",
                                                             "\u03a6 (0 symmetric, 1 broken)", _PROBABILITY),
              table=True, compare=True, sensitivity=True, sensitivity_plot=True, undefined=_UNDEFINED_PHI),
    Statistic("mean_labels", "mean size of the learned sets L_u over all units (labels per unit)",
              compute=lambda u: u.sizes.double().mean().item() if len(u.labels) else math.nan,
              plot=Plot("labels per unit", "mean |L_u| (labels)", (0.0, None)), table=True, compare=True,
              sensitivity=True, sensitivity_plot=True),
    Statistic("coverage", "labels learned by some unit over all K labels",
              compute=lambda u: u.labels.any(0).double().mean().item(),
              plot=Plot("coverage", "|\u222a L_u| / K (fraction of labels)", _PROBABILITY), table=True, compare=True,
              sensitivity=True),
    Statistic("acc_mean", "mean accuracy of the units alone on probe-test", compute=_acc(torch.mean),
              plot=Plot("mean unit accuracy", "accuracy on probe-test", chance=True), compare=True),
    Statistic("acc_max", "accuracy of the best unit alone on probe-test", compute=_acc(torch.max),
              plot=Plot("best unit accuracy", "accuracy on probe-test", chance=True)),
    Statistic("cluster_count", "mean number of clusters of the units' field matrices (threshold tau)"),
    Statistic("cluster_size", "mean cluster size of the units' field matrices"),
    Statistic("cluster_noise", "mean number of labels outside every cluster of the field matrices"),
    Statistic("hull_labels", "mean size of R_n, the labels on the upper envelope of a node's K fields over its "
              "probe range", levels=("node",)),
    Statistic("hull_labels_all", "mean size of R_n over all activations x", levels=("node",)),
    Statistic("hull_bound", "mean convex-hull bound of a node's accuracy", levels=("node",)),
    Statistic("hull_tightness", "mean accuracy over the bound", levels=("node",)),
    Statistic("hull_violations", "nodes whose accuracy exceeds the bound (must be 0)", levels=("node",)),
    Statistic("l2", "the L2 penalty of the read-outs (own: nodes; heads and subsets; shared: the site's)",
              levels=("node", "head", "site"), nulls=False),
    Statistic("acc", "accuracy of the whole site's shared read-out on probe-test", levels=("site",),
              families=("shared",), nulls=False),
    Statistic("fit_unconverged", "read-out fits of the family that stopped above gtol (must be 0)",
              levels=("site",), nulls=False),
    Statistic("fit_grad_max", "the largest final gradient entry of the family's read-out fits", levels=("site",),
              nulls=False),
):
    register(_s)
BUILTIN = tuple(_REGISTRY)  # the names of the built-in statistics
