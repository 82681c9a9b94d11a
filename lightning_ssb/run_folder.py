"""One run per run folder (``trainer.default_root_dir``), recorded in ``run.json``.

A fit writes ``<folder>/run.json``: the run id (the W&B run id when the logger is W&B), its status
(``running``, ``finished``, ``interrupted``, ``failed``), what produced it (``provenance``: the versions
of lightning_ssb, torch, transformers, lightning and wandb, and the git commit), the configs it wrote and its
checkpoints (every checkpoint also names its run under ``checkpoint["lightning_ssb_run"]``). So a folder never holds
two runs' files, and a later stage that names ``<folder>/checkpoints/last.ckpt`` reads the run it names:

- a new fit into a folder that holds a run is refused, unless ``--if_exists overwrite`` (the old
  run's record, configs, checkpoints and results are removed first) or ``--if_exists version``
  (this run goes to the first free sibling ``<folder>-v1``, ``-v2``, ...);
- ``fit --ckpt_path last`` continues the folder's run: same run id, same results folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from lightning_ssb.provenance import provenance

RECORD = "run.json"
CHECKPOINT_KEY = "lightning_ssb_run"
IF_EXISTS = ("refuse", "overwrite", "version")


def read_record(folder: str | Path) -> dict | None:
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable run record ({err})") from None


def write_record(folder: str | Path, record: dict) -> None:
    path = Path(folder) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def held_run(folder: str | Path, checkpoint_dirs: list[str]) -> str | None:
    """What in ``folder`` belongs to an earlier run (its record, or a last.ckpt), or None."""
    record = read_record(folder)
    if record is not None:
        return f"run {record.get('run_id')} ({record.get('status')})"
    for d in checkpoint_dirs:
        found = sorted(Path(d).glob("last*.ckpt"))
        if found:
            return f"checkpoint {found[0]}"
    return None


def free_sibling(folder: str) -> str:
    """``<folder>-v1``, ``-v2``, ...: the first that holds no run."""
    n = 1
    while os.path.exists(f"{folder}-v{n}"):
        n += 1
    return f"{folder}-v{n}"


def rebase(value, old: str, new: str):
    """Every string in a nested config (dicts and jsonargparse Namespaces changed in place, lists copied)
    that is the path ``old`` or a path under it, moved to ``new``; paths compare normalised (``./runs/x``
    is ``runs/x``), every other value is left as it is. Returns ``value``. The one path mover of the run
    folder's rules and of the ``seeds`` command."""
    old = os.path.normpath(old)
    if isinstance(value, str):
        p = os.path.normpath(value) if value else value
        if p == old:
            return new
        if value and p.startswith(old.rstrip(os.sep) + os.sep):
            return os.path.join(new, os.path.relpath(p, old))
        return value
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    if hasattr(value, "items"):  # dict or jsonargparse Namespace
        for k, v in list(value.items()):
            value[k] = rebase(v, old, new)
    return value


def clear_run(folder: str | Path, checkpoint_dirs: list[str]) -> None:
    """Remove what an earlier run left in ``folder``: record, configs, checkpoints, monitor results."""
    folder = Path(folder)
    for d in checkpoint_dirs:
        for ckpt in Path(d).glob("*.ckpt"):
            ckpt.unlink()
    for name in (RECORD, "ssb"):
        p = folder / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for cfg in folder.glob("config*.yaml"):
        cfg.unlink()


def find_last(checkpoint_dirs: list[str]) -> str:
    """``last.ckpt`` of the run's checkpoint folder; a one-line error when there is none."""
    for d in checkpoint_dirs:
        path = Path(d) / "last.ckpt"
        if path.is_file():
            return str(path)
    where = " or ".join(checkpoint_dirs) or "the run folder"
    raise FileNotFoundError(f"ckpt_path last: no last.ckpt in {where}: nothing to resume "
                            "(leave out --ckpt_path to start a new run)")


class RunRecord(Callback):
    """Keeps ``<folder>/run.json`` up to date during fit (and ``analyze``) and names the run in every checkpoint.

    Args:
        folder: the run folder.
        resumed_from: the checkpoint this fit resumes from, if any.
    """

    def __init__(self, folder: str, resumed_from: str | None = None) -> None:
        self.folder, self.resumed_from = folder, resumed_from
        self.record: dict = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "analyze") or not trainer.is_global_zero:
            return
        previous = read_record(self.folder) or {}
        run_id = getattr(trainer.logger, "version", None) if trainer.logger is not None else None
        run_id = str(run_id) if run_id is not None else previous.get("run_id") or uuid.uuid4().hex[:8]
        self.record = {**previous, "run_id": run_id, "status": "running", "folder": str(self.folder),
                       "started": previous.get("started") or _now(), "updated": _now(),
                       "provenance": previous.get("provenance") or provenance()}
        if self.resumed_from:  # a resume may run other code or libraries: each one records its own
            self.record["resumed"] = [*previous.get("resumed", []),
                                      {"from": self.resumed_from, "at": _now(), "provenance": provenance()}]
        write_record(self.folder, self.record)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"run_id": self.record.get("run_id"), "folder": str(self.folder)}

    def note(self, **fields) -> None:
        """Add fields (e.g. the config file written) to the record (rank 0, after setup)."""
        if self.record:
            self.record.update(fields)
            write_record(self.folder, self.record)

    def _status(self, trainer: pl.Trainer, status: str) -> None:
        if self.record and trainer.is_global_zero:
            self.note(status=status, updated=_now(), epoch=trainer.current_epoch, global_step=trainer.global_step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._status(trainer, "finished")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, (KeyboardInterrupt, SystemExit))  # Ctrl-C; SIGTERM is a SystemExit
        self._status(trainer, "interrupted" if interrupted else "failed")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
