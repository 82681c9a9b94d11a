"""``python -m lightning_ssb analyze --config X.yaml --ckpt_path C`` (or ``--model.init_args.pretrained P``):
the monitor's analysis of one model, without training.

``SSBTrainer`` is Lightning's ``Trainer`` plus an ``analyze`` method, which LightningCLI turns into a
subcommand parsed like ``fit`` (the same model, data, trainer, monitor and callbacks from the same YAML). It
loads the checkpoint's weights into the model the config builds (either stage; a classifier config also
takes an MLM checkpoint or a Hugging Face folder through ``pretrained``), sets up the data, and asks
the config's ``SSBMonitor`` for one analysis, written like an epoch of ``fit`` to the same sinks (disk
``ssb/<run id>/analyze/``, the W&B run, other loggers), so that ``report`` and ``compare`` read it. The
work is the monitor's own engine (``results/engine.py``), driven through its public API as the monitor
drives it at each analysed epoch.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from lightning_ssb.callbacks.monitor import SSBMonitor, random_init
from lightning_ssb.results import epochs
from lightning_ssb.results.build import EpochResult
from lightning_ssb.results.sinks import SinkError
from lightning_ssb.run_folder import RunRecord

ANALYZE_SUFFIX = "_analyze"  # an analysis of the run folder F writes to F_analyze (F itself holds the fit's run)


def load_weights(model: LightningModule, ckpt_path: str) -> dict:
    """Load a Lightning checkpoint's weights into ``model``; returns what it was (task, epoch, step).
    A checkpoint of another task or shape is a ValueError naming the file."""
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - a broken file is a user error with one line
        raise ValueError(f"ckpt_path: {ckpt_path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"ckpt_path: {ckpt_path}: not a Lightning checkpoint (no state_dict)")
    task = (ckpt.get("hyper_parameters") or {}).get("task")
    ours = getattr(model, "task", None)
    if task and ours and task != ours:
        raise ValueError(f"ckpt_path: {ckpt_path}: a checkpoint of task {task!r}, but the config builds a "
                         f"{type(model).__name__} (task {ours!r}): use the config that trained it, or give an MLM "
                         f"checkpoint to a classifier as --model.init_args.pretrained")
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(f"ckpt_path: {ckpt_path}: its weights do not fit the model the config builds "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]}): use the config that trained it")
    penalties = next((state["penalties"] for key, state in (ckpt.get("callbacks") or {}).items()
                      if str(key).startswith("SSBMonitor") and isinstance(state, dict) and state.get("penalties")),
                     None)
    return {"ckpt_path": str(Path(ckpt_path).resolve()), "task": task, "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step"), "run_penalties": penalties}


class SSBTrainer(Trainer):
    """Lightning's Trainer with an ``analyze`` method (the CLI's ``analyze`` subcommand)."""

    def analyze(self, model: LightningModule, datamodule: LightningDataModule | None = None,
                ckpt_path: str | None = None, random_init: bool = False, init_seed: int = 0) -> dict:
        """Analyse a checkpoint or a pre-trained model once with the config's SSBMonitor (no training).

        Args:
            model: The model the config builds (from ``pretrained`` when given).
            datamodule: The data the probe is drawn from (set up here with stage ``fit``).
            ckpt_path: A Lightning checkpoint of either stage whose weights are analysed; without it
                the model as built (``--model.init_args.pretrained``: a Hugging Face folder or hub id,
                or an MLM checkpoint for a classifier).
            random_init: Analyse the config's architecture at a seeded random initialisation instead
                (the symmetric state; written as ``init/``, epoch -3).
            init_seed: Seed of that random initialisation.

        Returns the scalars that were logged.
        """
        monitor = next((cb for cb in self.callbacks if isinstance(cb, SSBMonitor)), None)
        if monitor is None:
            raise ValueError("analyze: the config has no monitor (ssb: lightning_ssb.callbacks.SSBMonitor, or one "
                             "in trainer.callbacks)")
        if datamodule is None:
            raise ValueError("analyze: the config has no data module (data:) to draw the probe from")
        if self.world_size > 1:
            raise ValueError("analyze runs in one process: use --trainer.devices 1 (and no torchrun)")
        pretrained = getattr(model, "hparams", {}).get("pretrained")
        if random_init and ckpt_path:
            raise ValueError("analyze: --random_init analyses a fresh initialisation: leave out --ckpt_path")
        source = load_weights(model, ckpt_path) if ckpt_path else {
            "pretrained": pretrained, "task": getattr(model, "task", None), "epoch": None, "global_step": None}
        if random_init:
            source = {"random_init": True, "init_seed": init_seed, "task": getattr(model, "task", None),
                      "epoch": None, "global_step": None}
        elif not ckpt_path and not pretrained:
            source["note"] = "randomly initialised (neither ckpt_path nor model.init_args.pretrained)"
        monitor.check(model, datamodule)  # before any W&B run exists
        datamodule.prepare_data()
        datamodule.setup("fit")
        # Lightning has no public way to set a Trainer up without running a loop (fit/validate/predict run
        # Trainer._run, whose set-up steps are private), and none is needed: nothing here reads
        # trainer.lightning_module or model.trainer. What is needed is done by hand: the model on the
        # strategy's device, the loggers' runs, and the set-up of the two callbacks that record the run.
        model.to(self.strategy.root_device)
        for logger in self.loggers:  # the W&B run first, as fit does: its id names the run and its results folder
            getattr(logger, "experiment", None)
        started = time.perf_counter()
        status = "failed"
        try:
            for cb in self.callbacks:  # the run record and the config file, as in fit (the others are fit's own:
                # checkpoints, learning-rate logging, and the monitor, whose setup analyze_once does)
                if isinstance(cb, RunRecord) or hasattr(cb, "save_config"):
                    cb.setup(self, model, "analyze")
            result = analyze_once(monitor, self, model, datamodule, source, init_seed if random_init else None)
            status = "success"
        finally:
            for logger in self.loggers:
                logger.finalize(status)
            for cb in self.callbacks:
                if isinstance(cb, RunRecord):
                    cb.note(status="finished" if status == "success" else "failed", analyzed=source,
                            seconds=round(time.perf_counter() - started, 1))
        print(f"lightning_ssb analyze: {monitor.dirpath}/{epochs.dirname(result.epoch)} ({len(result.scalars)} "
              f"scalars, {time.perf_counter() - started:.1f} s)")
        return result.scalars


def analyze_once(monitor: SSBMonitor, trainer: Trainer, pl_module: LightningModule, datamodule,
                 source: dict | None = None, init_seed: int | None = None) -> EpochResult:
    """Outside any fit: ``monitor`` captures its probe once, analyses it and logs it to its sinks as
    ``analyze/`` (epoch -2), or, with ``init_seed``, the model's architecture at that seeded random
    initialisation as ``init/`` (epoch -3). One process; the data module must be set up. ``source``
    (what was analysed, its epoch and step) goes into meta.json."""
    monitor.check(pl_module, datamodule)
    monitor.open_sinks(trainer)
    monitor.build_probe(datamodule)
    engine = monitor.engine
    source = dict(source or {})
    run_penalties = source.pop("run_penalties", None)
    if run_penalties and init_seed is None:  # a checkpoint of a monitored run: its penalties, like with like
        from lightning_ssb.analysis import Penalties

        engine.book.penalties = Penalties.from_dict(run_penalties)
        source["penalties"] = "the checkpoint's run (chosen at its first analysed state)"
    try:
        start = time.perf_counter()
        ctx = getattr(trainer.precision_plugin, "forward_context", None)
        epoch = epochs.ANALYZE if init_seed is None else epochs.INIT
        step = int(source.get("global_step") or 0)
        if init_seed is None:
            snap = engine.capture(pl_module.model, epoch, step, device=pl_module.device, autocast=ctx)
        else:
            with random_init(pl_module.model, init_seed) as fresh:
                snap = engine.capture(fresh, epoch, step, device=pl_module.device, autocast=ctx)
        engine.blocking_seconds.append(time.perf_counter() - start)
        result = engine.analyse(snap, monitor.plan(epoch, last=True, device=pl_module.device), monitor.make_figures)
        result.meta["source"] = source
        engine.log(result)
    finally:
        engine.close()
    if engine.failed:
        raise SinkError(f"SSBMonitor: {engine.failure()}")
    return result
