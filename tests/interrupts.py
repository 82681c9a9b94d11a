"""Ctrl-C in tests, shared by tests/test_end_to_end.py (through the CLI) and tests/callbacks/test_monitor_resume.py
(a bare Trainer): the interrupt is a KeyboardInterrupt raised at a chosen point, as Ctrl-C raises it in the main
thread.

- ``InterruptAt``: after a chosen training batch;
- ``hold_analysis_then_interrupt``: while the main thread waits for the analysis of a chosen epoch, which is
  still running (it reports stages until the interrupted monitor stops it);
- ``sigint_restored``: Lightning ignores every Ctrl-C after the first; the SIGINT handler is given back;
- ``once``: a one-shot trigger.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager

import pytest
from lightning.pytorch.callbacks import Callback

import lightning_ssb.callbacks.monitor as monitor_module
import lightning_ssb.results.engine as engine_module


class InterruptAt(Callback):
    """Ctrl-C in the middle of a fit: a KeyboardInterrupt after training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int = 1, batch: int = 3) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt


@contextmanager
def sigint_restored():
    """Lightning ignores further Ctrl-C after the first: give the SIGINT handler back afterwards."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def once(condition):
    """A one-shot trigger: True the first time ``condition(...)`` holds."""
    fired = []

    def check(*args) -> bool:
        if not fired and condition(*args):
            fired.append(True)
            return True
        return False
    return check


def hold_analysis_then_interrupt(patches: pytest.MonkeyPatch, epoch: int) -> None:
    """Patch (through ``patches``) the monitor's engine and its wait: the analysis of ``epoch`` is still running
    when the Ctrl-C comes (it reports a stage every 20 ms, which raises once the interrupted monitor stopped
    it), and the Ctrl-C comes while the main thread waits for that analysis."""
    held, ctrl_c = once(lambda snap: snap.epoch == epoch), once(lambda future: future.ssb_epoch == epoch)
    build, waiting = engine_module.build_result, monitor_module.WaitProgress.waiting

    def held_until_stopped(snapshot, *args):
        if held(snapshot):
            while True:
                args[-1]("a stage")  # the monitor's progress reporter: raises once the monitor stopped it
                time.sleep(0.02)
        return build(snapshot, *args)

    def ctrl_c_while_waiting(self, future):
        if ctrl_c(future):
            raise KeyboardInterrupt  # Ctrl-C while the main thread waits for this analysis
        return waiting(self, future)
    patches.setattr(engine_module, "build_result", held_until_stopped)
    patches.setattr(monitor_module.WaitProgress, "waiting", ctrl_c_while_waiting)
