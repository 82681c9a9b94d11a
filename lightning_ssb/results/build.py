"""From one captured snapshot to one logged result: a pure function, no Lightning, no sinks.

``build_result(snapshot, config, ...)`` is what the monitor runs (on its worker thread) for every
analysed epoch: the built-in per-site analysis (``site_results``), the figures, the custom
``NodalAnalysis`` objects, and the run keys ``ssb/epoch`` and ``ssb/analysis_seconds``. Every key is
built by ``lightning_ssb.results.keys`` (docs/RESULTS.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lightning_ssb.provenance import provenance
from lightning_ssb.results import render
from lightning_ssb.results.keys import PREFIX, custom_key, parse_key, run_key, scalar_key


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


@dataclass
class EpochResult:
    """Everything one analysed epoch logs; built off the main thread, handed to the sinks on it."""

    epoch: int
    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)  # "nodes" -> (columns, rows)
    arrays: dict[str, Tensor] = field(default_factory=dict)  # keys: scalar keys without the prefix
    meta: dict[str, Any] = field(default_factory=dict)  # meta.json on disk
    seconds: float = 0.0


def site_results(snapshot: EpochSnapshot, config, prefix: str = PREFIX
                 ) -> tuple[dict[str, float], dict[str, Tensor], dict[str, tuple[list[str], list[list]]]]:
    """The built-in analysis of every captured site: ``(scalars, arrays, tables)``.

    The one place that calls ``lightning_ssb.analysis`` for the monitor; ``config`` is the
    ``AnalysisConfig`` of the monitor's ``analysis:`` group, passed through unchanged: every read-out
    family it names, and the null (permuted labels) every epoch (``null_mode: all``), before training only
    (``reference``) or never (``off``). Fills ``snapshot.results`` (a ``SiteAnalysis`` per site, the
    shared family when there is one) for the figures and the custom analyses.
    """
    from lightning_ssb import analysis  # imported here: results/ loads without the analysis' scipy

    scalars: dict[str, float] = {}
    arrays: dict[str, Tensor] = {}
    families: dict[str, dict] = {}  # site -> {family: SiteAnalysis}, for the tables
    for name in snapshot.train:
        mode = getattr(config, "null_mode", "off")
        res = analysis.analyze_all(snapshot.train[name], snapshot.y_train, snapshot.test[name], snapshot.y_test,
                                   snapshot.num_classes, config,
                                   null=mode == "all" or (mode == "reference" and snapshot.epoch < 0))
        snapshot.results[name] = res.real.get("shared") or next(iter(res.real.values()))
        families[name] = res.real
        for family, is_null, granularity, statistic, value in res.statistics():
            scalars[scalar_key(name, family, granularity, statistic, is_null, prefix)] = float(value)
        arrays.update({f"{name}/{key}": value for key, value in res.arrays().items()})
    tables = {"nodes": render.node_table(snapshot, families)}
    if any(site.crossover for per_family in families.values() for site in per_family.values()):
        tables["crossover"] = render.crossover_table(snapshot, families)
    return scalars, arrays, tables


def build_result(snapshot: EpochSnapshot, config, analyses: list = (), figures: bool = True,
                 table: bool = True, prefix: str = PREFIX) -> EpochResult:
    """The whole result of one analysed epoch: built-in sites, figures, tables, custom analyses.

    Args:
        snapshot: the captured probe activations of the epoch.
        config: the ``AnalysisConfig`` (opaque here: only ``granularities`` is read, for figures).
        analyses: ``NodalAnalysis`` objects, run after the built-in analysis.
        figures, table: whether to draw the figures / keep the tables.
        prefix: first segment of every key.
    """
    start = time.perf_counter()
    result = EpochResult(epoch=snapshot.epoch, step=snapshot.step)
    result.scalars[run_key("epoch", prefix)] = float(snapshot.epoch)
    scalars, result.arrays, tables = site_results(snapshot, config, prefix)
    result.scalars.update(scalars)
    if table:
        result.tables.update(tables)
    granularities = list(getattr(config, "granularities", ("node", "head")))
    if figures:
        result.figures.update(render.site_figures(snapshot, prefix, granularities))
    for analysis in analyses:
        for key, value in (analysis.analyze(snapshot) or {}).items():
            if isinstance(value, (int, float)) or (isinstance(value, Tensor) and value.numel() == 1):
                result.scalars[custom_key(analysis.name, key, prefix)] = float(value)
            else:
                result.figures[custom_key(analysis.name, key, prefix)] = value
    for fig in result.figures.values():
        render.to_png(fig)  # render here, off the main thread; sinks reuse the bytes
    parsed = [parse_key(k, prefix) for k in scalars]
    families = sorted({p.family for p in parsed if p.family})
    result.meta = {"epoch": snapshot.epoch, "step": snapshot.step, "num_classes": snapshot.num_classes,
                   "label_names": list(snapshot.label_names), "families": families,
                   "null": any(p.null for p in parsed),
                   "sites": {n: list(x.shape[1:]) for n, x in snapshot.train.items()},
                   "provenance": provenance()}  # the code and library versions behind these numbers
    result.seconds = time.perf_counter() - start
    result.scalars[run_key("analysis_seconds", prefix)] = result.seconds
    return result

