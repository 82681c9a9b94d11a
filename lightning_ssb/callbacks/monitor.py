"""``SSBMonitor``: the nodal symmetry-breaking analysis of docs/method.md, live while BERT trains.

Only the Lightning hooks, the schedule and the resumable state live here; the probe set is in
``probe.py``, capture-and-gather in ``capture.py``, snapshot -> result in ``results/build.py``, the
sinks in ``results/sinks.py``. The reference (epoch -1) is analysed at ``on_train_start``, every
``every_n_epochs``-th epoch at its end (training waits for the capture only; the analysis runs on a
worker thread and is logged from the main thread). Before an epoch is captured the previous result
is logged, so a checkpoint has at most its own epoch pending; a resume analyses that epoch again
(same weights) unless a sink stored it.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from lightning_ssb.analysis import AnalysisConfig
from lightning_ssb.callbacks.capture import SITES, capture_probe, encoder_layers
from lightning_ssb.callbacks.custom import NodalAnalysis
from lightning_ssb.callbacks.probe import ProbeConfig, ProbeSet
from lightning_ssb.results.build import EpochResult, EpochSnapshot, build_result
from lightning_ssb.results.sinks import REFERENCE_EPOCH, Sink, SinkError, close_all, make_sinks, write_all


class SSBMonitor(Callback):
    """Capture every head/node on a fixed probe set, analyse symmetry breaking, log it live.

    Args:
        layers: Encoder layers to watch (0-based); None watches all of them.
        sites: What to capture per layer: ``attn.heads`` (per-head attention outputs, ``[N, H, d]``)
            and/or ``output`` (the layer's hidden-state output, one head of D nodes).
        every_n_epochs: Analyse after every n-th training epoch (the reference always runs).
        reference: Analyse the untrained state before the first training step (logged as epoch -1).
        probe: The probe set (sizes, batch size, seed, MLM labels, position rule).
        analysis: The analysis settings (lightning_ssb.analysis.AnalysisConfig), passed on unchanged.
        figures: Log heatmaps, matrices, envelopes and crossover curves as images.
        table: Log the per-node and crossover tables.
        background: Run the analysis on a worker thread so that training does not wait for it.
        strict: Raise analysis errors in training, and a sink's failure at the end of fit; False warns.
        sinks: Where results go: ``auto`` (W&B when the trainer has a WandbLogger, the disk, and
            every other Lightning logger), or a list of ``wandb``, ``disk``, ``logger``.
        dirpath: Folder of the disk results; None: ``<trainer.log_dir>/ssb``, plus ``/<logger version>``
            (the W&B run id) when the logger's folder is shared by runs.
        prefix: First segment of every logged key.
        analyses: Custom analyses (``NodalAnalysis`` subclasses) run on every analysed epoch.
        report: At the end of fit, write the HTML report of the run's disk results
            (``python -m lightning_ssb report``), print its path and log it to W&B as an HTML panel.
    """

    def __init__(self, layers: list[int] | None = None, sites: list[str] = ["attn.heads"],  # noqa: B006
                 every_n_epochs: int = 1, reference: bool = True, probe: ProbeConfig = ProbeConfig(),  # noqa: B008
                 analysis: AnalysisConfig = AnalysisConfig(), figures: bool = True, table: bool = True,  # noqa: B008
                 background: bool = True, strict: bool = True, sinks: list[str] = ["auto"],  # noqa: B006
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
        self.layers, self.sites, self.every_n_epochs, self.reference = layers, list(sites), every_n_epochs, reference
        self.probe_config, self.analysis = probe, analysis  # validated by their own __post_init__, once
        self.make_figures, self.make_table, self.background, self.strict = figures, table, background, strict
        self.sink_names, self.dirpath, self.prefix, self.analyses = list(sinks), dirpath, prefix, list(analyses or [])
        self.report, self.report_path = report, None

        self.probe: ProbeSet | None = None
        self.sinks: list[Sink] = []
        self.failed: dict[Sink, str] = {}  # sink -> what went wrong; that sink is left out from then on
        self.history: list[dict] = []  # one entry per logged epoch: epoch, step, seconds
        self.captured: list[int] = []  # epochs whose probe was captured (the same on every rank)
        self.blocking_seconds: list[float] = []  # main-thread time per analysed epoch (capture + gather)
        self.log_seconds: list[float] = []  # main-thread time handing each result to the sinks
        self._probe_state: dict | None = None
        self._unlogged: list[int] = []  # after a resume: captured before the checkpoint, never logged
        self._pending: list[Future] = []
        self._executor: ThreadPoolExecutor | None = None
        self._task: str | None = None

    def check(self, pl_module: pl.LightningModule, datamodule) -> None:
        """The arguments against the model and data (the CLI calls this before any run is created)."""
        model = getattr(pl_module, "model", None)
        if model is None or not hasattr(getattr(model, "config", None), "num_attention_heads"):
            raise ValueError("SSBMonitor needs a LightningModule whose `.model` is a Hugging Face BERT "
                             "(see docs/ARCHITECTURE.md)")
        self._task = getattr(pl_module, "task", None) or getattr(datamodule, "task", None)
        if self._task not in ("mlm", "classification"):
            raise ValueError(f"SSBMonitor: task must be 'mlm' or 'classification', got {self._task!r}")
        num_layers = len(encoder_layers(model))
        if self.layers is not None and max(self.layers) >= num_layers:
            raise ValueError(f"SSBMonitor.layers must be in 0..{num_layers - 1}, got {self.layers}")
        self.layers = list(range(num_layers)) if self.layers is None else list(self.layers)
        self.probe_config.rule_for(self._task)  # raises when the position rule does not fit the task

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.check(pl_module, trainer.datamodule)
        dm = trainer.datamodule
        missing = [a for a in ("train_dataset", "val_dataset", "collate_fn") if getattr(dm, a, None) is None]
        if missing:
            raise ValueError(f"SSBMonitor needs a data module with {missing} after setup('fit') (docs/ARCHITECTURE.md)")
        self._open_sinks(trainer)

    def _open_sinks(self, trainer: pl.Trainer) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective call under DDP: every rank, here
        if trainer.is_global_zero:
            logger = trainer.logger
            shared = logger is not None and getattr(logger, "log_dir", None) is None and logger.version is not None
            self.dirpath = self.dirpath or os.path.join(log_dir, "ssb", *([str(logger.version)] if shared else []))
            self.sinks = make_sinks(self.sink_names, trainer.loggers, self.dirpath, self.prefix)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is None:
            self.probe = self.probe_config.build(trainer.datamodule, self._task, state=self._probe_state)
        if self.reference and trainer.global_step == 0 and REFERENCE_EPOCH not in self.captured:
            self._analyse_epoch(trainer, pl_module, REFERENCE_EPOCH)
        # after a resume: epochs captured before the checkpoint was written but never logged
        for epoch in self._unlogged:
            stored = trainer.strategy.broadcast(any(s.has(epoch) for s in self.sinks), src=0)  # rank 0 decides
            if stored:
                self.history.append({"epoch": epoch, "step": trainer.global_step, "seconds": 0.0})
            elif epoch == trainer.current_epoch - 1:  # the checkpoint's weights are exactly that epoch's
                self.captured.remove(epoch)
                self._analyse_epoch(trainer, pl_module, epoch)
            elif trainer.is_global_zero:
                warnings.warn(f"SSBMonitor: epoch {epoch} was captured but its result was never stored")
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
        self._drain(wait=True)
        if self.report and trainer.is_global_zero and "disk" in {s.name for s in self.sinks if s not in self.failed}:
            self._write_report()
        self._shutdown()
        if self.failed and self.strict:  # raised after the last checkpoint and every other sink's results
            raise SinkError("SSBMonitor: " + "; ".join(self.failed.values()) + " (checkpoints and the other "
                            "sinks' results are complete)")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:  # keep what is finished; never mask the training error with ours
            self._drain(wait=True)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"SSBMonitor: analysis failed while handling a training error: {err}")
        self._shutdown()

    def state_dict(self) -> dict:
        """The probe's seed and indices, the epochs captured and those logged; reads state only."""
        probe_state = self.probe.state_dict() if self.probe is not None else self._probe_state
        return {"history": [dict(h) for h in self.history], "captured": list(self.captured), "probe": probe_state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self.captured = list(state_dict.get("captured", [h["epoch"] for h in self.history]))
        self._unlogged = [e for e in self.captured if e not in {h["epoch"] for h in self.history}]
        self._probe_state = state_dict.get("probe")
        self.probe = None  # rebuilt from the saved indices and seed at on_train_start

    def _analyse_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        start = time.perf_counter()
        self.captured.append(epoch)
        ctx = getattr(trainer.precision_plugin, "forward_context", None)
        captured = capture_probe(pl_module.model, self.probe, self.layers, self.sites, trainer.global_rank,
                                 trainer.world_size, pl_module.device, ctx)  # the HF model, never the DDP wrapper
        if captured is not None:  # rank 0
            snap = EpochSnapshot(epoch, trainer.global_step, *(captured[i] for i in (0, 2, 1, 3)),
                                 self.probe.num_classes, list(self.probe.label_names))
            self._executor = self._executor or ThreadPoolExecutor(1, thread_name_prefix="ssb-analysis")
            self._pending.append(self._executor.submit(build_result, snap, self.analysis, self.analyses,
                                                       self.make_figures, self.make_table, self.prefix))
            if not self.background:
                self._drain(wait=True)
        self.blocking_seconds.append(time.perf_counter() - start)

    def _drain(self, wait: bool) -> None:
        """Log finished results in submission order (all of them when ``wait``)."""
        while self._pending and (wait or self._pending[0].done()):
            future = self._pending.pop(0)
            try:
                result = future.result()
            except Exception as err:
                if self.strict:
                    raise
                warnings.warn(f"SSBMonitor: the analysis failed and is skipped: {err!r}")
                continue
            start = time.perf_counter()
            self._log(result)
            self.log_seconds.append(time.perf_counter() - start)

    def _log(self, result: EpochResult) -> None:
        for sink, message in write_all([s for s in self.sinks if s not in self.failed], result):
            self.failed[sink] = message
            warnings.warn(f"SSBMonitor: {message}; it is left out from now on, training and the other sinks go on")
        self.history.append({"epoch": result.epoch, "step": result.step, "seconds": result.seconds})

    def _write_report(self) -> None:
        from lightning_ssb.report.publish import publish_report

        self.report_path, failed = publish_report(self.dirpath, [s for s in self.sinks if s not in self.failed])
        self.failed.update(failed)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        close_all(self.sinks)


def _check_subset(name: str, values: list[str], allowed: tuple[str, ...]) -> None:
    if not values or any(v not in allowed for v in values):
        raise ValueError(f"SSBMonitor.{name} must be a non-empty list from {list(allowed)}, got {values}")
