"""``WandbLogger`` with an automatic offline fallback and a ``wandb sync`` hint.

Lightning's ``WandbLogger`` already creates the run on global rank 0 only (other ranks get
a dummy experiment), so a DDP job is one W&B run, never one per rank.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info


def has_wandb_credentials() -> bool:
    """True when W&B can log online: ``WANDB_API_KEY`` is set or ``~/.netrc`` has the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Weights & Biases logger: online with credentials, otherwise an offline run on disk.

    ``WANDB_MODE=disabled`` is respected (nothing is written; the run still has an id). The run is
    finished when the trainer finalises the logger, so its file is complete (marked failed after an
    error or an interruption, with what was logged so far).

    Args:
        project: W&B project name.
        name: Run name shown in the dashboard.
        save_dir: Folder under which the ``wandb/`` run folders are written.
        offline: ``None`` (default) decides by credentials and ``WANDB_MODE``; ``True``/``False`` force it.
        log_model: Upload checkpoints as W&B artifacts (``False``, ``True`` at the end, ``"all"``).
        kwargs: Passed on to Lightning's ``WandbLogger`` and ``wandb.init`` (``entity``, ``tags``, ``group``...).
    """

    def __init__(self, project: str = "lightning_ssb", name: str | None = None, save_dir: str = "runs",
                 offline: bool | None = None, log_model: bool | str = False, **kwargs: Any) -> None:
        mode = os.environ.get("WANDB_MODE", "").lower()
        self.disabled = mode == "disabled"
        if self.disabled:
            offline = False  # Lightning's offline=True would set WANDB_MODE=dryrun over the user's choice
            kwargs["mode"] = "disabled"
        elif offline is None:
            offline = mode in ("offline", "dryrun") or (mode != "online" and not has_wandb_credentials())
        # absolute: the wandb-core service may have been started (by this process or a parent, via
        # WANDB_SERVICE) in another working directory, and resolves relative paths against its own
        save_dir = str(Path(save_dir).expanduser().resolve())
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline, log_model=log_model,
                         **kwargs)

    @property
    def offline(self) -> bool:
        return bool(self._offline)

    @property
    def run_dir(self) -> str | None:
        """The run's local folder (``.../wandb/offline-run-*`` or ``run-*``); rank 0 only."""
        if self.disabled:
            return None
        exp = self.experiment
        files_dir = getattr(exp, "dir", None)
        return str(Path(files_dir).parent) if isinstance(files_dir, str) else None

    def resume_run(self, run_id: str) -> None:
        """Continue the run ``run_id`` instead of starting a new one (call before the run is created).

        Lightning's ``WandbLogger`` takes the id only at construction (``id=``, with ``resume="allow"``);
        a resumed fit learns it from its checkpoint after the logger is built, so it is set here.
        """
        if self._experiment is not None:
            raise RuntimeError("resume_run must be called before the W&B run is created")
        self._wandb_init.update(id=run_id, resume="allow")
        self._id = run_id

    def log_config(self, text: str, config: dict) -> None:
        """The resolved config: a file among the run's files, and the nested dict as the run config."""
        exp = self.experiment
        if not self.disabled and isinstance(getattr(exp, "dir", None), str):
            (Path(exp.dir) / "lightning_config.yaml").write_text(text)  # W&B uploads whatever lies here
        exp.config.update(config, allow_val_change=True)  # runs can be filtered by any option

    def finalize(self, status: str) -> None:
        run_dir = self.run_dir if self._experiment is not None else None
        super().finalize(status)
        if self._experiment is not None and status in ("success", "failed"):
            self._experiment.finish(exit_code=0 if status == "success" else 1)
        if self.offline and run_dir and status == "success":
            rank_zero_info(f"W&B run saved offline in {run_dir}; upload it with: wandb sync {run_dir}")
