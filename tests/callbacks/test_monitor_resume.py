"""A Ctrl-C at any stage of a monitored fit, then a resume from last.ckpt: the results folder ends equal to an
uninterrupted run's (issue 16.10: a Ctrl-C late in a run lost the last epoch's results).

Real tiny HF BERTs fitted by a real Trainer with the real checkpoint and random-state callbacks; the
interrupt is a KeyboardInterrupt raised at a chosen point, as Ctrl-C raises it in the main thread
(tests/interrupts.py):
- ``training``: in a training batch of the last epoch;
- ``middle_analysis`` / ``last_analysis``: while the main thread waits for the analysis of the middle (1)
  or the last (2) epoch, which is still running: the monitor stops it, nothing of it is written, and the
  resume analyses that epoch again: in the foreground its checkpoint was not written yet (the resume
  trains it again), in the background it was (the last epoch's then ends the training, and Lightning
  skips training on resume);
- ``report``: during the end-of-fit report.
Each in the foreground (training waits for the analysis) and the background (it does not).
"""

from __future__ import annotations

import json
import os
import threading
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lightning_ssb.callbacks.monitor as monitor_module
import lightning_ssb.report as report_module
from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.callbacks.probe import ProbeConfig
from lightning_ssb.callbacks.resume import RNGState
from tests.callbacks.toys import ToyClassificationData, ToyTask, fast_analysis
from tests.interrupts import InterruptAt, hold_analysis_then_interrupt, once, sigint_restored

EPOCHS = 3  # 0, 1 (the middle) and 2 (the last)
STATES = ["epoch_000", "epoch_001", "epoch_002", "reference"]
PROBE = ProbeConfig(train_size=48, test_size=None, batch_size=16)
NOT_COMPARED = {"ssb/analysis_seconds"}  # wall clock


def fit(root, background: bool, ckpt_path=None, callbacks=(), every_n_epochs: int = 1, max_epochs: int = EPOCHS,
        analysis=None) -> SSBMonitor:
    L.seed_everything(0)
    monitor = SSBMonitor(layers=[1], figures=False, sensitivity=False, background=background,
                         every_n_epochs=every_n_epochs, dirpath=str(root / "ssb"), probe=PROBE,
                         analysis=analysis or fast_analysis(crossover_sizes=[1, 4], crossover_draws=2))
    last = ModelCheckpoint(dirpath=str(root / "ckpt"), filename="last", save_top_k=1, enable_version_counter=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
                        callbacks=[monitor, RNGState(), last, *callbacks], enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(root))
    trainer.fit(ToyTask("classification"), ToyClassificationData(), ckpt_path=ckpt_path)
    return monitor


def interrupted(fn) -> None:
    """Run ``fn``, which must end as Lightning ends a fit on Ctrl-C (exit code 1); Lightning ignores
    further Ctrl-C from then on: the handler is given back."""
    with sigint_restored(), pytest.raises(SystemExit) as stopped:
        fn()
    assert stopped.value.code == 1


@pytest.fixture
def reports(monkeypatch) -> list[list[str]]:
    """The states on disk each time a report is written."""
    seen, write = [], report_module.write_report

    def recording(dirpath, *args, **kwargs):
        seen.append(sorted(d for d in os.listdir(dirpath) if not d.startswith("report")))
        return write(dirpath, *args, **kwargs)

    monkeypatch.setattr(report_module, "write_report", recording)
    return seen


_UNINTERRUPTED: dict[bool, object] = {}


@pytest.fixture
def uninterrupted(tmp_path_factory):
    def get(background: bool):
        if background not in _UNINTERRUPTED:
            root = tmp_path_factory.mktemp(f"uninterrupted_{background}")
            fit(root, background)
            _UNINTERRUPTED[background] = root
        return _UNINTERRUPTED[background]
    return get


def assert_same_results(got, expected) -> None:
    assert sorted(os.listdir(got / "ssb")) == sorted(os.listdir(expected / "ssb"))  # nothing twice, nothing missing
    for state in STATES:
        a = json.loads((expected / "ssb" / state / "scalars.json").read_text())
        b = json.loads((got / "ssb" / state / "scalars.json").read_text())
        assert a.keys() == b.keys(), state
        differ = [k for k in a if k not in NOT_COMPARED and a[k] != b[k]]
        assert not differ, (state, differ[:5])
        assert (got / "ssb" / state / "nodes.csv").read_text() == (expected / "ssb" / state / "nodes.csv").read_text()
        meta_a, meta_b = (json.loads((r / "ssb" / state / "meta.json").read_text()) for r in (expected, got))
        assert meta_a["penalties"] == meta_b["penalties"], state  # the run's penalties, kept in the checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
