"""The analysis engine: probe -> capture -> snapshot -> result -> sinks, for one run's results folder.

One engine does the work of every analysed state, whoever asks for it: ``SSBMonitor``
(``callbacks/monitor.py``) on its schedule from Lightning's hooks, with its background queue, and
``analyze`` (``analyze.py``) once, outside any fit. It holds what the run's states share: the probe set,
the sinks (and those that failed), the penalty book, the history of logged states and the timing
counters. No Lightning here: the caller passes the model, the step, its rank and the folder.

    engine.open_sinks(dirpath, loggers)                  # rank 0
    engine.build_probe(probe_config, datamodule, task)
    snapshot = engine.capture(model, epoch, step)        # every rank; None except on rank 0
    result = engine.analyse(snapshot, plan, figures)     # on any thread (the monitor's worker)
    engine.log(result)                                   # the main thread
    engine.close()
"""

from __future__ import annotations

import os
import time
import warnings

from lightning_ssb.analysis.optim import unconverged_why
from lightning_ssb.capture import capture_probe
from lightning_ssb.results import epochs
from lightning_ssb.results.build import (
    AnalysisPlan,
    EpochResult,
    EpochSnapshot,
    PenaltyBook,
    build_result,
    ensure_penalties,
)
from lightning_ssb.results.keys import PREFIX
from lightning_ssb.results.sinks import Sink, close_all, log_results_all, make_sinks, prepare_all, write_all


