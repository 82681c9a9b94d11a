"""The analysis engine (results/engine.py) on its own, without Lightning's Trainer: probe, capture, analyse,
log, failed sinks and the penalty book; and the monitor's checkpoint waiting for the penalties, not polling."""

from __future__ import annotations

import json
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.callbacks.probe import ProbeConfig
from lightning_ssb.capture import capture_batches
from lightning_ssb.results.build import AnalysisPlan, EpochResult, PenaltyBook
from lightning_ssb.results.engine import AnalysisEngine
from lightning_ssb.results.sinks import Sink
from tests.callbacks.toys import ToyClassificationData, ToyTask, fast_analysis
from tests.values import same

PROBE = ProbeConfig(train_size=48, test_size=None, batch_size=16)


class Broken(Sink):
    name = "broken"
    calls = 0

    def write(self, result) -> None:
        self.calls += 1
        raise OSError("disk full")


def test_one_state_through_the_engine(tmp_path):
    torch.manual_seed(0)
    model, data = ToyTask("classification"), ToyClassificationData()
    data.setup("fit")
    engine = AnalysisEngine([1], ["attn.heads"], fast_analysis(crossover_sizes=[1, 4], crossover_draws=2),
                            table=False, sinks=["disk"])
    engine.open_sinks(str(tmp_path / "ssb"))
    probe = engine.build_probe(PROBE, data, "classification")
    assert engine.build_probe(PROBE, data, "classification") is probe  # built once

    snap = engine.capture(model.model, -2, 7)
    x_train, y_train = capture_batches(model.model, probe.train_batches, [1], ["attn.heads"])
    assert (snap.epoch, snap.step, snap.num_classes) == (-2, 7, 4)
    assert torch.equal(snap.train["blocks.1.attn.heads"], x_train["blocks.1.attn.heads"])
    assert torch.equal(snap.y_train, y_train) and len(snap.y_test) == len(probe.y_test)
    assert len(engine.capture_seconds) == 1

    stages = []
    result = engine.analyse(snap, AnalysisPlan(book=engine.book, crossover=False), figures=False,
                            progress=stages.append)
    assert stages and engine.book.penalties is not None and engine.book.chosen.done()  # the first state chose them
    for sensitivity, parts in (([], "sites"), (["blocks.1.attn.heads"], "sites and sensitivity")):
        said = []  # in forked processes, the wait line names what the parts are
        engine.analyse(snap, AnalysisPlan(book=engine.book, crossover=False, sensitivity=sensitivity, workers=2),
                       figures=False, progress=said.append)
        assert said[0] == f"0/{1 + len(sensitivity)} parts done in 2 processes ({parts})"
    broken = Broken()
    engine.sinks.append(broken)
    with pytest.warns(UserWarning, match="the broken sink could not write .*disk full; it is left out from now on"):
        engine.log(result)
    assert json.loads((tmp_path / "ssb" / "analyze" / "scalars.json").read_text())["epoch"] == -2
    assert engine.history == [{"epoch": -2, "step": 7, "seconds": result.seconds}] and len(engine.log_seconds) == 1
    assert engine.failed.keys() == {broken} and engine.live_sinks == engine.sinks[:1]
    assert engine.failure() == engine.failed[broken]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.log(result)  # the failed sink is left out: no second warning
    assert broken.calls == 1
    engine.close()


def test_the_penalty_book_says_when_they_are_chosen():
    book = PenaltyBook()
    assert book.penalties is None and not book.chosen.done()
    book.penalties = "chosen"
    assert book.chosen.result(timeout=0) == "chosen"
    assert PenaltyBook("given").chosen.done()


def _monitor_with(work) -> SSBMonitor:
    """A monitor whose queue holds one analysis running ``work(book)`` on a worker thread."""
    monitor = SSBMonitor(layers=[0], probe=PROBE)
    executor = ThreadPoolExecutor(1)
    monitor._pending.append(executor.submit(work, monitor.book))
    executor.shutdown(wait=False)
    return monitor


