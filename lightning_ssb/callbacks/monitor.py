"""``SSBMonitor``: the nodal symmetry-breaking analysis of METHOD.md, live while BERT trains.

Timeline of one run:

- ``setup("fit")``: the arguments are checked against the model and the data module.
- ``on_train_start``: the probe set is built (or rebuilt from the checkpoint state after a resume)
  and the *reference* is analysed: the symmetric state before the first training step. It is
  logged as epoch -1 (``{prefix}/epoch`` = -1, disk folder ``reference/``).
- ``on_train_epoch_end`` of every ``every_n_epochs``-th epoch: the probe is captured again
  (the main thread waits only for this eval pass) and the analysis runs, by default on a
  background worker thread while training goes on.
- Results are handed to the sinks from the main thread, as soon as they are ready (checked at
  every training batch and when a checkpoint is saved), and at the latest at the end of fit.
- Checkpoints hold the probe's seed and indices and the epochs already logged; a resumed run
  rebuilds the same probe set and analyses the checkpoint's epoch if its result was not logged
  yet (the weights are exactly that epoch's), then continues.

Under DDP every rank captures its share of the probe batches (every ``world_size``-th batch;
shares may be uneven), rank 0 gathers them back into the single-process order, analyses and
logs; the other ranks go on training at once.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from lightning_ssb.callbacks import figures
from lightning_ssb.callbacks.capture import SITES, capture_batches, encoder_layers, snapshot_names
from lightning_ssb.callbacks.custom import EpochSnapshot, NodalAnalysis
from lightning_ssb.callbacks.probe import ProbeSet, build_probe_set
from lightning_ssb.callbacks.sinks import BaseSink, DiskSink, LoggerSink, WandbSink

GRANULARITIES = ("node", "head")
REFERENCE_EPOCH = -1


@dataclass
class EpochResult:
    """Everything one analysed epoch logs; built off the main thread, logged on it."""

    epoch: int
    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0


class SSBMonitor(Callback):
    """Capture every head/node on a fixed probe set, analyse symmetry breaking, log it live.

    Args:
        layers: Encoder layers to watch (0-based); None watches all of them.
        sites: What to capture per layer: ``attn.heads`` (per-head attention outputs, ``[N, H, d]``)
            and/or ``output`` (the layer's hidden-state output, one head of D nodes).
        granularities: Units to analyse: ``node`` and/or ``head``.
        every_n_epochs: Analyse after every n-th training epoch (the reference always runs).
        reference: Analyse the untrained state before the first training step (logged as epoch -1).
        probe_train_size: Training examples the read-out is fitted on (sequences for MLM; None: all).
        probe_test_size: Held-out examples the read-out is scored on, from the validation split
            (the FewRel test split; None: all of it).
        probe_batch_size: Batch size of the probe's eval passes.
        seed: Seed of the probe subsets and of the MLM probe masks (kept in the checkpoint).
        top_k_tokens: MLM only: labels are the K tokens most often masked in probe-train, or ``all``.
        position_rule: Which position of a sequence is its example: ``auto`` (``masked`` for MLM,
            ``cls`` for classification), ``cls``, ``head_entity`` or ``masked``.
        theta: Recall a label needs to count as learned by a unit (METHOD.md section 4).
        tau: Threshold of the normalised field matrix for the cluster statistics.
        ablation: How silenced nodes are removed: ``zero`` or ``mean`` (the probe-train mean).
        crossover_sizes: Node-subset sizes m of the crossover curve; None: 1, 2, 4, ... up to D.
            An empty list skips the crossover.
        crossover_draws: Random subsets drawn per size m.
        figures: Log heatmaps, matrices, envelopes and crossover curves as images.
        table: Log the per-node table (layer, head, node, accuracy, labels, hull labels, bound).
        background: Run the analysis on a worker thread so that training does not wait for it.
        strict: Raise analysis errors in the training process; False turns them into warnings.
        sinks: Where results go: ``auto`` (W&B when the trainer has a WandbLogger, the disk, and
            every other Lightning logger), or a list of ``wandb``, ``disk``, ``logger``.
        dirpath: Folder of the disk sink; None: ``<trainer.log_dir>/ssb`` (``.../ssb/<W&B run id>``
            with a WandbLogger, whose save_dir is shared by runs).
        prefix: Prefix of every logged key.
        analyses: Custom analyses (``NodalAnalysis`` subclasses) run on every analysed epoch.
    """

    def __init__(
        self,
        layers: list[int] | None = None,
        sites: list[str] = ["attn.heads"],  # noqa: B006 - a list literal reads better in --help
        granularities: list[str] = ["node", "head"],  # noqa: B006
        every_n_epochs: int = 1,
        reference: bool = True,
        probe_train_size: int | None = 4096,
        probe_test_size: int | None = 1024,
        probe_batch_size: int = 64,
        seed: int = 0,
        top_k_tokens: int | Literal["all"] = 100,
        position_rule: Literal["auto", "cls", "head_entity", "masked"] = "auto",
        theta: float = 0.5,
        tau: float = 0.3,
        ablation: Literal["zero", "mean"] = "zero",
        crossover_sizes: list[int] | None = None,
        crossover_draws: int = 5,
        figures: bool = True,
        table: bool = True,
        background: bool = True,
        strict: bool = True,
        sinks: list[str] = ["auto"],  # noqa: B006
        dirpath: str | None = None,
        prefix: str = "ssb",
        analyses: list[NodalAnalysis] | None = None,
    ) -> None:
        super().__init__()
        self.layers = None if layers is None else list(layers)
        self.sites = list(sites)
        self.granularities = list(granularities)
        self.every_n_epochs = every_n_epochs
        self.reference = reference
        self.probe_train_size = probe_train_size
        self.probe_test_size = probe_test_size
        self.probe_batch_size = probe_batch_size
        self.seed = seed
        self.top_k_tokens = top_k_tokens
        self.position_rule = position_rule
        self.theta = theta
        self.tau = tau
        self.ablation = ablation
        self.crossover_sizes = None if crossover_sizes is None else list(crossover_sizes)
        self.crossover_draws = crossover_draws
        self.make_figures = figures
        self.make_table = table
        self.background = background
        self.strict = strict
        self.sink_names = list(sinks)
        self.dirpath = dirpath
        self.prefix = prefix
        self.analyses = list(analyses or [])

        self.probe: ProbeSet | None = None
        self.sinks: list[BaseSink] = []
        self.history: list[dict] = []  # one entry per logged epoch: epoch, step, seconds
        self.blocking_seconds: list[float] = []  # main-thread time per analysed epoch (capture + gather)
        self.log_seconds: list[float] = []  # main-thread time handing each result to the sinks
        self._captured: list[int] = []  # epochs whose probe was captured (same on every rank)
        self._probe_state: dict | None = None
        self._pending: list[Future] = []
        self._executor: ThreadPoolExecutor | None = None
        self._task: str | None = None
        self._rule: str | None = None

    # ------------------------------------------------------------------ setup and validation
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        model = getattr(pl_module, "model", None)
        if model is None or not hasattr(getattr(model, "config", None), "num_attention_heads"):
            raise ValueError("SSBMonitor needs a LightningModule whose `.model` is a Hugging Face BERT "
                             "(see docs/ARCHITECTURE.md)")
        num_layers = len(encoder_layers(model))
        self._task = getattr(pl_module, "task", None) or getattr(trainer.datamodule, "task", None)
        if self._task not in ("mlm", "classification"):
            raise ValueError(f"SSBMonitor: task must be 'mlm' or 'classification', got {self._task!r}")
        self.layers = list(range(num_layers)) if self.layers is None else self.layers
        bad = [l for l in self.layers if not 0 <= l < num_layers]
        if bad or not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"SSBMonitor.layers must be distinct layers in 0..{num_layers - 1}, got {self.layers}")
        _check_subset("sites", self.sites, SITES)
        _check_subset("granularities", self.granularities, GRANULARITIES)
        _check_subset("sinks", self.sink_names, ("auto", "wandb", "disk", "logger"))
        for name in ("every_n_epochs", "probe_batch_size", "crossover_draws"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SSBMonitor.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("probe_train_size", "probe_test_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 2):
                raise ValueError(f"SSBMonitor.{name} must be None or an integer >= 2, got {value!r}")
        if not (self.top_k_tokens == "all" or (isinstance(self.top_k_tokens, int) and self.top_k_tokens >= 2)):
            raise ValueError(f"SSBMonitor.top_k_tokens must be an integer >= 2 or 'all', got {self.top_k_tokens!r}")
        for name in ("theta", "tau"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"SSBMonitor.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.ablation not in ("zero", "mean"):
            raise ValueError(f"SSBMonitor.ablation must be 'zero' or 'mean', got {self.ablation!r}")
        if self.crossover_sizes is not None and any((not isinstance(m, int)) or m < 1 for m in self.crossover_sizes):
            raise ValueError(f"SSBMonitor.crossover_sizes must be positive integers, got {self.crossover_sizes}")
        rule = self.position_rule
        if rule == "auto":
            rule = "masked" if self._task == "mlm" else "cls"
        if (self._task == "mlm") != (rule == "masked"):
            raise ValueError(f"SSBMonitor.position_rule {rule!r} does not fit task {self._task!r}: "
                             "use 'masked' for MLM, 'cls' or 'head_entity' for classification")
        self._rule = rule
        for analysis in self.analyses:
            if not isinstance(analysis, NodalAnalysis):
                raise TypeError(f"SSBMonitor.analyses must be NodalAnalysis instances, got {type(analysis).__name__}")
        dm = trainer.datamodule
        missing = [a for a in ("train_dataset", "val_dataset", "collate_fn") if getattr(dm, a, None) is None]
        if missing:
            raise ValueError(f"SSBMonitor needs a data module with {missing} after setup('fit') "
                             "(see docs/ARCHITECTURE.md)")
        # trainer.log_dir is a collective call under DDP: every rank asks, here, at the same time
        log_dir = trainer.log_dir or trainer.default_root_dir
        if trainer.is_global_zero:
            if self.dirpath is None:
                self.dirpath = os.path.join(log_dir, "ssb", *_run_id(trainer))
            self.sinks = self._make_sinks(trainer)

    def _make_sinks(self, trainer: pl.Trainer) -> list[BaseSink]:
        from lightning.pytorch.loggers import WandbLogger

        names = set(self.sink_names)
        auto = "auto" in names
        sinks: list[BaseSink] = []
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                if auto or "wandb" in names:
                    sinks.append(WandbSink.from_logger(logger))
            elif auto or "logger" in names:
                sinks.append(LoggerSink(logger))
        if "wandb" in names and not any(isinstance(s, WandbSink) for s in sinks):
            raise ValueError("SSBMonitor.sinks has 'wandb' but the trainer has no WandbLogger")
        if auto or "disk" in names:
            sinks.append(DiskSink(self.dirpath))
        return sinks

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is None:
            self.probe = build_probe_set(
                trainer.datamodule, task=self._task, position_rule=self._rule,
                train_size=self.probe_train_size, test_size=self.probe_test_size, seed=self.seed,
                batch_size=self.probe_batch_size, top_k=self.top_k_tokens, state=self._probe_state)
            _check_probe(self.probe)
        if self.reference and REFERENCE_EPOCH not in self._captured:
            if trainer.global_step == 0:
                self._analyse_epoch(trainer, pl_module, REFERENCE_EPOCH)
            else:
                warnings.warn("SSBMonitor: resumed from a checkpoint saved before the reference analysis was "
                              "logged; the reference cannot be redone on trained weights and is missing")
        # After a resume the weights are those at the end of the checkpoint's epoch; if that epoch's
        # result had not been logged when the checkpoint was written, analyse it now (same weights).
        last = trainer.current_epoch - 1
        if last >= 0 and self._due(last) and last not in self._captured:
            self._analyse_epoch(trainer, pl_module, last)

    def _due(self, epoch: int) -> bool:
        return (epoch + 1) % self.every_n_epochs == 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._pending and self._pending[0].done():
            self._drain(wait=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._due(epoch) and epoch not in self._captured:
            self._analyse_epoch(trainer, pl_module, epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._drain(wait=True)
        self._shutdown()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:  # keep what is finished; never mask the training error with ours
            self._drain(wait=True)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"SSBMonitor: analysis failed while handling a training error: {err}")
        self._shutdown()

    def state_dict(self) -> dict:
        """The probe's seed and indices, and the epochs whose results are logged (``history``).

        A checkpoint never waits for a running analysis: what is finished is logged first, an
        epoch still being analysed is left out and analysed again after a resume from it.
        """
        self._drain(wait=False)
        probe_state = self.probe.state_dict() if self.probe is not None else self._probe_state
        return {"history": [dict(h) for h in self.history], "probe": probe_state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [dict(h) for h in state_dict.get("history", [])]
        self._captured = [h["epoch"] for h in self.history]
        self._probe_state = state_dict.get("probe")
        self.probe = None  # rebuilt from the saved indices and seed at on_train_start

    # ------------------------------------------------------------------ capture, analysis, logging
    def _analyse_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        start = time.perf_counter()
        self._captured.append(epoch)
        step = trainer.global_step
        autocast = getattr(trainer.precision_plugin, "forward_context", None)
        device = pl_module.device
        model = pl_module.model  # the HF model, never the DDP wrapper: no gradient sync hooks
        train = self._capture_share(model, self.probe.train_batches, trainer, device, autocast)
        test = self._capture_share(model, self.probe.test_batches, trainer, device, autocast)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            train, test = _gather_to_zero((train, test), trainer.global_rank, trainer.world_size)
        if trainer.is_global_zero:
            snapshot = self._snapshot(train, test, epoch, step)
            if self.background:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ssb-analysis")
                self._pending.append(self._executor.submit(self._analyse, snapshot))
            else:
                future: Future = Future()
                try:
                    future.set_result(self._analyse(snapshot))
                except Exception as err:  # noqa: BLE001 - reported in _drain like a worker error
                    future.set_exception(err)
                self._pending.append(future)
                self._drain(wait=True)
        self.blocking_seconds.append(time.perf_counter() - start)

    def _capture_share(self, model, batches, trainer, device, autocast) -> list[tuple[int, dict, torch.Tensor]]:
        """This rank's share of ``batches``: ``[(batch index, {name: [n, H, d]}, labels [n])]``."""
        rank, world = trainer.global_rank, trainer.world_size
        share = []
        for index in range(rank, len(batches), world):
            tensors, y = capture_batches(model, [batches[index]], self.layers, self.sites, device, autocast)
            share.append((index, tensors, y))
        return share

    def _snapshot(self, train_chunks, test_chunks, epoch: int, step: int) -> EpochSnapshot:
        names = snapshot_names(self.layers, self.sites)

        def join(chunks):
            chunks = sorted(chunks, key=lambda c: c[0])  # single-process order, whatever the world size
            return {n: torch.cat([c[1][n] for c in chunks]) for n in names}, torch.cat([c[2] for c in chunks])

        x_train, y_train = join(train_chunks)
        x_test, y_test = join(test_chunks)
        return EpochSnapshot(epoch=epoch, step=step, train=x_train, test=x_test, y_train=y_train, y_test=y_test,
                             num_classes=self.probe.num_classes, label_names=list(self.probe.label_names))

    def _analysis_config(self):
        from lightning_ssb.analysis import AnalysisConfig

        fields = {f.name for f in dataclasses.fields(AnalysisConfig)}
        wanted = {"theta": self.theta, "tau": self.tau, "ablation": self.ablation,
                  "crossover_sizes": self.crossover_sizes, "crossover_draws": self.crossover_draws,
                  "granularities": tuple(self.granularities), "seed": self.seed}
        return AnalysisConfig(**{k: v for k, v in wanted.items() if k in fields})

    def _analyse(self, snap: EpochSnapshot) -> EpochResult:
        """The built-in analysis of every site, then the custom ones (runs on the worker thread)."""
        from lightning_ssb.analysis import analyze_site

        start = time.perf_counter()
        config = self._analysis_config()
        result = EpochResult(epoch=snap.epoch, step=snap.step)
        p = self.prefix
        result.scalars[f"{p}/epoch"] = float(snap.epoch)
        for name in snap.train:
            site = analyze_site(snap.train[name], snap.y_train, snap.test[name], snap.y_test,
                                snap.num_classes, config)
            snap.results[name] = site
            result.scalars.update({f"{p}/{name}/{k}": float(v) for k, v in site.scalars().items()})
            for key, value in _tensor_fields(site).items():
                result.arrays[f"{name}/{key}"] = value
        from lightning_ssb.callbacks import report

        if self.make_figures:
            result.figures.update(report.site_figures(snap, p, self.granularities))
        if self.make_table:
            result.tables[f"{p}/nodes"] = report.node_table(snap)
            if any(site.crossover for site in snap.results.values()):
                result.tables[f"{p}/crossover"] = report.crossover_table(snap)
        for analysis in self.analyses:
            for key, value in (analysis.analyze(snap) or {}).items():
                if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.numel() == 1):
                    result.scalars[f"{p}/{analysis.name}/{key}"] = float(value)
                else:
                    result.figures[f"{p}/{analysis.name}/{key}"] = value
        for fig in result.figures.values():
            figures.to_png(fig)  # render here, off the main thread; sinks reuse the bytes
        result.seconds = time.perf_counter() - start
        result.scalars[f"{p}/analysis_seconds"] = result.seconds
        return result

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
        for sink in self.sinks:
            sink.begin(result.epoch, result.step)
            sink.log_scalars(result.scalars, result.step)
            for name, fig in result.figures.items():
                sink.log_figure(name, fig, result.step)
            for name, (columns, rows) in result.tables.items():
                sink.log_table(name, columns, rows, result.step)
            sink.log_arrays(result.arrays, result.step)
            sink.flush(result.step)
        self.history.append({"epoch": result.epoch, "step": result.step, "seconds": result.seconds})

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        for sink in self.sinks:
            sink.close()


