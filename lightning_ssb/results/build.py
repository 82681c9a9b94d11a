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

from lightning_ssb.results import render
from lightning_ssb.results.keys import PREFIX, array_key, custom_key, run_key, scalar_key


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


# today's SiteAnalysis.scalars() names -> (granularity, statistic) of docs/RESULTS.md
_HULL = {"hull/labels_mean": "hull_labels", "hull/labels_all_mean": "hull_labels_all",
         "hull/bound_mean": "hull_bound", "hull/tightness_mean": "hull_tightness"}
_CLUSTER = {"count_mean": "cluster_count", "size_mean": "cluster_size", "noise_mean": "cluster_noise"}


def _statistic(name: str) -> tuple[str, str]:
    """``"node/phi"`` -> ``("node", "phi")``; ``"site/acc"``, ``"hull/..."``, ``"cluster/g/..."`` mapped."""
    if name in _HULL:
        return "node", _HULL[name]
    parts = name.split("/")
    if parts[0] == "cluster":
        return parts[1], _CLUSTER.get(parts[2], f"cluster_{parts[2]}")
    return parts[0], "/".join(parts[1:])


def site_results(snapshot: EpochSnapshot, config, prefix: str = PREFIX
                 ) -> tuple[dict[str, float], dict[str, Tensor], dict[str, tuple[list[str], list[list]]]]:
    """The built-in analysis of every captured site: ``(scalars, arrays, tables)``.

    The one place that calls ``lightning_ssb.analysis`` for the monitor; ``config`` is the
    ``AnalysisConfig`` of the monitor's ``analysis:`` group, passed through unchanged. Fills
    ``snapshot.results`` (a ``SiteAnalysis`` per site, the shared family when there is one) for the
    figures and the custom analyses.
    """
    from lightning_ssb import analysis

    scalars: dict[str, float] = {}
    arrays: dict[str, Tensor] = {}
    for name in snapshot.train:
        args = (snapshot.train[name], snapshot.y_train, snapshot.test[name], snapshot.y_test, snapshot.num_classes)
        if hasattr(analysis, "analyze_all"):  # every read-out family, and the null (permuted labels)
            mode = getattr(config, "null", "off")
            res = analysis.analyze_all(*args, config, null=mode == "all" or (mode == "reference" and snapshot.epoch < 0))
            snapshot.results[name] = res.real.get("shared") or next(iter(res.real.values()))
            for family, is_null, granularity, statistic, value in res.statistics():
                scalars[scalar_key(name, family, granularity, statistic, is_null, prefix)] = float(value)
            arrays.update({f"{name}/{key}": value for key, value in res.arrays().items()})
        else:  # the analysis before issue #7: one shared read-out per site
            site = analysis.analyze_site(*args, config)
            snapshot.results[name] = site
            for key, value in site.scalars().items():
                scalars[scalar_key(name, "shared", *_statistic(key), prefix=prefix)] = float(value)
            arrays.update(_old_arrays(name, site))
    tables = {"nodes": render.node_table(snapshot)}
    if any(site.crossover for site in snapshot.results.values()):
        tables["crossover"] = render.crossover_table(snapshot)
    return scalars, arrays, tables


def _old_arrays(name: str, site) -> dict[str, Tensor]:
    arrays = {array_key(name, "shared", "node", "accuracy"): site.node_accuracy.flatten(),
              array_key(name, "shared", "node", "labels"): site.node_labels,
              array_key(name, "shared", "node", "hull_labels"): site.hull_labels,
              array_key(name, "shared", "node", "hull_bound"): site.hull_bound}
    if site.head_accuracy is not None:
        arrays[array_key(name, "shared", "head", "accuracy")] = site.head_accuracy
        arrays[array_key(name, "shared", "head", "labels")] = site.head_labels
    if site.best_nodes:
        best = site.best_nodes
        arrays[array_key(name, "shared", "best", "nodes")] = torch.tensor([b["node"] for b in best])
        arrays[array_key(name, "shared", "best", "accuracy")] = torch.tensor([b["accuracy"] for b in best])
        arrays[array_key(name, "shared", "best", "confusion")] = torch.stack([b["confusion"] for b in best])
        arrays[array_key(name, "shared", "best", "field")] = torch.stack([b["field"] for b in best])
    return arrays


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
    families = sorted({k.split("/")[2] for k in scalars})
    result.meta = {"epoch": snapshot.epoch, "step": snapshot.step, "num_classes": snapshot.num_classes,
                   "label_names": list(snapshot.label_names), "families": families,
                   "null": any("/null/" in k for k in scalars),
                   "sites": {n: list(x.shape[1:]) for n, x in snapshot.train.items()}}
    result.seconds = time.perf_counter() - start
    result.scalars[run_key("analysis_seconds", prefix)] = result.seconds
    return result

