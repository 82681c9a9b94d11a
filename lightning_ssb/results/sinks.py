"""Where analysis results go: one small protocol, so nothing but ``WandbSink`` imports wandb.

The monitor hands every result to each sink from the main thread (never from the analysis
worker: W&B and most Lightning loggers are not meant to be called from other threads) and
calls ``flush(step)`` once the whole result of an epoch has been handed over.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Protocol, runtime_checkable

import torch

from lightning_ssb.callbacks.figures import to_png


@runtime_checkable
class Sink(Protocol):
    """Receives one epoch's result at a time: scalars, figures, tables, arrays, then ``flush``."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None: ...

    def log_figure(self, name: str, figure: Any, step: int) -> None: ...

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None: ...

    def close(self) -> None: ...


class BaseSink:
    """No-op defaults: a sink overrides only what it stores."""

    def begin(self, epoch: int, step: int) -> None:
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


def epoch_dirname(epoch: int) -> str:
    """``reference`` for the analysis before training (epoch -1), else ``epoch_{e:03d}``."""
    return "reference" if epoch < 0 else f"epoch_{epoch:03d}"


class DiskSink(BaseSink):
    """Writes every epoch's full result to ``<root>/<epoch dir>/``; never overwrites an earlier one.

    Layout: ``scalars.json``, ``arrays.pt`` (a dict of tensors), ``<table>.csv``,
    ``<figure>.png`` (``/`` in names becomes ``__``). A directory that exists already (a
    re-run of an epoch) gets a ``-1``, ``-2``... suffix instead.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._dir: str | None = None

    def begin(self, epoch: int, step: int) -> None:
        base = os.path.join(self.root, epoch_dirname(epoch))
        path, n = base, 0
        while os.path.exists(path):
            n += 1
            path = f"{base}-{n}"
        os.makedirs(path)
        self._dir = path
        self._scalars: dict[str, float] = {"epoch": epoch, "step": step}

    @staticmethod
    def _file(name: str) -> str:
        return name.replace("/", "__")

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._scalars.update({k: (None if v != v else float(v)) for k, v in scalars.items()})  # NaN -> null

    def log_figure(self, name: str, figure: Any, step: int) -> None:
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
        with open(os.path.join(self._dir, "scalars.json"), "w") as f:
            json.dump(self._scalars, f, indent=1, sort_keys=True)


class LoggerSink(BaseSink):
    """Scalars through any Lightning logger's ``log_metrics`` (CSV, TensorBoard, MLflow, ...)."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.logger.log_metrics(dict(scalars), step=step)


class WandbSink(BaseSink):
    """Scalars, images and tables into the W&B run of the trainer's ``WandbLogger``.

    One ``run.log`` per epoch result, with ``trainer/global_step`` (the step the probe was
    captured at) like the WandbLogger's own metrics, so both share the x axis.
    """

    def __init__(self, run) -> None:
        self.run = run
        self._pending: dict[str, Any] = {}

    @classmethod
    def from_logger(cls, logger) -> "WandbSink":
        return cls(logger.experiment)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self._pending.update(scalars)

    def log_figure(self, name: str, figure: Any, step: int) -> None:
        import io

        import wandb
        from PIL import Image

        self._pending[name] = wandb.Image(Image.open(io.BytesIO(to_png(figure))))

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        import wandb

        self._pending[name] = wandb.Table(columns=list(columns), data=[list(r) for r in rows])

    def flush(self, step: int) -> None:
        if self._pending:
            self.run.log({**self._pending, "trainer/global_step": step})
        self._pending = {}