@pytest.mark.parametrize("stage", ["training", "middle_analysis", "last_analysis", "report"])
def test_a_ctrl_c_at_any_stage_then_a_resume_gives_the_uninterrupted_results(stage, background, tmp_path,
                                                                           monkeypatch, reports, uninterrupted):
    expected = uninterrupted(background)
    reports.clear()
    callbacks, stopped = [], None
    if stage == "training":
        callbacks = [InterruptAt(epoch=EPOCHS - 1, batch=1)]
    elif stage in ("middle_analysis", "last_analysis"):
        stopped = 1 if stage == "middle_analysis" else EPOCHS - 1
        hold_analysis_then_interrupt(monkeypatch, stopped)
    else:
        ctrl_c, write = once(lambda monitor: True), monitor_module.SSBMonitor._write_report

        def ctrl_c_in_report(self):
            if ctrl_c(self):
                raise KeyboardInterrupt
            return write(self)
        monkeypatch.setattr(monitor_module.SSBMonitor, "_write_report", ctrl_c_in_report)

    if stopped is None:
        interrupted(lambda: fit(tmp_path, background, callbacks=callbacks))
    else:
        with pytest.warns(UserWarning, match=f"SSBMonitor: epoch {stopped} was not analysed \\(stopped by the "
                                             "interrupt\\); a resume \\(--ckpt_path last\\) analyses it again"):
            interrupted(lambda: fit(tmp_path, background, callbacks=callbacks))
        assert not (tmp_path / "ssb" / f"epoch_{stopped:03d}").exists()  # stopped: nothing of it written
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("SSBMonitor"))
    # the checkpoint's own epoch is the only one it may hold captured but not logged
    assert set(state["captured"]) - {h["epoch"] for h in state["history"]} <= {last["epoch"]}

    resumed = fit(tmp_path, background, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert sorted(h["epoch"] for h in resumed.history) == [-1, 0, 1, 2]
    assert_same_results(tmp_path, expected)
    assert reports and reports[-1] == STATES  # the report was written with every epoch on disk


class SlowPenaltyChoice:
    """Holds the penalty choice of the first analysed state until training has finished epoch 0, so that the
    checkpoint at epoch 0's end is written while the background analysis is still choosing the penalties."""

    def __init__(self, choose) -> None:
        self.choose, self.epoch_done = choose, threading.Event()

    def __call__(self, *args, **kwargs):
        self.epoch_done.wait(timeout=60)
        time.sleep(0.3)
        return self.choose(*args, **kwargs)


class EpochDone(Callback):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.event.set()


@pytest.mark.slow
def test_a_checkpoint_written_while_the_penalties_are_chosen_holds_them(tmp_path, monkeypatch):
    """every_n_epochs 2, in the background: epoch 0 is not analysed, so nothing waits for the reference's
    analysis before epoch 0's checkpoint; the checkpoint waits for its penalties, and a resume analyses epoch 1
    with them, as the uninterrupted run does."""
    import lightning_ssb.analysis as analysis

    analysis_config = fast_analysis(crossover_sizes=[1, 4], crossover_draws=2, l2="cv", own_l2="cv", own_group_l2="cv")
    slow = SlowPenaltyChoice(analysis.choose_penalties)
    monkeypatch.setattr(analysis, "choose_penalties", slow)
    fit(tmp_path, True, callbacks=[EpochDone(slow.epoch_done)], every_n_epochs=2, max_epochs=1,
        analysis=analysis_config)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("SSBMonitor"))
    reference = json.loads((tmp_path / "ssb" / "reference" / "meta.json").read_text())["penalties"]
    assert state["penalties"] == reference and reference["source"]["shared"] == "cv"

    monkeypatch.setattr(analysis, "choose_penalties", slow.choose)
    fit(tmp_path, True, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), every_n_epochs=2, max_epochs=2,
        analysis=analysis_config)
    whole = tmp_path / "whole"
    fit(whole, True, every_n_epochs=2, max_epochs=2, analysis=analysis_config)
    for root in (tmp_path, whole):
        assert sorted(os.listdir(root / "ssb")) == ["epoch_001", "reference", "report.html", "report_figures"]
        assert json.loads((root / "ssb" / "epoch_001" / "meta.json").read_text())["penalties"] == reference
    a, b = (json.loads((r / "ssb" / "epoch_001" / "scalars.json").read_text()) for r in (tmp_path, whole))
    assert ({k: v for k, v in a.items() if k not in NOT_COMPARED}
            == {k: v for k, v in b.items() if k not in NOT_COMPARED})