class AnalysisEngine:
    """Capture, analyse and log the states of one run (docs/ARCHITECTURE.md, "From fit to a number").

    Args:
        layers: Encoder layers captured (0-based; the caller resolves None to all of them before capturing).
        sites: What each layer captures (``capture.SITES``).
        analysis: The ``AnalysisConfig`` every state is analysed with.
        analyses: Custom analyses (``NodalAnalysis`` objects) run on every state.
        table: Keep the per-node and crossover tables.
        prefix: First segment of every logged key.
        sinks: Sink names for ``make_sinks`` (``auto``, ``wandb``, ``disk``, ``logger``).
        dirpath: The results folder (``open_sinks`` sets it).

    Attributes (besides the arguments):
        probe: the probe set (``ProbeSet``), once built.
        sinks, failed: the open sinks; a sink that failed, with what went wrong (left out from then on).
        history: one entry per logged state: epoch, step, seconds.
        book: the run's read-out penalties, chosen by the first analysed state (docs/method.md 3).
        capture_seconds: the probe's forward passes and the gather, per captured state;
        blocking_seconds: the main thread's time per analysed state (the caller adds it: with a
            foreground analysis it includes the wait and the logging);
        log_seconds: handing each result to the sinks; wait_seconds: the main thread waiting for each analysis.
    """

    def __init__(self, layers: list[int] | None, sites: list[str], analysis, analyses: list | None = None,
                 table: bool = True, prefix: str = PREFIX, sinks: list[str] | None = None,
                 dirpath: str | None = None) -> None:
        self.layers = None if layers is None else list(layers)
        self.sites = list(sites)
        self.analysis, self.analyses, self.make_table, self.prefix = analysis, list(analyses or []), table, prefix
        self.sink_names = list(sinks or ["auto"])
        self.dirpath = dirpath
        self.probe = None
        self.sinks: list[Sink] = []
        self.failed: dict[Sink, str] = {}
        self.history: list[dict] = []
        self.book = PenaltyBook()
        self.capture_seconds: list[float] = []
        self.blocking_seconds: list[float] = []
        self.log_seconds: list[float] = []
        self.wait_seconds: list[float] = []

    # -- sinks ---------------------------------------------------------------------------------------------
    def open_sinks(self, dirpath: str, loggers: list = ()) -> None:
        """The sinks of the results folder ``dirpath`` (``sinks``; ``auto``: from ``loggers``). Rank 0 only."""
        self.dirpath = dirpath
        self.sinks = make_sinks(self.sink_names, list(loggers), dirpath, self.prefix)

    @property
    def live_sinks(self) -> list[Sink]:
        """The sinks that have not failed."""
        return [s for s in self.sinks if s not in self.failed]

    def note_failures(self, failed: dict[Sink, str]) -> None:
        """Sinks that failed outside ``log`` (the report): left out from now on."""
        self.failed.update(failed)

    def failure(self) -> str | None:
        """Every sink failure in one line, or None."""
        return "; ".join(self.failed.values()) if self.failed else None

    def close(self) -> None:
        close_all(self.sinks)

    # -- one state ---------------------------------------------------------------------------------------
    def build_probe(self, config, datamodule, task: str, state: dict | None = None):
        """The probe set, built once from ``config`` (a ``ProbeConfig``; ``state``: the seed and indices of a
        checkpoint, so that a resumed run sees the same examples)."""
        if self.probe is None:
            self.probe = config.build(datamodule, task, state=state)
        return self.probe

    def capture(self, model, epoch: int, step: int, rank: int = 0, world: int = 1, device="cpu",
                autocast=None) -> EpochSnapshot | None:
        """The probe pass of ``model`` (the Hugging Face model, never a DDP wrapper): every rank captures its
        share, rank 0 gathers them into the snapshot of state ``epoch`` (None on the other ranks). Times
        itself into ``capture_seconds``."""
        start = time.perf_counter()
        captured = capture_probe(model, self.probe, self.layers, self.sites, rank, world, device, autocast)
        self.capture_seconds.append(time.perf_counter() - start)
        if captured is None:
            return None
        return EpochSnapshot(epoch, step, captured.x_train, captured.x_test, captured.y_train, captured.y_test,
                             self.probe.num_classes, list(self.probe.label_names))

    def choose_penalties(self, snapshot: EpochSnapshot, plan: AnalysisPlan, progress=None):
        """The run's penalties into ``plan.book`` (chosen on ``snapshot`` by the config's rule while the book is
        empty; ``results.build.ensure_penalties``), before and apart from the rest of the state's analysis."""
        from lightning_ssb.analysis.timing import collect

        with collect() as seconds:
            penalties = ensure_penalties(snapshot, self.analysis, plan, progress or (lambda stage: None))
        plan.timed_before.update(seconds)
        return penalties

    def analyse(self, snapshot: EpochSnapshot, plan: AnalysisPlan, figures: bool = True,
                progress=None) -> EpochResult:
        """The snapshot's result (``results.build.build_result``): safe on a worker thread, one at a time (the
        first fills ``book``). ``progress`` is called with each stage (it may raise to stop the analysis). Then
        each sink's ``prepare`` of it, here rather than on the main thread (timed as "sinks: prepared")."""
        result = build_result(snapshot, self.analysis, self.analyses, figures, self.make_table, self.prefix, plan,
                              *([] if progress is None else [progress]))
        start = time.perf_counter()
        prepare_all(self.live_sinks, result)
        seconds = result.meta.setdefault("seconds", {})
        seconds["sinks: prepared"] = round(time.perf_counter() - start, 3)
        return result

    def log(self, result: EpochResult) -> None:
        """Hand ``result`` to every live sink (the main thread); a sink that raises is warned about and left
        out from then on; read-out fits that did not converge are warned about. Adds it to ``history``."""
        start = time.perf_counter()
        unconverged = {site: c for site, c in (result.meta.get("convergence") or {}).items() if c.get("unconverged")}
        if unconverged:
            worst = max(c["grad_max"] for c in unconverged.values())
            count = int(sum(c["unconverged"] for c in unconverged.values()))
            warnings.warn(f"SSBMonitor: {epochs.label(result.epoch)}: {count} read-out fits stopped before converging "
                          f"in {sorted(unconverged)} (largest final gradient {worst:.2g} > analysis.gtol "
                          f"{self.analysis.gtol:g}): {unconverged_why(unconverged.values(), self.analysis.max_iter)}",
                          stacklevel=2)
        for sink, message in write_all(self.live_sinks, result):
            self.failed[sink] = message
            warnings.warn(f"SSBMonitor: {message}; it is left out from now on, training and the other sinks go on",
                          stacklevel=2)
        self.history.append({"epoch": result.epoch, "step": result.step, "seconds": result.seconds})
        self.log_seconds.append(time.perf_counter() - start)

    def log_results(self) -> None:
        """The results folder (report included) to the sinks that take it: W&B logs it as an artifact. A
        failure is a sink failure like any other (a warning; ``failed``), never a lost disk result."""
        if not self.dirpath or not os.path.isdir(self.dirpath):
            return
        for sink, message in log_results_all(self.live_sinks, self.dirpath):
            self.failed[sink] = message
            warnings.warn(f"SSBMonitor: {message}", stacklevel=2)
