"""The command line: ``python -m lightning_ssb fit --config bert6.yaml``.

A ``LightningCLI`` whose model and data are chosen by ``class_path``, so that one CLI serves
pre-training and fine-tuning. Additions to the stock CLI:
- ``--config NAME`` finds a shipped config by bare name when no such file is in the working directory;
- the monitor is a top-level config group, ``ssb:`` (``ssb: null``: a fit without it);
- one run per run folder (``run_folder.py``): a folder that holds a run is refused unless
  ``--if_exists version|overwrite``; ``fit --ckpt_path last`` continues the folder's run (same
  logger run id, so the same monitor results folder), or says in one line that there is none;
- the resolved config is saved in the run folder, named by its run, and handed to the loggers;
- a W&B run without a name is named after the config file and the seed (``quickstart-seed0``);
- callbacks with a ``check(model, datamodule)`` method are checked before any logger run exists;
- a user error (bad path, bad key, malformed file, NaN loss) ends with one line, not a traceback
  (``LIGHTNING_SSB_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import dataclasses
import os
import pydoc
import re
import sys
import time
from pathlib import Path

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

# the model and data classes are imported before parsing, so that jsonargparse resolves their short
# names (--model.help MLMModule, class_path: FewRelDataModule) among the subclasses it knows
import lightning_ssb.data
import lightning_ssb.models  # noqa: F401
from lightning_ssb import run_folder
from lightning_ssb.analyze import ANALYZE_SUFFIX, SSBTrainer
from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.hub import DownloadError
from lightning_ssb.results.sinks import SinkError
from lightning_ssb.run_folder import RunRecord

CONFIG_DIR = Path(__file__).parent / "configs"
REBASED = ("trainer", "model", "data", "ssb")  # config groups whose paths move with the run folder
CONFIG_FLAGS = ("--config", "-c")


def shipped_configs() -> list[str]:
    """Names of the configs that travel inside the package."""
    return sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def program_name() -> str:
    """How the user called us, for usage lines: ``lightning-ssb`` or ``python -m lightning_ssb``."""
    return "python -m lightning_ssb" if Path(sys.argv[0]).name in ("__main__.py", "-c", "") else "lightning-ssb"


def top_help() -> tuple[str, str]:
    """The top-level ``--help``'s description and epilog: every subcommand, and the shipped configs."""
    description = ("Pre-train and fine-tune BERT with Lightning and watch single heads and nodes break the\n"
                   "symmetry of their layer, epoch by epoch (the method: docs/method.md).")
    epilog = "\n".join([
        "subcommands that do not train (their own --help):",
        "  report RUN_DIR [RUN_DIR ...] [--out PATH]     the HTML report of runs' monitor results",
        "  compare RUN_DIR [RUN_DIR ...] [--out DIR]     runs of different seeds side by side",
        "  seeds --config X.yaml --seeds S [S ...] [fit options]   one fit per seed, then compare",
        "",
        "shipped configs (--config NAME from any folder; a file of that name in the working folder wins):",
        *(f"  {name:<24}{_first_comment(CONFIG_DIR / name)}" for name in shipped_configs()),
        "",
        "options of a class by its short name: fit --model.help MLMModule, --data.help FewRelDataModule,",
        "--ssb.help SSBMonitor; one setting: --ssb.probe.train_size 500; no monitor: --ssb null",
    ])
    return description, epilog


