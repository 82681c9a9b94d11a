"""The recipe search of issue 17 (docs/recipes/tokens_search.md): pre-train a narrow BERT-6 on the
Wikipedia text of ``shared/data`` and follow its own masked-token accuracy on the monitor's probe.

Same code path as ``python -m lightning_ssb fit`` (``MLMModule``, ``WikipediaDataModule``, a Lightning
``Trainer``), without the monitor: the probe is built by ``ProbeConfig.build`` exactly as ``SSBMonitor``
builds it and scored by ``lightning_ssb.probe_accuracy`` (the argmax over the K probe tokens, over the
vocabulary, and the majority rate). Scoring every ``--eval-every`` steps is timed apart from training.

    python benchmarks/tokens_search.py speed --hidden 192 --heads 12 --steps 30          # s/step only
    python benchmarks/tokens_search.py train --hidden 192 --heads 12 --lr 1e-3 --epochs 3 --out run.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import lightning as L
import torch

from lightning_ssb.callbacks.probe import ProbeConfig
from lightning_ssb.data import WikipediaDataModule
from lightning_ssb.models import BertArchitecture, MLMModule, OptimizerConfig
from lightning_ssb.probe_accuracy import probe_accuracy

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = [str(SHARED / f"enwiki_2015_wikiextractor_{part}.txt.gz") for part in ("AA", "AB")]


class Clock(L.Callback):
    """Training wall time without the probe scoring, the loss curve, and probe scores every n steps."""

    def __init__(self, probe_cfg: ProbeConfig | None, eval_every: int, max_seconds: float | None, log: list):
        self.probe_cfg, self.eval_every, self.max_seconds, self.records = probe_cfg, eval_every, max_seconds, log
        self.train_seconds, self.eval_seconds, self.losses, self.step_times = 0.0, 0.0, [], []
        self.cpu_times: list[float] = []  # process CPU seconds per step (all threads)
        self.probe = None

    def _score(self, trainer, pl_module, tag):
        if self.probe is None:
            return
        t0 = time.perf_counter()
        ctx = getattr(trainer.precision_plugin, "forward_context", None)
        s = probe_accuracy(pl_module.model, self.probe, "test", pl_module.device, ctx)
        dt = time.perf_counter() - t0
        self.eval_seconds += dt
        recent = self.losses[-50:]
        entry = {"tag": tag, "step": trainer.global_step, "epoch": trainer.current_epoch,
                 "train_seconds": round(self.train_seconds, 1), "loss50": sum(recent) / max(len(recent), 1),
                 "restricted": s.restricted, "full": s.full, "majority": s.majority, "n": s.n,
                 "ratio": s.restricted / s.majority, "eval_seconds": round(dt, 1),
                 "load": os.getloadavg()[0]}
        self.records.append(entry)
        print(json.dumps(entry), flush=True)

    def on_train_start(self, trainer, pl_module):
        if self.probe_cfg is not None:
            self.probe = self.probe_cfg.build(trainer.datamodule, "mlm")
            print(f"probe: {len(self.probe.y_train)} train / {len(self.probe.y_test)} test examples, "
                  f"K = {self.probe.num_classes}, classes {self.probe.label_names[:12]}...", flush=True)
        self._score(trainer, pl_module, "init")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        self.train_seconds += dt
        self.step_times.append(dt)
        self.cpu_times.append(time.process_time() - self._c0)
        self.losses.append(float(outputs["loss"]))
        if self.eval_every and trainer.global_step % self.eval_every == 0:
            self._score(trainer, pl_module, "step")
        if self.max_seconds is not None and self.train_seconds > self.max_seconds:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module):
        self._score(trainer, pl_module, f"epoch{trainer.current_epoch}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["speed", "train", "monitor"])
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=None, help="intermediate size (default 4 x hidden)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--articles", type=int, default=None, help="articles drawn from AA+AB (default all)")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--schedule", default="linear")
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=-1, help="max optimiser steps (speed mode: timed steps)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this much training time")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--probe-train", type=int, default=1000)
    p.add_argument("--probe-test", type=int, default=None)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, 2 here)")
    p.add_argument("--out", default=None)
    p.add_argument("--save", default=None, help="save the trained MLMModule's state_dict here")
    p.add_argument("--load", default=None, help="monitor mode: a state_dict saved by --save")
    p.add_argument("--sites", default="attn.heads", help="monitor mode: comma-separated sites")
    args = p.parse_args()

    if args.threads:  # on a shared machine one thread loses less to waiting at every parallel region
        torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, verbose=False)
    dm = WikipediaDataModule(source=SOURCES, num_articles=args.articles, max_length=args.max_length,
                             val_fraction=args.val_fraction, batch_size=args.batch, seed=0,
                             mlm_probability=args.mlm_probability)
    arch = BertArchitecture(num_hidden_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                            intermediate_size=args.ffn or 4 * args.hidden, hidden_dropout_prob=args.dropout,
                            attention_probs_dropout_prob=args.dropout)
    model = MLMModule(architecture=arch, optimizer=OptimizerConfig(lr=args.lr, weight_decay=args.wd,
                                                                   warmup=args.warmup, schedule=args.schedule))
    if args.mode == "monitor":
        return monitor_cost(args, dm, model)
    log: list = []
    speed = args.mode == "speed"
    probe = None if speed else ProbeConfig(train_size=args.probe_train, test_size=args.probe_test,
                                           top_k_tokens=args.top_k, batch_size=64, seed=0)
    clock = Clock(probe, args.eval_every, None if args.max_minutes is None else 60 * args.max_minutes, log)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=args.precision, max_epochs=args.epochs,
                        max_steps=(args.steps + 3) if speed else args.steps, gradient_clip_val=1.0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[clock])
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    trainer.fit(model, datamodule=dm)
    wall = time.perf_counter() - t0
    summary = {"args": vars(args), "steps": trainer.global_step, "train_seconds": clock.train_seconds,
               "eval_seconds": clock.eval_seconds, "wall_seconds": wall, "load_before": load0,
               "load_after": os.getloadavg()[0], "threads": torch.get_num_threads(),
               "params": sum(p.numel() for p in model.parameters()), "train_sequences": len(dm.train_dataset)}
    timed, cpu = sorted(clock.step_times[3:]), sorted(clock.cpu_times[3:])
    if timed:  # the fastest steps are those that had the cores: p10 estimates a quiet machine's step
        summary["step_seconds"] = {"mean": sum(timed) / len(timed), "p10": timed[len(timed) // 10],
                                   "median": timed[len(timed) // 2], "cpu_median": cpu[len(cpu) // 2]}
    summary["losses"] = clock.losses
    summary["log"] = log
    print(json.dumps({k: v for k, v in summary.items() if k not in ("log", "losses")}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    if args.save:
        torch.save({"state_dict": model.state_dict(), "architecture": vars(arch)}, args.save)


def monitor_cost(args, dm, model) -> None:
    """What one analysed epoch of SSBMonitor costs on a saved model: the probe's capture (every layer,
    the given sites) and ``build_result`` with the shipped analysis settings (both read-out families,
    the null, the full crossover), timed apart; the same calls as the monitor's engine makes
    (``results.engine.AnalysisEngine.capture`` and ``.analyse``)."""
    from lightning_ssb.analysis import AnalysisConfig
    from lightning_ssb.capture import capture_probe
    from lightning_ssb.results.build import EpochSnapshot, build_result

    if args.load:
        model.load_state_dict(torch.load(args.load, map_location="cpu", weights_only=False)["state_dict"])
    dm.setup("fit")
    probe = ProbeConfig(train_size=args.probe_train, test_size=args.probe_test, top_k_tokens=args.top_k,
                        batch_size=64, seed=0).build(dm, "mlm")
    layers, sites = list(range(args.layers)), args.sites.split(",")
    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test = capture_probe(model.model, probe, layers, sites)
    capture = time.perf_counter() - t0
    t0 = time.perf_counter()
    score = probe_accuracy(model.model, probe)
    own = time.perf_counter() - t0
    snap = EpochSnapshot(0, 0, x_train, x_test, y_train, y_test, probe.num_classes, list(probe.label_names))
    config = AnalysisConfig(granularities=("node", "head"), theta=0.5, tau=0.3, crossover_sizes=None,
                            crossover_draws=5)
    t0, c0 = time.perf_counter(), time.process_time()
    build_result(snap, config, [], True, True)
    analysis, analysis_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"probe_examples": [len(y_train), len(y_test)], "capture_seconds": capture,
                      "probe_accuracy_seconds": own, "analysis_seconds": analysis, "analysis_cpu_seconds": analysis_cpu,
                      "restricted": score.restricted, "majority": score.majority, "threads": torch.get_num_threads(),
                      "load": os.getloadavg()[0], "sites": sites}), flush=True)


if __name__ == "__main__":
    main()
