"""From one captured snapshot to one logged result: a pure function, no Lightning, no sinks.

``build_result(snapshot, config, ...)`` is what the monitor runs (on its worker thread) for every
analysed epoch: the built-in per-site analysis (``site_results``), the figures, the custom
``NodalAnalysis`` objects, and the run keys ``ssb/epoch`` and ``ssb/analysis_seconds``. Every key is
built by ``lightning_ssb.results.keys`` (docs/RESULTS.md).
"""

from __future__ import annotations

import time
from concurrent.futures import Future
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
        results: ``{snapshot name: SiteAnalysis}``: the built-in analysis, with its fitted read-out (the
            shared family when it ran, else the own one).
        families: ``{snapshot name: {family: SiteAnalysis}}``: every read-out family the analysis ran.
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
    families: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class AnalysisOutput:
    """What a custom analysis (``NodalAnalysis.analyze``) returns, typed; a plain dict is read the same way
    (a number or a one-element tensor: a scalar; a larger tensor: an array; anything else: a figure).

    Attributes:
        scalars: ``{key: number}``, logged as ``<prefix>/<name>/<key>`` (W&B ``<prefix>-custom-<name>/<key>``).
        arrays: ``{key: tensor}`` (per-unit values, say), saved in the state's ``arrays.pt`` as ``<name>/<key>``.
        figures: ``{key: matplotlib Figure or PNG bytes}``, logged as images under ``<prefix>/<name>/<key>``.
    """

    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, Tensor] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value, name: str = "analysis") -> AnalysisOutput:
        """``value`` (an ``AnalysisOutput``, a dict or None) as an ``AnalysisOutput``; a TypeError names the
        analysis and the key that is neither a number, a tensor nor a figure."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"custom analysis {name!r}: analyze must return a dict or an AnalysisOutput, "
                            f"got {type(value).__name__}")
        out = cls()
        for key, v in value.items():
            if isinstance(v, bool) or not (isinstance(v, (int, float, Tensor)) or hasattr(v, "savefig")
                                           or isinstance(v, (bytes, bytearray))):
                raise TypeError(f"custom analysis {name!r}: {key!r} is a {type(v).__name__}; return numbers, "
                                "tensors or matplotlib figures")
            if isinstance(v, (int, float)) or (isinstance(v, Tensor) and v.numel() == 1):
                out.scalars[key] = float(v)
            elif isinstance(v, Tensor):
                out.arrays[key] = v
            else:
                out.figures[key] = v
        return out


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
    prepared: dict[Any, Any] = field(default_factory=dict)  # sink -> its ``Sink.prepare`` of this result


class PenaltyBook:
    """The run's read-out penalties (an ``analysis.Penalties``), None until the first analysed state
    chose them. One book is shared by every state of a run, so that all use the same penalties.

    ``chosen`` is a future done once the penalties are in the book (written by an analysis on a worker
    thread): the main thread can wait for it together with the analyses themselves."""

    def __init__(self, penalties: Any = None) -> None:
        self.chosen: Future = Future()
        self._penalties = None
        self.penalties = penalties

    @property
    def penalties(self) -> Any:
        return self._penalties

    @penalties.setter
    def penalties(self, value: Any) -> None:
        self._penalties = value
        if value is not None and not self.chosen.done():  # one writer: the worker, or the main thread before it
            self.chosen.set_result(value)

    def __repr__(self) -> str:
        return f"PenaltyBook(penalties={self._penalties!r})"


@dataclass
class AnalysisPlan:
    """What one analysed state computes besides the always-on analysis (the monitor's schedule decides).

    Attributes:
        book: the run's penalties (docs/method.md 3); when it is empty, they are chosen here on this
            snapshot by the config's rule and written into it, for every later state.
        nulls: the nulls to run ("train", "both"; none when empty).
        sensitivity: the sites whose statistics are re-run over ``AnalysisConfig.sensitivity_grid``.
        crossover: whether the crossover runs (``AnalysisConfig.crossover_sizes``) at this state.
        device: where the read-outs are fitted (the training device; the snapshot itself stays on the CPU).
        workers: forked processes of the analysis (``parallel.fork_map``, one torch thread each; 1: all in
            this thread). They analyse the sites on a CPU device; on an accelerator the sites are analysed
            here and the processes solve the crossover's linear programs. Either way they draw the figures.
        timed_before: seconds by stage of this state's work done before its analysis (the run's penalties
            chosen ahead, ``AnalysisEngine.choose_penalties``), added to the result's ``meta["seconds"]``.
    """

    book: PenaltyBook = field(default_factory=PenaltyBook)
    nulls: list[str] = field(default_factory=list)
    sensitivity: list[str] = field(default_factory=list)
    crossover: bool = True
    device: Any = "cpu"
    workers: int = 1
    timed_before: dict[str, float] = field(default_factory=dict)


def _quiet(stage: str) -> None:
    pass


def ensure_penalties(snapshot: EpochSnapshot, config, plan: AnalysisPlan, progress=_quiet, train=None, y_train=None):
    """The run's read-out penalties: the plan's book's, or, while it is empty, chosen on this snapshot by the
    config's rule (docs/method.md 3) and written into the book for every later state. ``train``, ``y_train``:
    the snapshot's probe-train already on the plan's device (moved here when not given)."""
    if plan.book.penalties is None:
        from lightning_ssb import analysis  # imported here: results/ loads without the analysis' scipy

        device = torch.device(plan.device)
        if train is None or y_train is None:
            train = {name: x.to(device) for name, x in snapshot.train.items()}
            y_train = snapshot.y_train.to(device)
        progress(f"read-out penalties by cross-validation on probe-train, {len(train)} sites pooled (once per run)")
        plan.book.penalties = analysis.choose_penalties(train, y_train, snapshot.num_classes, config,
                                                        workers=plan.workers if device.type == "cpu" else 1)
    return plan.book.penalties


def process_split(device: torch.device, workers: int) -> tuple[int, int]:
    """(processes for the sites, processes for the crossover's linear programs) of a state analysed on
    ``device`` with ``workers`` processes. On a CPU the sites are the processes' tasks, and each site's
    programs stay in its process. On an accelerator the sites run one after another in this thread (a
    forked child cannot touch the device), and the programs, CPU work, take the processes instead."""
    return (workers, 1) if device.type == "cpu" else (1, workers)


def site_results(snapshot: EpochSnapshot, config, prefix: str = PREFIX, plan: AnalysisPlan | None = None,
                 progress=_quiet
                 ) -> tuple[dict[str, float], dict[str, Tensor], dict[str, tuple[list[str], list[list]]], dict]:
    """The built-in analysis of every captured site: ``(scalars, arrays, tables, meta)``.

    The one place that calls ``lightning_ssb.analysis`` for the monitor; ``config`` is the
    ``AnalysisConfig`` of the monitor's ``analysis:`` group, passed through unchanged: every read-out
    family it names, at the plan's penalties, the plan's nulls and sensitivity sites. Fills
    ``snapshot.results`` (a ``SiteAnalysis`` per site, the shared family when there is one) for the
    figures and the custom analyses. ``meta`` has the penalties, the fits' convergence and the nulls.
    ``progress(stage)`` hears what is being computed (the monitor shows it while training waits).
    """
    from contextlib import nullcontext
    from dataclasses import replace

    from lightning_ssb import analysis  # imported here: results/ loads without the analysis' scipy
    from lightning_ssb.analysis.timing import add_seconds, collect
    from lightning_ssb.parallel import fork_map

    plan = plan if plan is not None else AnalysisPlan(nulls=list(getattr(config, "nulls", [])))
    if not plan.crossover:
        config = replace(config, crossover_sizes=[])
    scalars: dict[str, float] = {}
    arrays: dict[str, Tensor] = {}
    families: dict[str, dict] = {}  # site -> {family: SiteAnalysis}, for the tables
    convergence, sens_rows = {}, []
    device = torch.device(plan.device)
    train = {name: x.to(device) for name, x in snapshot.train.items()}  # the fits run where training runs
    y_train = snapshot.y_train.to(device)
    penalties = ensure_penalties(snapshot, config, plan, progress, train, y_train)
    names = list(snapshot.train)
    # one task per site, and one per sensitivity site (the longest: first, so two workers share the load)
    tasks = [("sensitivity", name) for name in names if name in plan.sensitivity] + [("site", n) for n in names]
    workers, lp_workers = process_split(device, plan.workers)

    def run(i: int):
        kind, name = tasks[i]
        xtr, xte = train[name], snapshot.test[name]
        with collect() if workers > 1 else nullcontext({}) as seconds:  # here: timed into the outer collect
            if kind == "site":
                out = analysis.analyze_all(xtr, y_train, xte, snapshot.y_test, snapshot.num_classes, config,
                                           nulls=list(plan.nulls), penalties=penalties, name=name,
                                           workers=lp_workers)
            else:
                out = analysis.sensitivity(xtr, y_train, xte, snapshot.y_test, snapshot.num_classes, config,
                                           name=name)
        return out, dict(seconds)

    def what(i: int) -> str:
        kind, name = tasks[i]
        if kind == "sensitivity":
            return f"{name}: sensitivity to the penalty ({len(config.sensitivity_grid)} values)"
        where = f"site {names.index(name) + 1}/{len(names)} {name}"
        return f"{where}: read-outs and statistics" + (f", nulls {'+'.join(plan.nulls)}" if plan.nulls else "")

    def stage(finished: int) -> str:  # what is being computed once `finished` tasks are done
        if workers > 1:
            parts = "sites and sensitivity" if len(tasks) > len(names) else "sites"
            return f"{finished}/{len(tasks)} parts done in {workers} processes ({parts})"
        return what(finished)

    finished = [0]

    def done(_):
        finished[0] += 1
        if finished[0] < len(tasks):
            progress(stage(finished[0]))

    progress(stage(0))
    outcomes = fork_map(run, len(tasks), workers, done)
    for (kind, name), (out, seconds) in zip(tasks, outcomes, strict=True):
        add_seconds(seconds)  # from the worker processes: summed over them (they overlap in time)
        if kind == "sensitivity":
            sens_rows += [{"site": name, **row} for row in out]
            continue
        snapshot.results[name] = out.real.get("shared") or next(iter(out.real.values()))
        snapshot.families[name] = families[name] = out.real
        for family, null, granularity, statistic, value in out.statistics():
            scalars[scalar_key(name, family, granularity, statistic, null, prefix)] = float(value)
        arrays.update({f"{name}/{key}": value for key, value in out.arrays().items()})
        convergence[name] = out.convergence()
    tables = {"nodes": render.node_table(snapshot, families)}
    if any(site.crossover for per_family in families.values() for site in per_family.values()):
        tables["crossover"] = render.crossover_table(snapshot, families)
    if sens_rows:
        columns = list(sens_rows[0])
        tables["sensitivity"] = (columns, [[row[c] for c in columns] for row in sens_rows])
    meta = {"penalties": penalties.as_dict(), "convergence": convergence, "nulls": list(plan.nulls)}
    return scalars, arrays, tables, meta


def build_result(snapshot: EpochSnapshot, config, analyses: list = (), figures: bool = True,
                 table: bool = True, prefix: str = PREFIX, plan: AnalysisPlan | None = None,
                 progress=_quiet) -> EpochResult:
    """The whole result of one analysed epoch: built-in sites, figures, tables, custom analyses.

    Args:
        snapshot: the captured probe activations of the epoch.
        config: the ``AnalysisConfig`` (opaque here: only ``granularities`` is read, for figures).
        analyses: ``NodalAnalysis`` objects, run after the built-in analysis.
        figures, table: whether to draw the figures / keep the tables.
        prefix: first segment of every key.
        plan: penalties, nulls and sensitivity of this state (`AnalysisPlan`; default: the rule's
            penalties chosen on this snapshot and every null of the config).
        progress: called with a line saying what is being computed.
    """
    from lightning_ssb.analysis.timing import add_seconds, collect, timed

    start = time.perf_counter()
    result = EpochResult(epoch=snapshot.epoch, step=snapshot.step)
    with collect() as seconds:
        if plan is not None:
            add_seconds(plan.timed_before)
        _build(result, snapshot, config, analyses, figures, table, prefix, plan, progress, timed)
    result.meta["seconds"] = {k: round(v, 3) for k, v in sorted(seconds.items())}
    result.seconds = time.perf_counter() - start
    result.scalars[run_key("analysis_seconds", prefix)] = result.seconds
    return result


def _build(result, snapshot, config, analyses, figures, table, prefix, plan, progress, timed) -> None:
    result.scalars[run_key("epoch", prefix)] = float(snapshot.epoch)
    scalars, result.arrays, tables, site_meta = site_results(snapshot, config, prefix, plan, progress)
    result.scalars.update(scalars)
    if table:
        result.tables.update(tables)
    granularities = list(getattr(config, "granularities", ("node", "head")))
    if figures:
        progress("figures")
        with timed("figures"):
            from lightning_ssb.plots import draw_pngs  # matplotlib: only where figures are drawn

            makers = render.site_figure_makers(snapshot, prefix, granularities)
            result.figures.update(draw_pngs(makers, plan.workers if plan is not None else 1))
    with timed("custom analyses"):
        for analysis in analyses:
            out = AnalysisOutput.of(analysis.analyze(snapshot), analysis.name)
            result.scalars.update({custom_key(analysis.name, k, prefix): float(v) for k, v in out.scalars.items()})
            result.figures.update({custom_key(analysis.name, k, prefix): v for k, v in out.figures.items()})
            result.arrays.update({f"{analysis.name}/{k}": v.detach().cpu() for k, v in out.arrays.items()})
    with timed("figures"):
        for fig in result.figures.values():
            render.to_png(fig)  # render here, off the main thread; sinks reuse the bytes
    parsed = [parse_key(k, prefix) for k in scalars]
    families = sorted({p.family for p in parsed if p.family})
    result.meta = {"epoch": snapshot.epoch, "step": snapshot.step, "num_classes": snapshot.num_classes,
                   "label_names": list(snapshot.label_names), "families": families, "prefix": prefix,
                   "sites": {n: list(x.shape[1:]) for n, x in snapshot.train.items()}, **site_meta,
                   "provenance": provenance()}  # the code and library versions behind these numbers

