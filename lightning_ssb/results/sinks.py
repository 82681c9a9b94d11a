"""Where results go: one ``Sink`` base class; only ``WandbSink`` imports wandb.

The monitor hands every result to each sink from the main thread (never from the analysis
worker: W&B and most Lightning loggers are not meant to be called from other threads):
``begin``, then ``log_scalars`` / ``log_figure`` / ``log_table`` / ``log_arrays``, then ``flush``;
at the end of fit ``log_report`` and ``log_results`` (the results folder). A sink that raises is
reported by name and ``where`` (its folder or run) and left out from then on; the other sinks and
training go on (``SinkError``). What is safe to do off the main thread and costs time there (W&B: its
images and tables) a sink may do in ``prepare``, which the analysis' worker thread calls as soon as a
result is built, beside training.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from typing import Any

import torch

from lightning_ssb.results import epochs
from lightning_ssb.results.keys import PREFIX, run_key, wandb_figure_key, wandb_key


class SinkError(RuntimeError):
    """A sink failed; the message names the sink and where it writes."""


class Sink:
    """Receives one epoch's result at a time. Every method is a no-op: a sink overrides what it stores."""

    name = "sink"

    @property
    def where(self) -> str:
        """Where this sink writes (a folder, a run): named in error messages."""
        return ""

    def begin(self, epoch: int, step: int, meta: dict | None = None) -> None:
        """Called before an epoch's result is handed over (``epoch`` -1 is the reference)."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        pass

    def log_figure(self, name: str, figure: Any, step: int) -> None:
        pass

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        pass

    def log_arrays(self, arrays: dict[str, torch.Tensor], step: int) -> None:
        pass

    def flush(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass

    def log_report(self, path: str) -> None:
        """The HTML report written at the end of fit (``lightning_ssb.report``); the disk has it already."""

    def log_results(self, dirpath: str) -> None:
        """The run's whole results folder (``ssb/<run id>/``, the report included), at the end of fit."""

    def has(self, epoch: int) -> bool:
        """Whether a complete result of ``epoch`` is stored already (used after a resume)."""
        return False

    def prepare(self, result) -> Any:
        """What of writing ``result`` is safe and worth doing off the main thread, done on the analysis'
        worker thread as soon as the result is built (W&B: its image and table objects); ``write`` finds the
        return value in ``result.prepared[self]``. Must not touch what the main thread writes through. The
        default, None, prepares nothing."""
        return None

    def write(self, result) -> None:
        """Hand over a whole ``EpochResult``."""
        self.begin(result.epoch, result.step, result.meta)
        self.log_scalars(result.scalars, result.step)
        for name, fig in result.figures.items():
            self.log_figure(name, fig, result.step)
        for name, (columns, rows) in result.tables.items():
            self.log_table(name, columns, rows, result.step)
        self.log_arrays(result.arrays, result.step)
        self.flush(result.step)


REFERENCE_EPOCH = epochs.REFERENCE
ANALYZE_EPOCH = epochs.ANALYZE
epoch_dirname = epochs.dirname


