"""``SSBMonitor``: the nodal symmetry-breaking analysis of docs/method.md, live while BERT trains.

Only the Lightning hooks, the schedule, the resumable state and the background queue live here; the
work of each analysed state (probe, capture, snapshot -> result, sinks) is the run's
``results.engine.AnalysisEngine`` (``self.engine``, which ``analyze`` drives too); the probe set is in
``probe.py``. The reference (epoch -1) is analysed at ``on_train_start`` (and, for a
pre-trained start with ``init_reference``, the same architecture at a seeded random initialisation,
epoch -3), every ``every_n_epochs``-th epoch at its end (training waits for the capture only; the
analysis runs on a worker thread and is logged from the main thread). The first analysed state fixes
the read-out penalties for the run (docs/method.md 3), and a checkpoint is not written before they
are chosen. Before an epoch is captured the previous result is logged, so a checkpoint has at most
its own epoch pending; a resume analyses that epoch again (same weights) unless a sink stored it, at
``on_train_start``, or at ``on_fit_end`` when the checkpoint ends the training and Lightning skips it
(``max_epochs`` reached). At the end of fit: the report, then the results folder to the sinks (W&B:
an artifact).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from lightning_ssb.analysis import AnalysisConfig, Penalties
from lightning_ssb.callbacks.custom import NodalAnalysis
from lightning_ssb.callbacks.probe import ProbeConfig, ProbeSet
from lightning_ssb.capture import SITES, encoder_layers
from lightning_ssb.parallel import children_niced, default_workers
from lightning_ssb.results import epochs
from lightning_ssb.results.build import AnalysisPlan, EpochSnapshot, PenaltyBook
from lightning_ssb.results.engine import AnalysisEngine
from lightning_ssb.results.keys import check_custom_name
from lightning_ssb.results.sinks import SinkError


class _OnEngine:
    """A monitor attribute that lives on its engine: one copy, read and written under the monitor's name."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, monitor, owner=None):
        return self if monitor is None else getattr(monitor.engine, self.name)

    def __set__(self, monitor, value) -> None:
        setattr(monitor.engine, self.name, value)


