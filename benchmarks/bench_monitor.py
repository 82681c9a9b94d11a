"""What SSBMonitor costs a user, end to end: a shipped config fitted with and without the monitor.

    python benchmarks/bench_monitor.py                         # quickstart.yaml, then quickstart_mlm.yaml
    python benchmarks/bench_monitor.py --config quickstart.yaml --epochs 2
    python benchmarks/bench_monitor.py --config quickstart_mlm.yaml --waiting  # and with training waiting
    python benchmarks/bench_monitor.py --config quickstart_mlm.yaml --baseline-again  # drift bracketed
    python benchmarks/bench_monitor.py --config bert6.yaml --epochs 1 --extra \
        --data.init_args.source "[$(realpath ../shared/data/enwiki_2015_wikiextractor_AA.txt.gz)]" \
        --data.init_args.num_articles 4000       # --extra: CLI arguments for every fit (paths absolute)

Both fits run in this process through the real CLI (``python -m lightning_ssb fit``), one after the
other, with the same seed, each in a fresh working directory, W&B offline: first the config without
the monitor, then as shipped. It prints the end-to-end ratio of the two wall times, the time the
monitor spent in each part (capture of the probe, the analysis by stage: penalty rule, each read-out
family, nulls, crossover and its linear programs, sensitivity, figures; logging; the report) and how
long training waited for the analysis. It also times training's own work (its batches and validation
passes) in both fits: the monitor adds nothing to it, so a difference there is the machine's speed
moving between the two fits (on a shared machine, 10% and more), and the ratio is printed again with
the first fit's training time in both, where training waits for the analysis. As shipped the analysis
runs beside training (SSBMonitor's ``background: auto``; on a CPU its forked processes run at a lower
priority and take the time training leaves idle): then the two share the cores, training's own time is
not the machine's drift alone, and only the plain ratio is printed. ``--waiting`` fits a third time with
``background: false`` (training waits for each state, the default before 2026-12-03), ``--beside`` with
``background: true``. ``--baseline-again`` fits without the monitor once more at the end: the ratios
against the mean of the two fits without it cancel a drift that is linear in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from lightning.pytorch import Callback


@contextlib.contextmanager
def workdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class TrainingClock(Callback):
    """Seconds of training's own work in a fit: its training batches (forward, backward, optimiser step)
    and its validation passes. The monitor adds nothing to either, so where the two fits differ here,
    the machine's speed moved between them."""

    def __init__(self) -> None:
        self.train = self.validation = 0.0
        self._batch = self._val = 0.0

    def on_train_batch_start(self, *args) -> None:
        self._batch = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.train += time.perf_counter() - self._batch

    def on_validation_start(self, *args) -> None:
        self._val = time.perf_counter()

    def on_validation_end(self, *args) -> None:
        self.validation += time.perf_counter() - self._val

    @property
    def seconds(self) -> float:
        return self.train + self.validation


def fit(config: str, epochs: int, folder: Path, monitor: bool, extra: tuple[str, ...] = ()):
    from lightning_ssb.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    args = ["fit", "--config", config, "--trainer.max_epochs", str(epochs), "--trainer.enable_progress_bar", "false",
            f"--trainer.callbacks+={TrainingClock.__module__}.TrainingClock", *extra]
    if not monitor:
        args += ["--ssb", "null"]  # the monitor's config group off: the same fit without it
    with workdir(folder):
        start = time.perf_counter()
        cli = main(args)
        wall = time.perf_counter() - start
        found = [c for c in cli.trainer.callbacks if type(c).__name__ == "SSBMonitor"]
        for mon in found:  # a relative results folder (a logger without its own folder) is read from elsewhere
            mon.dirpath = str(Path(mon.dirpath).resolve())
    clock = next(c for c in cli.trainer.callbacks if isinstance(c, TrainingClock))
    mon = found[0] if found else None
    return wall, mon, clock, mon is not None and mon.runs_in_background(cli.model)


def breakdown(mon) -> dict[str, float]:
    """Seconds per part of the monitor's work, from its own counters and each state's meta.json."""
    parts: dict[str, float] = defaultdict(float)
    parts["capture (probe forward passes)"] = sum(mon.capture_seconds)
    parts["logging to the sinks"] = sum(mon.log_seconds)
    parts["end-of-fit report"] = mon.report_seconds
    for meta in Path(mon.dirpath).glob("*/meta.json"):
        for stage, seconds in (json.loads(meta.read_text()).get("seconds") or {}).items():
            parts[f"analysis: {stage}"] += seconds
    return dict(parts)