class DiskSink(Sink):
    """Writes every epoch's full result to ``<root>/<epoch dir>/`` (docs/RESULTS.md).

    ``scalars.json`` is written last, so its presence marks a complete folder. A complete folder
    is never overwritten: a second result of the same epoch goes to ``epoch_XXX-1``; an incomplete
    one (a run stopped while writing) is written over.
    """

    name = "disk"

    def __init__(self, root: str) -> None:
        self.root = root
        self._dir: str | None = None

    @property
    def where(self) -> str:
        return self._dir or self.root

    def has(self, epoch: int) -> bool:
        return os.path.isfile(os.path.join(self.root, epoch_dirname(epoch), "scalars.json"))

    def begin(self, epoch: int, step: int, meta: dict | None = None) -> None:
        base = os.path.join(self.root, epoch_dirname(epoch))
        path, n = base, 0
        while os.path.isfile(os.path.join(path, "scalars.json")):
            n += 1
            path = f"{base}-{n}"
        self._dir = path
        os.makedirs(path, exist_ok=True)
        self._scalars: dict[str, Any] = {"epoch": epoch, "step": step}
        if meta:
            with open(os.path.join(path, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1)

    @staticmethod
    def _file(name: str) -> str:
        return name.replace("/", "__")

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._scalars.update({k: (None if v != v else float(v)) for k, v in scalars.items()})  # NaN -> null

    def log_figure(self, name: str, figure: Any, step: int) -> None:
        from lightning_ssb.plots import to_png

        with open(os.path.join(self._dir, self._file(name) + ".png"), "wb") as f:
            f.write(to_png(figure))

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        with open(os.path.join(self._dir, self._file(name) + ".csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(rows)

    def log_arrays(self, arrays: dict[str, torch.Tensor], step: int) -> None:
        torch.save(arrays, os.path.join(self._dir, "arrays.pt"))

    def flush(self, step: int) -> None:
        tmp = os.path.join(self._dir, "scalars.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self._scalars, f, indent=1, sort_keys=True)
        os.replace(tmp, os.path.join(self._dir, "scalars.json"))  # complete or absent, never half written


class LoggerSink(Sink):
    """Scalars through any Lightning logger's ``log_metrics`` (CSV, TensorBoard, MLflow, ...)."""

    name = "logger"

    def __init__(self, logger) -> None:
        self.logger = logger

    @property
    def where(self) -> str:
        return f"{type(self.logger).__name__} in {getattr(self.logger, 'log_dir', None) or self.logger.save_dir}"

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.logger.log_metrics(dict(scalars), step=step)


class WandbSink(Sink):
    """Scalars, images and tables into a W&B run (the trainer's ``WandbLogger``'s, see ``for_logger``),
    laid out for the W&B workspace (docs/RESULTS.md, "W&B").

    One ``run.log`` per epoch result, under the W&B keys of ``results.keys.wandb_key`` (one workspace
    section per statistic, sites without dots), with ``trainer/global_step`` (the step the probe was
    captured at) like the WandbLogger's own metrics. Every scalar is plotted against ``ssb/epoch``: each
    new key is declared once with ``define_metric(key, step_metric="ssb/epoch")``, by name, since the
    logger's catch-all ``define_metric("*", step_metric="trainer/global_step")`` would compete with a
    second glob. At the end of fit the results folder becomes the artifact ``ssb-results-<run id>``.
    """

    name = "wandb"

    def __init__(self, run, prefix: str = PREFIX) -> None:
        self.run = run
        self.prefix = prefix
        self._pending: dict[str, Any] = {}
        self._media: _Media | None = None  # the images and tables of the result being written
        self._defined: set[str] = set()  # keys declared against the epoch axis in this process

    @property
    def where(self) -> str:
        return f"run {getattr(self.run, 'id', '?')} in {getattr(self.run, 'dir', '?')}"

    @staticmethod
    def for_logger(logger, prefix: str = PREFIX) -> WandbSink | None:
        """A sink into ``logger``'s run when it is a Lightning ``WandbLogger``, else None."""
        from lightning.pytorch.loggers import WandbLogger

        return WandbSink(logger.experiment, prefix) if isinstance(logger, WandbLogger) else None

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._pending.update({wandb_key(k, self.prefix): v for k, v in scalars.items()})

    def prepare(self, result) -> _Media:
        """The result's images and tables as W&B objects, made on the analysis' worker thread: building them
        (type checks of every table cell, reading the PNGs) took about a second per state on training's thread."""
        media = _Media()
        for name, figure in result.figures.items():
            media.add_figure(wandb_figure_key(name, self.prefix), figure)
        for name, (columns, rows) in result.tables.items():
            media.add_table(f"{self.prefix}/{name}", columns, rows)
        return media

    def write(self, result) -> None:
        media = result.prepared.get(self) or self.prepare(result)  # not prepared (a failed prepare): made here
        self.log_scalars(result.scalars, result.step)
        self._pending.update(media.objects)
        self._media = media
        self.flush(result.step)

    def log_figure(self, name: str, figure: Any, step: int) -> None:
        self._media = self._media or _Media()
        self._pending.update(self._media.add_figure(wandb_figure_key(name, self.prefix), figure))

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        self._media = self._media or _Media()
        self._pending.update(self._media.add_table(f"{self.prefix}/{name}", columns, rows))

    def flush(self, step: int) -> None:
        pending, self._pending = self._pending, {}
        media, self._media = self._media, None
        try:
            self._log(pending, step)
        finally:
            if media is not None:
                media.cleanup()  # run.log has copied the images into the run

    def _log(self, pending: dict[str, Any], step: int) -> None:
        if pending:
            epoch = run_key("epoch", self.prefix)
            for key, value in pending.items():
                if key != epoch and key not in self._defined and isinstance(value, (int, float)):
                    self.run.define_metric(key, step_metric=epoch)
                    self._defined.add(key)
            self.run.log({**pending, "trainer/global_step": step})

    def log_report(self, path: str) -> None:
        import wandb

        with open(path, encoding="utf-8") as f:  # an HTML panel of the run, figures embedded
            self.run.log({f"{self.prefix}/report": wandb.Html(f.read(), inject=False)})

    def log_results(self, dirpath: str) -> None:
        """The folder as the artifact ``<prefix>-results-<run id>`` (type ``<prefix>-results``); a resumed
        run logs a new version of it. Offline, it is staged with the run and uploaded by ``wandb sync``."""
        import wandb

        states = sorted(d for d in os.listdir(dirpath) if epochs.parse_dirname(d) is not None)
        artifact = wandb.Artifact(f"{self.prefix}-results-{getattr(self.run, 'id', 'run')}",
                                  type=f"{self.prefix}-results",
                                  description="lightning_ssb SSBMonitor results folder (docs/RESULTS.md)",
                                  metadata={"states": states, "folder": os.path.abspath(dirpath)})
        artifact.add_dir(dirpath)
        self.run.log_artifact(artifact)


class _Media:
    """W&B images and tables of one result, ``objects`` by W&B key. An image is made from its PNG written to a
    file (W&B copies the file into the run) instead of from a decoded picture, which W&B encoded as a PNG
    again; ``cleanup`` removes the files once the result is logged."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self._folder: Any = None

    def add_figure(self, key: str, figure: Any) -> dict[str, Any]:
        import tempfile

        import wandb

        from lightning_ssb.plots import to_png

        if self._folder is None:  # removed by cleanup, or when this object is collected
            self._folder = tempfile.TemporaryDirectory(prefix="lightning_ssb-wandb-")
        path = os.path.join(self._folder.name, f"{len(self.objects)}.png")
        with open(path, "wb") as f:
            f.write(to_png(figure))
        self.objects[key] = wandb.Image(path)
        return {key: self.objects[key]}

    def add_table(self, key: str, columns: list[str], rows: list[list]) -> dict[str, Any]:
        import wandb

        self.objects[key] = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        return {key: self.objects[key]}

    def cleanup(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def prepare_all(sinks: list[Sink], result) -> None:
    """``Sink.prepare`` of every sink into ``result.prepared`` (the analysis' worker thread). A sink whose
    prepare raises gets nothing there: its ``write`` then does it all on the main thread, where a failure is
    reported as any other."""
    for sink in sinks:
        try:
            prepared = sink.prepare(result)
        except Exception:  # noqa: BLE001 - reported by the write that follows, if it fails again
            continue
        if prepared is not None:
            result.prepared[sink] = prepared


def make_sinks(names: list[str], loggers: list, dirpath: str, prefix: str = PREFIX) -> list[Sink]:
    """The sinks named by the monitor's ``sinks`` option for these Lightning loggers.

    ``auto``: W&B for a WandbLogger, the disk, and every other logger; or any of ``wandb``, ``disk``,
    ``logger``.
    """
    chosen = set(names)
    auto = "auto" in chosen
    sinks: list[Sink] = []
    for logger in loggers:
        wandb_sink = WandbSink.for_logger(logger, prefix)
        if wandb_sink is not None:
            if auto or "wandb" in chosen:
                sinks.append(wandb_sink)
        elif auto or "logger" in chosen:
            sinks.append(LoggerSink(logger))
    if "wandb" in chosen and not any(isinstance(s, WandbSink) for s in sinks):
        raise ValueError("SSBMonitor.sinks has 'wandb' but the trainer has no WandbLogger")
    if auto or "disk" in chosen:
        sinks.append(DiskSink(dirpath))
    return sinks


def write_all(sinks: list[Sink], result) -> list[tuple[Sink, str]]:
    """Hand ``result`` to every sink; one sink's failure never stops the others.

    Returns ``(sink, message)`` per failed sink: ``the <name> sink could not write <where>: <error>``.
    """
    failed = []
    for sink in sinks:
        try:
            sink.write(result)
        except Exception as err:  # noqa: BLE001 - disk full, permissions, W&B down: reported, not raised
            failed.append((sink, f"the {sink.name} sink could not write {sink.where}: {type(err).__name__}: {err}"))
    return failed


def log_results_all(sinks: list[Sink], dirpath: str) -> list[tuple[Sink, str]]:
    """Hand the results folder to every sink (W&B: an artifact); ``(sink, message)`` per failed sink."""
    failed = []
    for sink in sinks:
        try:
            sink.log_results(dirpath)
        except Exception as err:  # noqa: BLE001 - an upload that fails costs neither checkpoints nor disk results
            failed.append((sink, f"the {sink.name} sink could not log the results folder {dirpath}: "
                                 f"{type(err).__name__}: {err}"))
    return failed


def close_all(sinks: list[Sink]) -> None:
    for sink in sinks:
        try:
            sink.close()
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"closing the {sink.name} sink ({sink.where}) failed: {err}", stacklevel=2)