class SSBMonitor(Callback):
    """Capture every head/node on a fixed probe set, analyse symmetry breaking, log it live.

    Args:
        layers: Encoder layers to watch (0-based); None watches all of them.
        sites: What to capture per layer: ``attn.heads`` (per-head attention outputs, ``[N, H, d]``)
            and/or ``output`` (the layer's hidden-state output, one head of D nodes).
        every_n_epochs: Analyse after every n-th training epoch (the reference always runs).
        reference: Analyse the state training starts from, before the first step (logged as epoch -1).
        init_reference: When training starts from pre-trained weights, also analyse the same architecture
            at a seeded random initialisation (the symmetric state; logged as epoch -3, folder ``init/``),
            with the run's penalties.
        init_seed: Seed of that random initialisation.
        sensitivity: At the reference and at the last epoch, re-run the deepest watched layer's unit
            statistics over ``analysis.sensitivity_grid`` (live units, labels per unit and Phi against
            the L2 penalty; ``sensitivity.csv`` and the report's sensitivity figure).
        probe: The probe set (sizes, batch size, seed, MLM labels, position rule).
        analysis: The analysis settings (lightning_ssb.analysis.AnalysisConfig), passed on unchanged.
        figures: Log heatmaps, matrices, envelopes and crossover curves as images.
        figures_every_n_epochs: Draw those figures at the reference states, the last epoch and every n-th
            epoch (null: only there). Each state draws a few per site: W&B's workspace stays readable and
            a 50-epoch run does not leave thousands of images.
        table: Log the per-node and crossover tables.
        background: Run the analysis beside training (True), or let training wait for it (False). Beside
            training it runs on a worker thread; at the end of each epoch training first waits for what is
            still pending, so that a checkpoint has at most its own epoch left to analyse. On a CPU the
            run's penalties are chosen first, with training waiting, and then the analysis' forked processes
            run at a lower priority (``background_nice``), taking the time training leaves idle; measured on
            2 cores, in six runs of both quick starts this ended 1.6 s later to 51 s sooner than the same
            fit with training waiting (README, Speed). ``auto``: beside training, except on a CPU where the
            analysis cannot fork (``parallel.default_workers()`` is 1): there training waits for it.
        background_nice: On a CPU, beside training, the analysis' forked processes run this much nicer
            (Unix nice, 0 to 19): training keeps the cores it uses and the analysis takes the time training
            leaves idle (data loading, the optimiser's single-threaded parts, logging) instead of slowing
            every step. 0: the same priority. The last epoch's analysis, with training over, runs at full
            priority.
        strict: Raise analysis errors in training, and a sink's failure at the end of fit; False warns.
        sinks: Where results go: ``auto`` (W&B when the trainer has a WandbLogger, the disk, and
            every other Lightning logger), or a list of ``wandb``, ``disk``, ``logger``.
        dirpath: Folder of the disk results; None: ``<trainer.log_dir>/ssb``, plus ``/<logger version>``
            (the W&B run id) when the logger's folder is shared by runs.
        prefix: First segment of every logged key.
        analyses: Custom analyses (``NodalAnalysis`` subclasses) run on every analysed epoch.
        report: At the end of fit, write the HTML report of the run's disk results
            (``python -m lightning_ssb report``), print its path and log it to W&B as an HTML panel.
            Either way the results folder (report included) is then logged to W&B as the artifact
            ``<prefix>-results-<run id>``.
    """

    # Held by the engine (results/engine.py), read and written here under the same names: its settings,
    layers = _OnEngine()
    sites = _OnEngine()
    analysis = _OnEngine()
    analyses = _OnEngine()
    make_table = _OnEngine()
    prefix = _OnEngine()
    sink_names = _OnEngine()
    # the run's results folder, probe set, sinks (failed: sink -> what went wrong), logged states, penalties,
    dirpath = _OnEngine()
    probe = _OnEngine()
    sinks = _OnEngine()
    failed = _OnEngine()
    history = _OnEngine()
    book = _OnEngine()
    # and the main thread's seconds per analysed state: the capture and gather; all of it (in the foreground
    # with the wait for the analysis and the logging); handing each result to the sinks; waiting for it
    capture_seconds = _OnEngine()
    blocking_seconds = _OnEngine()
    log_seconds = _OnEngine()
    wait_seconds = _OnEngine()

    def __init__(self, layers: list[int] | None = None, sites: list[str] = ["attn.heads"],  # noqa: B006
                 every_n_epochs: int = 1, reference: bool = True, init_reference: bool = False, init_seed: int = 0,
                 sensitivity: bool = True, probe: ProbeConfig = ProbeConfig(),  # noqa: B008
                 analysis: AnalysisConfig = AnalysisConfig(), figures: bool = True,  # noqa: B008
                 figures_every_n_epochs: int | None = None, table: bool = True,
                 background: bool | Literal["auto"] = "auto", background_nice: int = 19, strict: bool = True,
                 sinks: list[str] = ["auto"],  # noqa: B006
                 dirpath: str | None = None, prefix: str = "ssb", analyses: list[NodalAnalysis] | None = None,
                 report: bool = True) -> None:
        super().__init__()
        _check_subset("sites", sites, SITES)
        _check_subset("sinks", sinks, ("auto", "wandb", "disk", "logger"))
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"SSBMonitor.every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
        if layers is not None and (not layers or len(set(layers)) != len(layers) or min(layers) < 0):
            raise ValueError(f"SSBMonitor.layers must be distinct layers >= 0, got {layers}")
        if any(not isinstance(a, NodalAnalysis) for a in analyses or []):
            raise TypeError("SSBMonitor.analyses must be NodalAnalysis instances")
        names = [check_custom_name(getattr(a, "name", None) or type(a).__name__) for a in analyses or []]
        if len(set(names)) < len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"SSBMonitor.analyses: two analyses named {twice}; give each its own name")
        self.engine = AnalysisEngine(layers, sites, analysis, analyses, table=table, prefix=prefix, sinks=sinks,
                                     dirpath=dirpath)
        self.every_n_epochs, self.reference = every_n_epochs, reference
        self.init_reference, self.init_seed, self.sensitivity = init_reference, init_seed, sensitivity
        self._layers_arg = None if layers is None else list(layers)  # as given: the state key must not move
        self.probe_config = probe  # validated by its own __post_init__, once (the analysis settings too)
        self.make_figures, self.background, self.strict = figures, background, strict
        if not isinstance(background_nice, int) or not 0 <= background_nice <= 19:
            raise ValueError(f"SSBMonitor.background_nice must be an integer from 0 to 19, got {background_nice!r}")
        self.background_nice = background_nice
        if figures_every_n_epochs is not None and (not isinstance(figures_every_n_epochs, int)
                                                   or figures_every_n_epochs < 1):
            raise ValueError(f"SSBMonitor.figures_every_n_epochs must be null or an integer >= 1, "
                             f"got {figures_every_n_epochs!r}")
        self.figures_every_n_epochs = figures_every_n_epochs
        self.report, self.report_path = report, None
        self.captured: list[int] = []  # epochs whose probe was captured (the same on every rank)
        self.report_seconds = 0.0  # time writing the end-of-fit report
        self.task: str | None = None  # "mlm" or "classification", known once check() ran
        self._probe_state: dict | None = None
        self._unlogged: list[int] = []  # after a resume: captured before the checkpoint, never logged
        self._pending: list[Future] = []  # the queued analyses, in submission order (one worker: in order)
        self._executor: ThreadPoolExecutor | None = None
        self._progress = WaitProgress()

    @property
    def state_key(self) -> str:
        """Tells monitors apart in one Trainer (and in a checkpoint): what they watch and where they log."""
        return self._generate_state_key(layers=self._layers_arg, sites=self.sites, prefix=self.prefix)

    def check(self, pl_module: pl.LightningModule, datamodule) -> None:
        """The arguments against the model and data (the CLI calls this before any run is created)."""
        model = getattr(pl_module, "model", None)
        if model is None or not hasattr(getattr(model, "config", None), "num_attention_heads"):
            raise ValueError("SSBMonitor needs a LightningModule whose `.model` is a Hugging Face BERT "
                             "(see docs/ARCHITECTURE.md)")
        self.task = getattr(pl_module, "task", None) or getattr(datamodule, "task", None)
        if self.task not in ("mlm", "classification"):
            raise ValueError(f"SSBMonitor: task must be 'mlm' or 'classification', got {self.task!r}")
        num_layers = len(encoder_layers(model))
        if self.layers is not None and max(self.layers) >= num_layers:
            raise ValueError(f"SSBMonitor.layers must be in 0..{num_layers - 1}, got {self.layers}")
        self.layers = list(range(num_layers)) if self.layers is None else list(self.layers)
        self.probe_config.rule_for(self.task)  # raises when the position rule does not fit the task

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._progress.stopped.clear()  # a fit after an interrupted one analyses again
        self.check(pl_module, trainer.datamodule)
        dm = trainer.datamodule
        missing = [a for a in ("train_dataset", "val_dataset", "collate_fn") if getattr(dm, a, None) is None]
        if missing:
            raise ValueError(f"SSBMonitor needs a data module with {missing} after setup('fit') (docs/ARCHITECTURE.md)")
        self.open_sinks(trainer)

    def open_sinks(self, trainer: pl.Trainer) -> None:
        """The engine's sinks in the run's results folder: ``dirpath``, or ``<trainer.log_dir>/ssb`` (plus
        ``/<logger version>`` when the logger's folder is shared by runs). Call it on every rank."""
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective call under DDP: every rank, here
        if trainer.is_global_zero:
            logger = trainer.logger
            shared = logger is not None and getattr(logger, "log_dir", None) is None and logger.version is not None
            self.engine.open_sinks(self.dirpath or os.path.join(log_dir, "ssb", *([str(logger.version)] if shared
                                                                                    else [])), trainer.loggers)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.build_probe(trainer.datamodule)
        if self.reference and trainer.global_step == 0 and epochs.REFERENCE not in self.captured:
            self._analyse_epoch(trainer, pl_module, epochs.REFERENCE)
        if (self.init_reference and trainer.global_step == 0 and epochs.INIT not in self.captured
                and _pretrained(pl_module)):
            with random_init(pl_module.model, self.init_seed) as fresh:
                self._analyse_epoch(trainer, pl_module, epochs.INIT, model=fresh)
        self._finish_unlogged(trainer, pl_module)

    def build_probe(self, datamodule) -> ProbeSet:
        """The engine's probe set from ``probe`` (once; after a resume, from the checkpoint's seed and indices)."""
        return self.engine.build_probe(self.probe_config, datamodule, self.task, state=self._probe_state)

    def _finish_unlogged(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After a resume: the epochs captured before the checkpoint was written but never logged (an
        interrupt or a crash during their analysis). One stored by a sink counts as logged; the
        checkpoint's own epoch is analysed again (its weights are exactly that epoch's); any other is
        named in a warning."""
        for epoch in self._unlogged:
            stored = trainer.strategy.broadcast(any(s.has(epoch) for s in self.sinks), src=0)  # rank 0 decides
            if stored:
                self.history.append({"epoch": epoch, "step": trainer.global_step, "seconds": 0.0})
            elif epoch == trainer.current_epoch - 1:
                self.captured.remove(epoch)
                self._analyse_epoch(trainer, pl_module, epoch)
            elif trainer.is_global_zero:
                warnings.warn(f"SSBMonitor: epoch {epoch} was captured but its result was never stored", stacklevel=2)
        self._unlogged = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pending and self._pending[0].done():
            self._drain(wait=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs == 0 and epoch not in self.captured:
            self._drain(wait=True)  # a checkpoint written after this hook has at most this epoch pending
            self._analyse_epoch(trainer, pl_module, epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._unlogged:  # a resume from a checkpoint that ends the training: Lightning skipped on_train_start
            self.build_probe(trainer.datamodule)
            self._finish_unlogged(trainer, pl_module)
        self._drain(wait=True)
        if trainer.is_global_zero and "disk" in {s.name for s in self.engine.live_sinks}:
            if self.report:
                self._write_report()
            self.engine.log_results()
        self._shutdown()
        if self.failed and self.strict:  # raised after the last checkpoint and every other sink's results
            raise SinkError(f"SSBMonitor: {self.engine.failure()} (checkpoints and the other sinks' results are "
                            "complete)")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Log every finished analysis. After an interrupt (Ctrl-C, SIGTERM) the running one stops at its next
        stage instead of keeping the process (and Ctrl-C, which Lightning then ignores) for minutes: a resume
        (``--ckpt_path last``) analyses that epoch again from the checkpoint. After an error, it is waited
        for. Never masks the training error."""
        if isinstance(exception, (KeyboardInterrupt, SystemExit)):  # Lightning's SIGTERMException is a SystemExit
            self._progress.stop()
        while self._pending:
            future = self._pending[0]
            try:
                self._drain_one(future)
            except BaseException as err:  # noqa: BLE001
                if self._pending and self._pending[0] is future:
                    self._pending.pop(0)
                why = "stopped by the interrupt" if isinstance(err, AnalysisStopped) else f"{type(err).__name__}: {err}"
                warnings.warn(f"SSBMonitor: {epochs.label(future.ssb_epoch)} was not analysed ({why}); a resume "
                              "(--ckpt_path last) analyses it again", stacklevel=2)
        self._shutdown()

    def state_dict(self) -> dict:
        """The probe's seed and indices, the epochs captured and those logged, the run's penalties.

        While the first analysed state is still choosing the penalties (in the background, before its
        result is logged), waits until they are chosen: a resume must use the run's penalties, not
        choose new ones on a later state."""
        running = [f for f in self._pending if not f.done()]
        while self.book.penalties is None and running:  # until chosen, or no analysis is left that could choose
            wait_for([self.book.chosen, *running], return_when=FIRST_COMPLETED)
            running = [f for f in running if not f.done()]
        probe_state = self.probe.state_dict() if self.probe is not None else self._probe_state
        chosen = self.book.penalties
        return {"history": [dict(h) for h in self.history], "captured": list(self.captured), "probe": probe_state,
                "penalties": None if chosen is None else chosen.as_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        chosen = state_dict.get("penalties")
        self.book = PenaltyBook(None if chosen is None else Penalties.from_dict(chosen))
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self.captured = list(state_dict.get("captured", [h["epoch"] for h in self.history]))
        self._unlogged = [e for e in self.captured if e not in {h["epoch"] for h in self.history}]
        self._probe_state = state_dict.get("probe")
        self.probe = None  # rebuilt from the saved indices and seed at on_train_start

    def runs_in_background(self, pl_module: pl.LightningModule) -> bool:
        """Whether the analysis runs beside training (``background``). ``auto``: yes, except on a CPU where
        the analysis cannot run in forked processes at a lower priority (``parallel.default_workers()`` is
        1: one usable core, ``LIGHTNING_SSB_WORKERS=1``, or not Linux); there a thread beside training would
        take its cores at the same priority, so training waits instead."""
        if self.background == "auto":
            return pl_module.device.type != "cpu" or default_workers() > 1
        return bool(self.background)

    def _beside_cpu_training(self, pl_module: pl.LightningModule) -> bool:
        return pl_module.device.type == "cpu" and self.runs_in_background(pl_module)

    def draws_figures(self, epoch: int, last: bool) -> bool:
        """Figures at the reference states, the last epoch and every ``figures_every_n_epochs``-th epoch."""
        every = self.figures_every_n_epochs
        return self.make_figures and (epoch < 0 or last or (every is not None and (epoch + 1) % every == 0))

    def plan(self, epoch: int, last: bool, device="cpu") -> AnalysisPlan:
        """What the state `epoch` computes besides the always-on analysis: the run's penalties (the
        worker of the first analysed state fills them in), the nulls of ``analysis.null_mode``, the
        crossover of ``analysis.crossover_mode``, and the sensitivity of the deepest layer's sites at the
        reference states and the last epoch."""
        ends = epoch < 0 or last
        mode = self.analysis.null_mode
        run_nulls = mode == "all" or (mode == "ends" and ends) or (mode == "reference" and epoch < 0)
        deepest = [f"blocks.{max(self.layers)}.{site}" for site in self.sites]
        return AnalysisPlan(book=self.book, nulls=list(self.analysis.nulls) if run_nulls else [],
                            sensitivity=deepest if self.sensitivity and ends else [],
                            crossover=self.analysis.crossover_mode == "all" or ends, device=device,
                            # forked processes, one thread each: on a CPU they analyse the sites and draw the
                            # figures; on an accelerator they take the CPU work (results.build.process_split)
                            workers=default_workers())

    def _analyse_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int,
                       model: torch.nn.Module | None = None) -> None:
        start = time.perf_counter()
        self.captured.append(epoch)
        model = pl_module.model if model is None else model  # the HF model, never the DDP wrapper
        snap = self.engine.capture(model, epoch, trainer.global_step, trainer.global_rank, trainer.world_size,
                                   pl_module.device, getattr(trainer.precision_plugin, "forward_context", None))
        if snap is not None:  # rank 0
            last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
            plan = self.plan(epoch, last, pl_module.device)
            nice = 0
            if self._beside_cpu_training(pl_module):
                # the run's penalties before training goes on (every checkpoint needs them), at full priority
                # and with the wait line; then the rest of the state at a lower priority, unless training is over
                self._choose_penalties(snap, plan)
                nice = 0 if last else self.background_nice
            self._submit(snap, plan, self.draws_figures(epoch, last), nice)
            if not self.runs_in_background(pl_module):
                self._drain(wait=True)
        self.blocking_seconds.append(time.perf_counter() - start)

    def _submit(self, snap: EpochSnapshot, plan: AnalysisPlan, figures: bool, nice: int = 0) -> None:
        """Queue the analysis of ``snap`` on the worker thread (one worker: the states in order); ``nice``: how
        much nicer its forked processes run (``parallel.children_niced``)."""
        future = self._worker().submit(self._analyse, snap, plan, figures, self._progress.reporter(snap.epoch), nice)
        future.ssb_epoch = snap.epoch
        self._pending.append(future)

    def _worker(self) -> ThreadPoolExecutor:
        self._executor = self._executor or ThreadPoolExecutor(1, thread_name_prefix="ssb-analysis")
        return self._executor

    def _analyse(self, snap: EpochSnapshot, plan: AnalysisPlan, figures: bool, progress, nice: int):
        with children_niced(nice):
            return self.engine.analyse(snap, plan, figures, progress)

    def _choose_penalties(self, snap: EpochSnapshot, plan: AnalysisPlan) -> None:
        """While the run has no penalties, choose them on ``snap`` now, on the worker thread, with training
        waiting and told so (the wait line); a later state, or a checkpoint, never waits for them."""
        if plan.book.penalties is not None:
            return
        self._drain(wait=True)  # the worker is free: nothing queued can be choosing them
        future = self._worker().submit(self.engine.choose_penalties, snap, plan, self._progress.reporter(snap.epoch))
        future.ssb_epoch = snap.epoch
        start = time.perf_counter()
        try:
            with self._progress.waiting(future):
                future.result()
        except AnalysisStopped:
            raise
        except Exception as err:
            if self.strict:
                raise
            warnings.warn(f"SSBMonitor: the read-out penalties could not be chosen: {err!r}", stacklevel=2)
        self.wait_seconds.append(time.perf_counter() - start)

    def _drain(self, wait: bool) -> None:
        """Log finished results in submission order (all of them when ``wait``). A result leaves the
        queue only once it is in hand: an interrupt while waiting for it (Ctrl-C) leaves it queued for
        ``on_exception``, which waits again and logs it."""
        while self._pending and (wait or self._pending[0].done()):
            self._drain_one(self._pending[0])

    def _drain_one(self, future: Future) -> None:
        """Wait for the first queued result, take it off the queue and log it."""
        try:
            start = time.perf_counter()
            with self._progress.waiting(future):
                result = future.result()
            self.wait_seconds.append(time.perf_counter() - start)
        except AnalysisStopped:
            self._pending.pop(0)
            raise
        except Exception as err:
            self._pending.pop(0)
            if self.strict:
                raise
            warnings.warn(f"SSBMonitor: the analysis failed and is skipped: {err!r}", stacklevel=2)
            return
        self._pending.pop(0)
        self.engine.log(result)

    def _write_report(self) -> None:
        import sys

        from lightning_ssb.report.publish import publish_report

        print(f"lightning_ssb: SSBMonitor: writing the report of {self.dirpath} (figures from the disk results)",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        self.report_path, failed = publish_report(self.dirpath, self.engine.live_sinks)
        self.report_seconds = time.perf_counter() - start
        self.engine.note_failures(failed)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.engine.close()


class AnalysisStopped(Exception):
    """Raised in the analysis worker at its next stage once ``WaitProgress.stop`` was called (an interrupt)."""


class WaitProgress:
    """While training waits for an analysis, say what it waits for: one line per stage on stderr
    (``lightning_ssb: SSBMonitor: epoch 0: site 3/6 blocks.2.attn.heads: read-outs and statistics``),
    with the seconds waited so far. While training runs beside the analysis, nothing is printed.
    ``stop()`` makes every analysis raise ``AnalysisStopped`` at its next stage."""

    def __init__(self, stream=None) -> None:
        self.stream = stream
        self.current: dict[int, str] = {}  # the latest stage of each pending analysis, by epoch
        self.watching: int | None = None
        self.started = 0.0
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()

    def reporter(self, epoch: int):
        def report(stage: str) -> None:
            if self.stopped.is_set():
                raise AnalysisStopped(f"the analysis of {epochs.label(epoch)} was stopped before {stage}")
            self.current[epoch] = stage
            if self.watching == epoch:
                self._print(epoch, stage)
        return report

    def _print(self, epoch: int, stage: str) -> None:
        import sys

        stream = self.stream or sys.stderr
        print(f"lightning_ssb: SSBMonitor: waiting for {epochs.label(epoch)} "
              f"({time.perf_counter() - self.started:.0f} s): {stage}", file=stream, flush=True)

    class _Watch:
        def __init__(self, owner: WaitProgress, epoch: int | None) -> None:
            self.owner, self.epoch = owner, epoch

        def __enter__(self):
            if self.epoch is not None:
                self.owner.watching, self.owner.started = self.epoch, time.perf_counter()
                stage = self.owner.current.get(self.epoch)
                if stage:
                    self.owner._print(self.epoch, stage)

        def __exit__(self, *exc):
            if self.epoch is not None:
                self.owner.current.pop(self.epoch, None)
            self.owner.watching = None

    def waiting(self, future: Future) -> _Watch:
        """Context of the main thread waiting for `future` (nothing shown when it is done already)."""
        epoch = getattr(future, "ssb_epoch", None)
        return self._Watch(self, None if future.done() else epoch)


def _pretrained(pl_module) -> bool:
    """Whether the module's weights came from a pre-trained model or checkpoint (then its start is not
    the symmetric state)."""
    hparams = getattr(pl_module, "hparams", None) or {}
    return bool(hparams.get("pretrained"))


class random_init:
    """Context manager: a copy of a Hugging Face model's architecture at a seeded random initialisation,
    on the same device, in eval mode; the global random state is left as it was (training's draws do not
    move)."""

    def __init__(self, model: torch.nn.Module, seed: int) -> None:
        self.model, self.seed = model, seed
        self.fresh: torch.nn.Module | None = None

    def __enter__(self) -> torch.nn.Module:
        device = next(self.model.parameters()).device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            self.fresh = type(self.model)(self.model.config)
        return self.fresh.to(device).eval()

    def __exit__(self, *exc) -> None:
        self.fresh = None


def _check_subset(name: str, values: list[str], allowed: tuple[str, ...]) -> None:
    if not values or any(v not in allowed for v in values):
        raise ValueError(f"SSBMonitor.{name} must be a non-empty list from {list(allowed)}, got {values}")