def bench(config: str, epochs: int, root: Path, schedules: tuple[str, ...] = (), again: bool = False,
          extra: tuple[str, ...] = ()) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"\n== {config}, {epochs} epochs, torch {torch.__version__}, {torch.get_num_threads()} threads, {device}"
          + (f", with {' '.join(extra)}" if extra else ""), flush=True)
    fit(config, 0, root / "warm-up", monitor=False, extra=extra)  # tokenise into the cache: neither timed fit pays
    wall_off, _, clock_off, _ = fit(config, epochs, root / "off", monitor=False, extra=extra)
    wall_on, mon, clock_on, beside = fit(config, epochs, root / "on", monitor=True, extra=extra)
    print(f"-- as shipped (background: {mon.background}: {'beside training' if beside else 'training waits'})")
    report(wall_off, clock_off, wall_on, mon, clock_on, beside=beside)
    others = {}
    for schedule in schedules:  # "true" (beside training) or "false" (training waits)
        print(f"-- again with --ssb.init_args.background {schedule}", flush=True)
        wall, *rest, beside = fit(config, epochs, root / f"background-{schedule}", monitor=True,
                                  extra=(*extra, "--ssb.init_args.background", schedule))
        report(wall_off, clock_off, wall, *rest, beside=beside)
        others[f"background {schedule}"] = wall
    if again:
        # the machine's speed drifts over minutes: a second fit without the monitor, after those with it, brackets
        # them, and their mean is the baseline of the drift-free ratio (the drift is taken as linear in time)
        wall_again, _, clock_again, _ = fit(config, epochs, root / "off-again", monitor=False, extra=extra)
        base = (wall_off + wall_again) / 2
        print(f"-- without the monitor again, last: {wall_again:.1f} s (training's own work "
              f"{clock_again.seconds:.1f} s, against {clock_off.seconds:.1f} s in the first fit without it); "
              f"against the mean of the two fits without it, {base:.1f} s: as shipped {wall_on / base:.2f}x "
              f"(+{wall_on - base:.1f} s)"
              + "".join(f", {name} {wall / base:.2f}x (+{wall - base:.1f} s)" for name, wall in others.items()))


def report(wall_off: float, clock_off, wall_on: float, mon, clock_on, beside: bool = False) -> None:
    """The end-to-end ratio of one fit with the monitor against the fit without it, and the monitor's parts."""
    print(f"end to end: without the monitor {wall_off:.1f} s, with it {wall_on:.1f} s: "
          f"ratio {wall_on / wall_off:.2f}x (+{wall_on - wall_off:.1f} s)")
    a, b = clock_off.seconds, clock_on.seconds
    steady = wall_on - b + a
    if beside:
        print(f"training's own work: {a:.1f} s without the monitor, {b:.1f} s with the analysis beside it (the "
              f"two share the cores, so this is not the machine's drift alone)")
    else:
        print(f"training's own work (its batches and validation passes, to which the monitor adds nothing): "
              f"{a:.1f} s without the monitor, {b:.1f} s with it ({b / a:.2f}x: the machine's speed moved); with "
              f"the first fit's training time in both, the ratio is {steady / wall_off:.2f}x "
              f"(+{steady - wall_off:.1f} s)")
    print(f"training waited for the analysis {sum(mon.wait_seconds):.1f} s in all "
          f"({', '.join(f'{s:.1f}' for s in mon.wait_seconds)} s per analysed state)")
    capture = sum(mon.capture_seconds)
    print(f"the probe's capture {capture:.1f} s in all "
          f"({', '.join(f'{s:.1f}' for s in mon.capture_seconds)} s per captured state): with these states and "
          f"this probe no analysis speed brings the ratio below {(wall_off + capture) / wall_off:.2f}x")
    parts = breakdown(mon)
    total = sum(parts.values())
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds:7.1f} s  {100 * seconds / total:5.1f}%  {name}")
    print(f"  {total:7.1f} s  in all (the monitor's own time; the rest of the difference is start-up and "
          f"the model built again for the random initialisation)")
    from lightning_ssb.parallel import default_workers

    walls = [json.loads(m.read_text()).get("seconds") for m in sorted(Path(mon.dirpath).glob("*/meta.json"))]
    scalars = [json.loads(p.read_text()) for p in sorted(Path(mon.dirpath).glob("*/scalars.json"))]
    analysis_wall = sum(s.get("ssb/analysis_seconds", 0.0) for s in scalars)
    print(f"analysis wall time {analysis_wall:.1f} s over {len(walls)} states; on a CPU the sites, the "
          f"sensitivity and the figures ran in {default_workers()} forked processes (LIGHTNING_SSB_WORKERS), so "
          f"the analysis stages above are summed over the processes and overlap in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="*", default=["quickstart.yaml", "quickstart_mlm.yaml"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--waiting", action="store_true",
                        help="also fit with training waiting for each analysed state (background: false) and compare "
                             "it with the same fit without the monitor")
    parser.add_argument("--beside", action="store_true",
                        help="also fit with the analysis beside training (background: true; on a CPU its processes "
                             "run at a lower priority)")
    parser.add_argument("--baseline-again", action="store_true",
                        help="fit without the monitor once more after the fits with it, and print the ratios against "
                             "the mean of the two fits without it (the machine's drift, taken as linear, cancels)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="CLI arguments added to every fit (last on the line: everything after it is passed on)")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    with tempfile.TemporaryDirectory() as root:
        os.environ.setdefault("LIGHTNING_SSB_CACHE", os.path.join(root, "cache"))
        for i, config in enumerate(args.config):
            schedules = (("false",) if args.waiting else ()) + (("true",) if args.beside else ())
            bench(config, args.epochs, Path(root) / str(i), schedules, args.baseline_again, tuple(args.extra))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