def test_a_checkpoint_waits_for_the_penalties_not_for_the_whole_analysis():
    release = threading.Event()

    def analysis(book):
        time.sleep(0.2)
        book.penalties = type("Chosen", (), {"as_dict": lambda self: {"l2": 1.0}})()
        release.wait(timeout=30)  # the rest of the analysis runs on after the choice

    monitor = _monitor_with(analysis)
    try:
        assert monitor.state_dict()["penalties"] == {"l2": 1.0}
        assert not monitor._pending[0].done()  # returned at the choice, while the analysis still runs
    finally:
        release.set()


def test_a_checkpoint_does_not_wait_on_an_analysis_that_failed_before_choosing():
    def analysis(book):
        time.sleep(0.1)
        raise RuntimeError("failed before the penalties")

    monitor = _monitor_with(analysis)
    assert monitor.state_dict()["penalties"] is None and monitor._pending[0].done()


def test_the_unconverged_fits_warning_says_which_ran_out_of_iterations_and_which_stalled(tmp_path):
    engine = AnalysisEngine([0, 1], ["attn.heads"], fast_analysis(), table=False, sinks=["disk"])
    engine.open_sinks(str(tmp_path / "ssb"))
    sites = {"blocks.0.attn.heads": {"unconverged": 0.0, "stalled": 0.0, "grad_max": 1e-7},
             "blocks.1.attn.heads": {"unconverged": 3.0, "stalled": 1.0, "grad_max": 2e-4}}
    cap = engine.analysis.max_iter
    with pytest.warns(UserWarning, match=rf"epoch 0: 3 read-out fits stopped before converging in "
                                         rf"\['blocks.1.attn.heads'\] \(largest final gradient 0.0002 > analysis.gtol "
                                         rf"1e-06\): 2 at analysis.max_iter \({cap}\): raise it; 1 stalled \(no step"):
        engine.log(EpochResult(0, 5, meta={"convergence": sites}))
    engine.close()


def test_an_accelerators_schedule_forks_the_programs_and_gives_the_same_state(monkeypatch, tmp_path):
    """On an accelerator (`process_split`: (1, workers)) the sites run one after another in the analysis'
    thread, and only the crossover's linear programs go to forked processes. Run on the CPU with that
    split, every program is solved in another process and the state's statistics and crossover tables
    equal those of the CPU's schedule (the sites in the processes)."""
    import importlib
    import os

    from lightning_ssb.results import build

    torch.manual_seed(0)
    model, data = ToyTask("classification"), ToyClassificationData()
    data.setup("fit")
    engine = AnalysisEngine([0, 1], ["attn.heads"], fast_analysis(readout="both", crossover_sizes=[1, 2, 4, 8],
                                                                  crossover_draws=2), table=True, sinks=["disk"])
    engine.open_sinks(str(tmp_path / "ssb"))
    engine.build_probe(PROBE, data, "classification")
    snap = engine.capture(model.model, 0, 1)
    on_cpu = engine.analyse(snap, AnalysisPlan(book=engine.book, workers=2), figures=False)

    crossover = importlib.import_module("lightning_ssb.analysis.crossover")
    real, where = crossover.reachable_labels_many, tmp_path / "pids"
    where.mkdir()

    def recorded(calls):  # inherited by the forked children: the file's name says which process solved it
        (where / f"{os.getpid()}-{time.perf_counter_ns()}").touch()
        return real(calls)

    monkeypatch.setattr(crossover, "reachable_labels_many", recorded)
    monkeypatch.setattr(build, "process_split", lambda device, workers: (1, workers))
    said: list[str] = []
    as_on_gpu = engine.analyse(snap, AnalysisPlan(book=engine.book, workers=2), figures=False, progress=said.append)
    pids = {int(f.name.split("-")[0]) for f in where.iterdir()}
    assert pids and os.getpid() not in pids  # every program was solved in a forked process
    assert said[0].startswith("site 1/2 blocks.0.attn.heads")  # the sites one after another, here
    timing = [k for k in on_cpu.scalars if "seconds" in k]
    stats = {k: v for k, v in on_cpu.scalars.items() if k not in timing}
    assert stats and stats.keys() == {k: v for k, v in as_on_gpu.scalars.items() if k not in timing}.keys()
    assert all(same(v, as_on_gpu.scalars[k]) for k, v in stats.items())
    crossover_tables = [k for k in on_cpu.tables if "crossover" in k]
    assert crossover_tables and all(same(on_cpu.tables[k], as_on_gpu.tables[k]) for k in crossover_tables)
