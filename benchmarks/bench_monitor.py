"""How long SSBMonitor blocks training, for the quick-start fit and for BERT-6 shapes.

    python benchmarks/bench_monitor.py                  # both parts (a few minutes on 2 CPU cores)
    python benchmarks/bench_monitor.py --skip-bert6 --articles 1500

Quick start: the quick-start MLM model (BERT-6 depth, 12 heads of 16) on the shipped Wikipedia
sample, fitted twice, without and with the monitor (probe-train = a tenth of the training set,
probe-test = the validation split, every layer, node and head analysis in the background).
Prints per epoch the time the monitor blocks the training loop (probe capture + handing results
to the sinks; the analysis itself runs on a worker thread) against the epoch time, and the
end-to-end wall time of both fits (which also shows the worker's competition for the CPU).

BERT-6: the paper's shapes (768 hidden, 12 heads of 64, FFN 3072, 128 tokens) with random
weights: the time of a training step and of the probe capture per sequence, so the blocking
share for a probe of a tenth of the training set is capture / (10 x train step) per sequence,
plus the background analysis time of one site.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class EpochTimer(Callback):
    """Wall time of each training epoch (its validation included)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def quick_start(articles: int, epochs: int, root: str) -> None:
    from lightning.pytorch.loggers import WandbLogger

    from lightning_ssb.callbacks import ProbeConfig, SSBMonitor
    from lightning_ssb.data import WikipediaDataModule
    from lightning_ssb.models import MLMModule
    from lightning_ssb.models.architecture import BertArchitecture

    def fit(with_monitor: bool):
        L.seed_everything(0, verbose=False)
        data = WikipediaDataModule(source="sample", num_articles=articles, val_fraction=0.1, batch_size=32,
                                   cache_dir=os.path.join(root, "cache"))
        data.prepare_data()
        data.setup("fit")
        n_train, n_val = len(data.train_dataset), len(data.val_dataset)
        model = MLMModule(architecture=BertArchitecture(hidden_size=192, num_attention_heads=12,
                                                        intermediate_size=768))
        timer = EpochTimer()
        callbacks = [timer]
        monitor = None
        if with_monitor:
            monitor = SSBMonitor(probe=ProbeConfig(train_size=max(2, n_train // 10), test_size=None,
                                                   top_k_tokens=100), background=True)
            callbacks.append(monitor)
        logger = WandbLogger(project="bench", save_dir=root, offline=True)
        trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=logger, callbacks=callbacks,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, default_root_dir=root)
        start = time.perf_counter()
        trainer.fit(model, data)
        wall = time.perf_counter() - start
        logger.experiment.finish()
        return wall, timer.seconds, monitor, (n_train, n_val)

    os.environ.setdefault("WANDB_SILENT", "true")
    wall_off, epochs_off, _, sizes = fit(False)
    wall_on, epochs_on, mon, _ = fit(True)
    print(f"\n== quick start: MLM, {sizes[0]} train / {sizes[1]} val sequences, probe-train {sizes[0] // 10} "
          f"sequences ({mon.probe.y_train.numel()} masked positions), probe-test {mon.probe.y_test.numel()} positions")
    print("epoch | epoch s (no monitor) | capture s | logging s | blocking % | analysis s (background)")
    ref_capture = mon.blocking_seconds[0]
    print(f"  ref | {'':>20} | {ref_capture:9.2f} | {'':>9} | {'':>10} | {mon.history[0]['seconds']:.2f}")
    logs = mon.log_seconds
    for e in range(len(epochs_off)):
        capture = mon.blocking_seconds[e + 1]
        logging = logs[e + 1] if e + 1 < len(logs) else float("nan")
        share = 100 * (capture + logging) / epochs_off[e]
        print(f"{e:5d} | {epochs_off[e]:20.2f} | {capture:9.2f} | {logging:9.2f} | {share:9.1f}% | "
              f"{mon.history[e + 1]['seconds']:.2f}")
    print(f"end-to-end wall time: without monitor {wall_off:.1f} s, with monitor {wall_on:.1f} s "
          f"(+{100 * (wall_on / wall_off - 1):.1f}%, reference analysis and the worker's CPU use included)")


def bert6(probe_seqs: int, train_steps: int) -> None:
    from transformers import BertConfig, BertForMaskedLM

    from lightning_ssb.analysis import AnalysisConfig, analyze_all
    from lightning_ssb.callbacks.capture import capture_batches
    from lightning_ssb.callbacks.probe import ProbeBatch

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=6, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                     max_position_embeddings=512)
    model = BertForMaskedLM(cfg)
    B, T = 32, 128
    ids = torch.randint(1000, 30000, (B, T))
    labels = torch.full((B, T), -100)
    chosen = torch.rand(B, T) < 0.15
    labels[chosen] = ids[chosen]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    times = []
    for _ in range(train_steps + 1):  # the first step warms up
        start = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    train_per_seq = sum(times[1:]) / (train_steps * B)

    rows, pos = chosen[:probe_seqs].nonzero(as_tuple=True)
    batch = ProbeBatch({"input_ids": ids[:probe_seqs], "attention_mask": torch.ones_like(ids[:probe_seqs])},
                       rows, pos, torch.randint(0, 100, (rows.numel(),)))
    capture_batches(model, [batch], list(range(6)), ["attn.heads"])  # warm-up
    start = time.perf_counter()
    x, _ = capture_batches(model, [batch], list(range(6)), ["attn.heads"])
    capture_per_seq = (time.perf_counter() - start) / probe_seqs
    share = 100 * capture_per_seq / (10 * train_per_seq)
    print(f"\n== BERT-6 (768 hidden, 12x64 heads, 128 tokens, batch {B}), CPU threads {torch.get_num_threads()}")
    print(f"training step: {train_per_seq * 1e3:.1f} ms per sequence; probe capture (6 layers, eval, no_grad): "
          f"{capture_per_seq * 1e3:.1f} ms per sequence")
    print(f"blocking share with a probe of a tenth of the training set: {share:.1f}% of the epoch")

    # background analysis of one site, on a snapshot of the real shape (random labels, K=64)
    n = 2048
    gen = torch.Generator().manual_seed(0)
    feats = x["blocks.5.attn.heads"]
    x_big = feats[torch.randint(0, feats.shape[0], (n,), generator=gen)] + 0.1 * torch.randn(n, 12, 64, generator=gen)
    y = torch.arange(n) % 64
    start = time.perf_counter()
    analyze_all(x_big[: n // 2], y[: n // 2], x_big[n // 2:], y[n // 2:], 64, AnalysisConfig(crossover_draws=2))
    print(f"analysis of one site (D=768, K=64, 1024 + 1024 examples; both read-out families, the null, "
          f"crossover 2 draws): {time.perf_counter() - start:.1f} s on the worker thread "
          "(x the number of sites per epoch)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=600, help="Wikipedia sample articles of the quick start")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bert6-probe-seqs", type=int, default=32)
    parser.add_argument("--bert6-train-steps", type=int, default=2)
    parser.add_argument("--skip-quick", action="store_true")
    parser.add_argument("--skip-bert6", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        if not args.skip_quick:
            quick_start(args.articles, args.epochs, root)
    if not args.skip_bert6:
        bert6(args.bert6_probe_seqs, args.bert6_train_steps)


if __name__ == "__main__":
    main()