def _first_comment(path: Path, width: int = 72) -> str:
    """The first sentence of a config's header comment, shortened to ``width`` characters at a word."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or not line.strip("# "):
            break
        header.append(line.lstrip("# ").strip())
    sentence = re.split(r"\.(\s|$)", " ".join(header), maxsplit=1)[0]
    return sentence if len(sentence) <= width else sentence[:width].rsplit(" ", 1)[0] + " ..."


class HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's formatter, with the description and epilog kept as written (argparse's
    RawDescriptionHelpFormatter rule): the epilog is a list, not a paragraph."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


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
    """Save the resolved config in the run folder, named by the run, and hand it to the loggers.

    The first fit of a run writes ``config.yaml``, each resume ``config-resume-N.yaml``; every file
    starts with a comment naming the run id, and ``run.json`` lists them. A logger with a
    ``log_config(text, config)`` method (the W&B logger) stores it with the run; any other logger
    gets the config as hyper-parameters.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        logger = trainer.logger
        if hasattr(logger, "log_config"):
            logger.log_config(text, self.config.as_dict())
        elif logger is not None:
            logger.log_hyperparams(self.config.as_dict())
        record = next((cb for cb in trainer.callbacks if isinstance(cb, RunRecord)), None)
        root = Path(record.folder if record else trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        path, n = root / self.config_filename, 0
        while path.exists():  # a resume of the same run: config-resume-1.yaml, -2, ...
            n += 1
            path = root / f"{Path(self.config_filename).stem}-resume-{n}.yaml"
        run_id = record.record.get("run_id") if record else None
        path.write_text(f"# lightning_ssb run {run_id}, {stage} started {time.strftime('%Y-%m-%d %H:%M:%S')}\n" + text)
        if record:
            record.note(configs=[*record.record.get("configs", []), path.name])


def summarize_parser_error(message: str) -> str:
    """One line out of jsonargparse's nested report: the full dotted key and what is wrong with it.

    The same for a YAML file and the command line. jsonargparse (4.53) reports a bad value as
    ``Parser key "k": ... - Expected a <class 'int'> ... Given value: abc`` and an unknown option of a
    class_path object as ``Problem with given class_path 'C': unrecognized arguments: --x=1`` or
    ``Option 'x' is not accepted``, and a typo inside a nested dataclass group (the monitor's ``probe:``) as
    ``Group 'probe' does not accept option 'x'``, kept as it is; tests/test_cli.py pins every form read here.
    """
    keys: list[str] = []
    owner = ""
    expected: list[str] = []
    for line in (raw.strip() for raw in message.splitlines()):
        if m := re.match(r'(?:error: )?Parser key "([^"]+)"', line):
            keys.append(m.group(1))
        elif m := re.match(r"- Problem with given class_path '([^']+)':?\s*(.*)", line):
            owner = m.group(1)
            cls = pydoc.locate(owner)
            if cls is None:
                return f"key '{'.'.join(keys)}': class_path '{owner}' not found"
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                keys.append("init_args")  # a class_path object: its options live under init_args
        elif m := re.match(r"Option '([^']+)' is not accepted", line):
            return _unknown(keys + [m.group(1)], owner)
        elif m := re.match(r"(?:error: )?Group '([^']+)' does not accept option '([^']+)'", line):
            # a nested dataclass group (the monitor's probe: or analysis:): jsonargparse's reason, with the full key
            group = [] if keys[-1:] == [m.group(1)] else [m.group(1)]
            return f"unknown key '{'.'.join(keys + group + [m.group(2)])}': {line.removeprefix('error: ')}"
        elif (m := re.match(r"(?:error: )?unrecognized arguments: --([^=\s]+)", line)) and keys:
            return _unknown(keys + [m.group(1)], owner)
        elif (m := re.match(r"Expected a <class '([^']+)'>\. Got value: (.*)", line)) and m.group(1) != "NoneType":
            return f"key '{'.'.join(keys)}': expected {m.group(1)}, got {m.group(2)}"
        elif (m := re.match(r"- Expected a <class '([^']+)'>", line)) and m.group(1) != "NoneType":
            expected.append(m.group(1))
        elif (m := re.match(r"Given value: (.*)", line)) and expected and keys:
            return f"key '{'.'.join(keys)}': expected {' or '.join(expected)}, got {m.group(1)}"
        elif "unrecognized arguments" in line or "does not exist" in line.lower():
            return line.removeprefix("error: ")
    first = message.strip().splitlines()[0] if message.strip() else "invalid arguments"
    return first.removeprefix("error: ")


def _unknown(keys: list[str], owner: str) -> str:
    return f"unknown key '{'.'.join(keys)}'" + (f" (not an option of {owner})" if owner else "")


class SSBArgumentParser(LightningArgumentParser):
    """Parse errors end in one line naming the key (``LIGHTNING_SSB_DEBUG=1`` for jsonargparse's full report)."""

    def error(self, message: str, ex: Exception | None = None):
        # nested parsers (class_path objects) raise for their parent to wrap: only the top one reports
        if os.environ.get("LIGHTNING_SSB_DEBUG") or not getattr(self, "exit_on_error", True):
            return super().error(message, ex)
        print(f"lightning_ssb: error: {summarize_parser_error(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


LOGGER_CALLBACKS = ("LearningRateMonitor",)  # Lightning callbacks that refuse a trainer without a logger


def drop_logger_callbacks(trainer) -> None:
    """With ``trainer.logger: false`` (no W&B, no logger at all), leave out the callbacks that log only through
    a logger (the shipped configs' ``LearningRateMonitor``, which Lightning refuses without one), and say so
    in one line, instead of a fit that stops at its first step."""
    if trainer.get("logger") is not False or not trainer.get("callbacks"):
        return
    names = [str(getattr(c, "class_path", "")).rsplit(".", 1)[-1] for c in trainer.callbacks]
    kept = [c for c, name in zip(trainer.callbacks, names, strict=True) if name not in LOGGER_CALLBACKS]
    if len(kept) < len(trainer.callbacks):
        left = sorted({name for name in names if name in LOGGER_CALLBACKS})
        print(f"lightning_ssb: trainer.logger is false: {', '.join(left)} left out (it logs through a logger)",
              file=sys.stderr)
        trainer.callbacks = kept


def resolve_precision(precision: str | None, accelerator: str | None, cuda: bool,
                      cuda_bf16: bool) -> tuple[str | None, str]:
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
        kwargs.setdefault("trainer_class", SSBTrainer)  # Lightning's Trainer plus analyze (lightning_ssb/analyze.py)
        kwargs.setdefault("parser_class", SSBArgumentParser)
        description, epilog = top_help()
        kwargs.setdefault("parser_kwargs", {"default_env": False, "prog": program_name(), "description": description,
                                            "epilog": epilog, "formatter_class": HelpFormatter})
        super().__init__(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         auto_configure_optimizers=False, load_from_checkpoint_support=False, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands plus ``analyze``, parsed like ``fit`` (SSBTrainer.analyze)."""
        return {**LightningCLI.subcommands(), "analyze": {"model", "datamodule"}}

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path`` restores the state of the model the config builds; Lightning's default would
        also merge the checkpoint's hyper-parameters into the config, which cannot parse modules chosen
        by class_path (and would override what the user wrote)."""
        ckpt_path = self.config.get(self.config.get("subcommand") or "", {}).get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path: {ckpt_path}: no such file")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the monitor is a top-level group (LightningCLI appends it to the trainer's callbacks), so that a
        # second config or a flag changes one of its settings without restating trainer.callbacks;
        # ``ssb: null`` is a fit without it (subclasses of SSBMonitor are accepted too). Named ssb, like its
        # logged keys and results folder: torchrun would take a bare --monitor for its --monitor-interval
        parser.add_lightning_class_args(SSBMonitor, "ssb", subclass_mode=True, required=False)
        parser.add_argument("--if_exists", choices=run_folder.IF_EXISTS, default="refuse",
                            help="fit into a run folder that holds a run: refuse (default), overwrite it, or "
                                 "version (write to the first free sibling <folder>-vN). --ckpt_path last resumes it.")

    def before_instantiate_classes(self) -> None:
        import torch

        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        trainer = cfg.trainer
        cuda = torch.cuda.is_available()
        precision, why = resolve_precision(trainer.get("precision"), trainer.get("accelerator"), cuda,
                                           cuda and torch.cuda.is_bf16_supported())
        if why:
            print(f"lightning_ssb: {why}", file=sys.stderr)
            trainer.precision = precision
        drop_logger_callbacks(trainer)
        self._run = None
        if sub in ("fit", "analyze", None):  # None: built without running (run=False), as for a fit
            name_wandb_runs(cfg, suffix=ANALYZE_SUFFIX if sub == "analyze" else "")
        if sub == "fit":
            self._run = self._prepare_run_folder(cfg)
        elif sub == "analyze":
            self._run = self._prepare_analyze_folder(cfg)

    def _prepare_analyze_folder(self, cfg) -> dict:
        """``analyze`` of the config whose run folder is F writes its own run to ``F_analyze`` (every path
        of the config under F moves with it; one run per folder as for fit); ``--ckpt_path last`` is F's."""
        folder = os.path.normpath(str(cfg.trainer.get("default_root_dir") or os.getcwd()))
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = run_folder.find_last(_checkpoint_dirs(cfg, folder))
        new = folder + ANALYZE_SUFFIX
        for key in REBASED:
            run_folder.rebase(cfg.get(key), folder, new)
        cfg.trainer.default_root_dir = new
        cfg.ckpt_path = None  # not a resume: SSBTrainer.analyze loads the weights itself
        try:
            return self._prepare_run_folder(cfg, dirs=[])  # analyze writes no checkpoint: only run.json counts
        finally:
            cfg.ckpt_path = ckpt_path

    def _prepare_run_folder(self, cfg, dirs: list[str] | None = None) -> dict:
        """One run per folder: refuse, overwrite or version a folder that holds a run; resolve ``last``.
        ``dirs``: the checkpoint folders that count (default: the config's)."""
        folder = str(cfg.trainer.get("default_root_dir") or os.getcwd())
        dirs = _checkpoint_dirs(cfg, folder) if dirs is None else dirs
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path == "last":
            cfg.ckpt_path = ckpt_path = run_folder.find_last(dirs)
        if ckpt_path:
            return {"folder": folder, "resumed_from": ckpt_path, "run_id": _run_id_of(folder, ckpt_path)}
        # under torchrun every rank parses; rank 0 alone judges the folder (the others could already
        # see the run.json that rank 0 writes for this very run)
        held = run_folder.held_run(folder, dirs) if int(os.environ.get("RANK", "0")) == 0 else None
        if held and cfg.if_exists == "refuse":
            raise ValueError(f"{folder} already holds {held}: resume it with --ckpt_path last, or pass "
                             "--if_exists version (a new sibling folder) or --if_exists overwrite")
        if held and cfg.if_exists == "overwrite":
            run_folder.clear_run(folder, dirs)
            print(f"lightning_ssb: {folder}: the earlier {held} was removed (--if_exists overwrite)", file=sys.stderr)
        elif held:
            new = run_folder.free_sibling(folder)
            for key in REBASED:
                run_folder.rebase(cfg.get(key), folder, new)
            print(f"lightning_ssb: {folder} holds {held}; this run writes to {new}", file=sys.stderr)
            folder = new
            cfg.trainer.default_root_dir = new
        return {"folder": folder, "resumed_from": None, "run_id": None}

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        """LightningCLI's, less the top-level callback groups set to null (``ssb: null``): Lightning
        appends every callback group's value, None included. Private in Lightning 2.6; pinned by
        tests/test_cli.py (a fit with ``--ssb null`` runs without the monitor)."""
        callbacks = [cb for cb in callbacks if cb is not None]
        listed = config.get("callbacks") or []
        if any(isinstance(cb, SSBMonitor) for cb in callbacks) and any(
                isinstance(cb, SSBMonitor) for cb in (listed if isinstance(listed, list) else [listed])):
            # two monitors would share one results folder (and Lightning refuses them with a traceback)
            raise ValueError("ssb: an SSBMonitor is also in trainer.callbacks; keep one (the shipped configs "
                             "set it as the top-level ssb: group)")
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        bind = getattr(self.model, "bind_data", None)
        if callable(bind) and self.datamodule is not None:
            bind(self.datamodule)
        if self._run is not None:
            # first, so that run.json names the run before the config callback writes config.yaml
            self.trainer.callbacks.insert(0, RunRecord(self._run["folder"], self._run["resumed_from"]))
            for logger in self.trainer.loggers if self._run["run_id"] else []:
                if callable(getattr(logger, "resume_run", None)):
                    logger.resume_run(self._run["run_id"])  # the same W&B run, hence the same results folder

    def before_fit(self) -> None:
        # checks of the callbacks' arguments against model and data, before any logger run is created
        for callback in self.trainer.callbacks:
            check = getattr(callback, "check", None)
            if callable(check):
                check(self.model, self.datamodule)


def first_config(argv: list[str]) -> str | None:
    """The first ``--config`` / ``-c`` value of a command line (the config the others adjust), or None."""
    it = iter(argv)
    for arg in it:
        if arg in CONFIG_FLAGS:
            return next(it, None)
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def run_name(config_file: str | None, seed, folder: str | None = None) -> str:
    """``<config file name>-seed<S>`` (``quickstart-seed0``): what a W&B run without a name is called. Without a
    config file, the run folder's name; without a seed (``seed_everything: false``), no suffix."""
    base = Path(str(config_file)).stem if config_file else Path(os.path.normpath(folder or os.getcwd())).name
    return f"{base}-seed{seed}" if isinstance(seed, int) and not isinstance(seed, bool) else base


def is_wandb_logger(logger) -> bool:
    """Whether a config's logger entry (``{class_path, init_args}``) is a W&B logger (ours or Lightning's)."""
    return hasattr(logger, "get") and str(logger.get("class_path") or "").endswith("WandbLogger")


def name_wandb_runs(cfg, suffix: str = "") -> None:
    """Name every W&B logger of a config that has no ``name`` after the first config file and the seed
    (``run_name``, plus ``suffix``: ``_analyze`` for ``analyze``): runs of one config tell their seeds apart,
    runs of two configs their configs."""
    configs = cfg.get("config") or []
    logger = cfg.trainer.get("logger")
    for entry in logger if isinstance(logger, list) else [logger]:
        args = entry.get("init_args") if is_wandb_logger(entry) else None
        if args is not None and not args.get("name"):
            args["name"] = run_name(configs[0] if configs else None, cfg.get("seed_everything"),
                                    cfg.trainer.get("default_root_dir")) + suffix


USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, IsADirectoryError,
               PermissionError, SinkError, DownloadError)


def one_line(err: Exception) -> str:
    """The message of ``err``; for jsonargparse's wrapped instantiation errors, the inner one."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    inner = [ln.strip()[2:] for ln in lines if ln.strip().startswith("- ") and "NoneType" not in ln]
    return inner[0] if len(lines) > 1 and inner else lines[0]


def release_process_group() -> None:
    """Destroy this process's default process group, if it has one, before the interpreter exits.

    Under ``torchrun`` a rank other than 0 leaves ``fit`` while rank 0 still analyses the last epoch, and
    then exits with its gloo process group alive. Lightning destroys an NCCL group at exit but not a gloo
    one, and a CI run saw such a rank abort in the interpreter's shutdown ("terminate called without an
    active exception", no Python frame: a C++ thread left joinable), which made torchrun stop rank 0 in
    the middle of its last analysis. Rank 0 needs no collective after that point (it gathers the probe
    before it analyses), so releasing the group is what exiting already did, in an order that joins the
    group's threads."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def _checkpoint_dirs(cfg, folder: str) -> list[str]:
    """The checkpoint folders a fit config names (``dirpath`` of each ModelCheckpoint), or ``<folder>/checkpoints``."""
    dirs = []
    for cb in cfg.trainer.get("callbacks") or []:
        if str(cb.get("class_path", "")).endswith("ModelCheckpoint") and (cb.get("init_args") or {}).get("dirpath"):
            dirs.append(str(cb["init_args"]["dirpath"]))
    return dirs or [os.path.join(folder, "checkpoints")]


def _run_id_of(folder: str, ckpt_path: str) -> str | None:
    """The id of the run a resumed checkpoint belongs to: its own note, else the folder's record."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - a broken file is a user error with one line
        raise ValueError(f"ckpt_path: {ckpt_path}: not a readable checkpoint ({type(err).__name__})") from None
    noted = ckpt.get(run_folder.CHECKPOINT_KEY) or {}
    record = run_folder.read_record(folder) or {}
    return noted.get("run_id") or record.get("run_id")