def _run_id(trainer: pl.Trainer) -> list[str]:
    """The W&B run id when the first logger is W&B (its save_dir is shared by runs), else nothing."""
    from lightning.pytorch.loggers import WandbLogger

    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return [str(logger.experiment.id)]
    return []


def _check_subset(name: str, values: list[str], allowed: tuple[str, ...]) -> None:
    if not values or any(v not in allowed for v in values):
        raise ValueError(f"SSBMonitor.{name} must be a non-empty list from {list(allowed)}, got {values}")


def _check_probe(probe: ProbeSet) -> None:
    n_train, n_test = sum(b.num_examples for b in probe.train_batches), sum(b.num_examples for b in probe.test_batches)
    if n_train < 2 or n_test < 1:
        raise ValueError(f"SSBMonitor: the probe set has {n_train} train / {n_test} test examples; "
                         "increase probe_train_size / probe_test_size")


def _tensor_fields(obj) -> dict[str, torch.Tensor]:
    """The tensor attributes of a result dataclass (what the disk sink stores in arrays.pt)."""
    if dataclasses.is_dataclass(obj):
        items = ((f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj))
    else:
        items = vars(obj).items()
    return {k: v for k, v in items if isinstance(v, torch.Tensor)}


def _gather_to_zero(obj, rank: int, world: int):
    """Rank 0 receives every rank's ``(train chunks, test chunks)`` and merges them; others get theirs back."""
    gathered = [None] * world if rank == 0 else None
    torch.distributed.gather_object(obj, gathered, dst=0)
    if rank != 0:
        return obj
    return [c for part in gathered for c in part[0]], [c for part in gathered for c in part[1]]
