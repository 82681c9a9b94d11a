"""The command line: ``python -m lightning_ssb fit --config bert6.yaml``.

A ``LightningCLI`` whose model and data are chosen by ``class_path``, so that one CLI serves
pre-training and fine-tuning. Additions to the stock CLI:
- ``--config NAME`` finds a shipped config by bare name when no such file is in the working directory;
- the resolved config is saved in the run folder and pushed to the W&B run's config;
- a user error (bad path, bad key, malformed file, NaN loss) ends with one line, not a traceback
  (``LIGHTNING_SSB_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import dataclasses
import os
import pydoc
import re
import sys
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

CONFIG_DIR = Path(__file__).parent / "configs"
CONFIG_FLAGS = ("--config", "-c")


def shipped_configs() -> list[str]:
    """Names of the configs that travel inside the package."""
    return sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config(value: str) -> str:
    """A path as given when it exists, else the shipped config of that name (with or without .yaml)."""
    if Path(value).exists():
        return value
    for candidate in (CONFIG_DIR / value, CONFIG_DIR / f"{value}.yaml", CONFIG_DIR / Path(value).name):
        if candidate.is_file():
            return str(candidate)
    return value  # jsonargparse reports the missing file by name


def resolve_config_args(argv: list[str]) -> list[str]:
    """Rewrite ``--config NAME`` / ``--config=NAME`` / ``-c NAME`` to shipped paths where needed."""
    out, it = [], iter(argv)
    for arg in it:
        if arg in CONFIG_FLAGS:
            out += [arg, resolve_config(next(it, ""))]
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


class SaveAndLogConfig(SaveConfigCallback):
    """Save the resolved config beside the run (never over an earlier run's) and push it to W&B."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        logger = trainer.logger
        if isinstance(logger, _LightningWandbLogger):
            run_files = Path(logger.experiment.dir)  # W&B uploads whatever lies here
            (run_files / "lightning_config.yaml").write_text(text)
            # the nested config as the W&B run config, so runs can be filtered by any option
            logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)
        elif logger is not None:
            logger.log_hyperparams(self.config.as_dict())
        # not trainer.log_dir: it broadcasts, and this runs on rank 0 only
        root = Path(getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        path = root / self.config_filename
        n = 1
        while path.exists():  # keep earlier runs' configs: config.yaml, config-1.yaml, ...
            path = root / f"{path.stem.split('-')[0]}-{n}.yaml"
            n += 1
        path.write_text(text)


def summarize_parser_error(message: str) -> str:
    """One line out of jsonargparse's nested report: the full dotted key and what is wrong with it."""
    keys: list[str] = []
    owner = ""
    for line in (raw.strip() for raw in message.splitlines()):
        if m := re.match(r'(?:error: )?Parser key "([^"]+)"', line):
            keys.append(m.group(1))
        elif m := re.match(r"- Problem with given class_path '([^']+)'", line):
            owner = m.group(1)
            cls = pydoc.locate(owner)
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                keys.append("init_args")  # a class_path object: its options live under init_args
        elif m := re.match(r"Option '([^']+)' is not accepted", line):
            return f"unknown key '{'.'.join(keys + [m.group(1)])}'" + (f" (not an option of {owner})" if owner else "")
        elif (m := re.match(r"Expected a <class '([^']+)'>\. Got value: (.*)", line)) and m.group(1) != "NoneType":
            return f"key '{'.'.join(keys)}': expected {m.group(1)}, got {m.group(2)}"
        elif "unrecognized arguments" in line or "does not exist" in line.lower():
            return line.removeprefix("error: ")
    first = message.strip().splitlines()[0] if message.strip() else "invalid arguments"
    return first.removeprefix("error: ")


class SSBArgumentParser(LightningArgumentParser):
    """Parse errors end in one line naming the key (``LIGHTNING_SSB_DEBUG=1`` for jsonargparse's full report)."""

    def error(self, message: str, ex: Exception | None = None):
        # nested parsers (class_path objects) raise for their parent to wrap: only the top one reports
        if os.environ.get("LIGHTNING_SSB_DEBUG") or not getattr(self, "exit_on_error", True):
            return super().error(message, ex)
        print(f"lightning_ssb: error: {summarize_parser_error(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def resolve_precision(precision: str | None, accelerator: str | None, cuda: bool, cuda_bf16: bool) -> tuple[str | None, str]:
    """Mixed precision where the hardware has it: the precision to use and why it changed ('' if not).

    The paper configs ask for ``bf16-mixed``. On a CPU run that becomes ``32-true`` (bf16 matmuls are
    far slower than fp32 on most CPUs), on a GPU without bf16 (pre-Ampere) ``16-mixed``.
    """
    if precision not in ("bf16-mixed", "bf16"):
        return precision, ""
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator in (None, "auto") and cuda)
    if not on_gpu:
        return "32-true", f"trainer.precision {precision} -> 32-true: this run is on the CPU"
    if not cuda_bf16:
        return "16-mixed", f"trainer.precision {precision} -> 16-mixed: this GPU has no bf16"
    return precision, ""


class SSBCLI(LightningCLI):
    """LightningCLI with model and data chosen by ``class_path``."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", SaveAndLogConfig)
        kwargs.setdefault("parser_class", SSBArgumentParser)
        kwargs.setdefault("parser_kwargs", {"default_env": False})
        super().__init__(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         auto_configure_optimizers=False, load_from_checkpoint_support=False, **kwargs)

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path`` restores the state of the model the config builds; Lightning's default would
        also merge the checkpoint's hyper-parameters into the config, which cannot parse modules chosen
        by class_path (and would override what the user wrote)."""
        ckpt_path = self.config.get(self.config.get("subcommand") or "", {}).get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path: {ckpt_path}: no such file")

    def before_instantiate_classes(self) -> None:
        import torch

        trainer = self.config[self.config.subcommand].trainer if self.config.get("subcommand") else self.config.trainer
        cuda = torch.cuda.is_available()
        precision, why = resolve_precision(trainer.get("precision"), trainer.get("accelerator"), cuda,
                                           cuda and torch.cuda.is_bf16_supported())
        if why:
            print(f"lightning_ssb: {why}", file=sys.stderr)
            trainer.precision = precision

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        bind = getattr(self.model, "bind_data", None)
        if callable(bind) and self.datamodule is not None:
            bind(self.datamodule)

    def _run_subcommand(self, subcommand: str) -> None:
        # close the W&B run when the subcommand ends, so its file is complete (also after an error:
        # what was logged so far is kept, and the run is marked failed)
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            finish_wandb(self.trainer, exit_code=1)
            raise
        finish_wandb(self.trainer, exit_code=0)


def finish_wandb(trainer: Trainer, exit_code: int) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, _LightningWandbLogger) and logger._experiment is not None:
            logger._experiment.finish(exit_code=exit_code)


USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, IsADirectoryError)


def one_line(err: Exception) -> str:
    """The message of ``err``; for jsonargparse's wrapped instantiation errors, the inner one."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    inner = [ln.strip()[2:] for ln in lines if ln.strip().startswith("- ") and "NoneType" not in ln]
    return inner[0] if len(lines) > 1 and inner else lines[0]


def main(args: list[str] | None = None) -> SSBCLI | None:
    """Entry point of ``python -m lightning_ssb`` and the ``lightning-ssb`` script."""
    if args is None:  # from the command line: rewrite sys.argv, as LightningCLI reads it
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
    else:
        args = resolve_config_args(list(args))
    try:
        return SSBCLI(args=args)
    except USER_ERRORS as err:
        if os.environ.get("LIGHTNING_SSB_DEBUG"):
            raise
        print(f"lightning_ssb: error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None
