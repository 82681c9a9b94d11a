"""Time per epoch of ``bert6.yaml`` on one GPU: derived (FLOPs per epoch / (peak x MFU)) and, with
``--measure``, measured.

Derived:

1. FLOPs of one training sequence at the config's shapes, counted two ways that must agree:
   analytically (2 FLOPs per multiply-add; backward = 2 x forward) and with PyTorch's
   ``FlopCounterMode`` on a real forward + backward of ``MLMModule`` (the same code path as training:
   encoder at every padded position, MLM head at the masked positions only).
2. Sequences per epoch: ``num_articles x (1 - val_fraction)`` of the config; every batch is padded to
   its longest sequence, which is 128 tokens in practice (88% of the Wikipedia articles reach 128
   tokens, so a batch of 32 without one has probability ~1e-30); masked positions: 15% of the real tokens.
3. Time = FLOPs per epoch / (peak bf16 dense FLOP/s x an assumed model-FLOPs utilisation, MFU).

Measured (``--measure STEPS``): the config's model and data module (from local article files) trained
through a Lightning ``Trainer`` on this machine's accelerator at the config's precision (bf16-mixed on a
GPU with bf16), ``--warmup`` steps untimed, then STEPS timed steps (the device synchronised at both
ends). It prints sequences/s, real tokens/s, the training FLOP/s counted analytically at each batch's
padded length and masked count, the model-FLOPs utilisation against the GPU's bf16 peak (MFU), and the
epoch time that throughput gives. Data loading (the config's workers), the optimiser and clipping are
in the timed steps; validation and the monitor are not.

    python benchmarks/bert6_epoch_time.py                   # the shipped bert6.yaml, MFU 0.3
    python benchmarks/bert6_epoch_time.py --mfu 0.2 --mean-real-tokens 116.4
    python benchmarks/bert6_epoch_time.py --measure 200 --source ../shared/data/enwiki_2015_wikiextractor_AA.txt.gz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode

from lightning_ssb.models import BertArchitecture, MLMModule

CONFIG = Path(__file__).resolve().parents[1] / "lightning_ssb" / "configs" / "bert6.yaml"
# dense bf16 tensor-core peaks (vendor data sheets; SXM parts, without sparsity)
PEAKS = {"A100": 312e12, "H100": 989e12, "H200": 989e12}


def analytic_flops(arch: BertArchitecture, seq_len: int, masked: float) -> dict:
    """Training FLOPs (forward + backward = 3 x forward) of one sequence of ``seq_len`` positions with
    ``masked`` MLM positions. Embedding look-ups, softmax, LayerNorm and the optimiser are left out
    (each below 1% at these shapes)."""
    d, f, t, v, layers = arch.hidden_size, arch.intermediate_size, seq_len, arch.vocab_size, arch.num_hidden_layers
    linear = layers * 2 * t * (4 * d * d + 2 * d * f)  # Q, K, V, O and the two feed-forward matmuls
    attention = layers * 2 * 2 * t * t * d  # Q K^T and (attention) V
    head = 2 * masked * (d * d + d * v)  # MLM transform and decoder at the masked positions only
    forward = {"linear": linear, "attention": attention, "mlm_head": head}
    return {k: 3 * x for k, x in forward.items()}


def counted_flops(arch: BertArchitecture, seq_len: int, batch: int = 2, seed: int = 0) -> tuple[float, float]:
    """FlopCounterMode's count for one forward + backward of ``MLMModule`` on ``batch`` sequences of
    ``seq_len`` tokens (15% masked): (FLOPs per sequence, masked positions per sequence)."""
    torch.manual_seed(seed)
    module = MLMModule(architecture=arch)
    ids = torch.randint(1000, arch.vocab_size, (batch, seq_len))
    chosen = torch.rand(batch, seq_len) < 0.15
    batch_ = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "labels": torch.where(chosen, ids, torch.full_like(ids, -100))}
    with FlopCounterMode(display=False) as counter:
        logits, target = module.masked_logits(batch_)
        F.cross_entropy(logits, target).backward()
    return counter.get_total_flops() / batch, float(chosen.sum()) / batch


def peak_flops() -> tuple[str, float | None]:
    """This machine's accelerator and its dense bf16 peak (None where PEAKS does not know it)."""
    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((peak for gpu, peak in PEAKS.items() if gpu in name), None)


def measure(cfg: dict, arch: BertArchitecture, steps: int, warmup: int, source: list[str], articles: int,
            batch_size: int | None, per_epoch: int) -> None:
    """Train the config's model on its data module (from local files) for warmup + steps steps and time the
    last ``steps`` (see the module docstring); ``per_epoch``: the config's training sequences per epoch."""
    import lightning as L

    from lightning_ssb.cli import resolve_precision
    from lightning_ssb.data import WikipediaDataModule
    from lightning_ssb.models import OptimizerConfig

    data_cfg = dict(cfg["data"]["init_args"])
    cuda = torch.cuda.is_available()
    precision, why = resolve_precision(cfg["trainer"].get("precision"), "auto", cuda,
                                       cuda and torch.cuda.is_bf16_supported())
    data = WikipediaDataModule(source=source, num_articles=articles, max_length=data_cfg["max_length"],
                               val_fraction=data_cfg["val_fraction"], batch_size=batch_size or data_cfg["batch_size"],
                               num_workers=data_cfg.get("num_workers", 0), seed=data_cfg.get("seed", 0))
    L.seed_everything(cfg.get("seed_everything", 0), verbose=False)
    module = MLMModule(architecture=arch, optimizer=OptimizerConfig(**cfg["model"]["init_args"].get("optimizer", {})))

    class Clock(L.Callback):
        """The timed steps' start and end, and each timed batch's shape with its masked and real token counts,
        kept on the device (read once the timing is over: no wait for the GPU inside the timed steps)."""

        def __init__(self) -> None:
            self.batches: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
            self.start = self.end = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == warmup:
                if cuda:
                    torch.cuda.synchronize()
                self.start = time.perf_counter()
            if trainer.global_step >= warmup:
                b, t = batch["input_ids"].shape
                self.batches.append((b, t, (batch["labels"] != -100).sum(), batch["attention_mask"].sum()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == warmup + steps:  # global_step counts the optimiser steps taken
                if cuda:
                    torch.cuda.synchronize()
                self.end = time.perf_counter()

    clock = Clock()
    trainer = L.Trainer(accelerator="auto", devices=1, precision=precision, max_steps=warmup + steps,
                        gradient_clip_val=cfg["trainer"].get("gradient_clip_val"), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    trainer.fit(module, data)
    if clock.end <= clock.start:
        raise SystemExit(f"fewer than {warmup + steps} training batches: lower --measure or --warmup, "
                         "or raise --articles")
    seconds = clock.end - clock.start
    flops = sum(b * sum(analytic_flops(arch, t, float(masked) / b).values()) for b, t, masked, _ in clock.batches)
    sequences = sum(b for b, *_ in clock.batches)
    positions = sum(b * t for b, t, *_ in clock.batches)
    real = sum(float(r) for *_, r in clock.batches)
    device, peak = peak_flops()
    rate = flops / seconds
    print(f"measured on {device}, precision {precision}{f' ({why})' if why else ''}, batch "
          f"{batch_size or data_cfg['batch_size']}: {steps} steps after {warmup} untimed in {seconds:.2f} s: "
          f"{sequences / seconds:.1f} sequences/s, {real / seconds:.0f} real tokens/s "
          f"({positions / seconds:.0f} positions/s with padding), {rate / 1e12:.3g} TFLOP/s of training "
          + (f"= MFU {rate / peak:.1%} of the {peak / 1e12:.0f} TFLOP/s bf16 peak" if peak else "(no known peak)"))
    epoch = per_epoch / (sequences / seconds)
    print(f"  an epoch of the config ({per_epoch} sequences) at this throughput: {epoch:.1f} s "
          f"(training steps only: no validation, no monitor)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--mfu", type=float, default=0.3, help="assumed model-FLOPs utilisation")
    p.add_argument("--mean-real-tokens", type=float, default=116.4,
                   help="real tokens per article at max_length 128 (measured on shared/data's AA+AB: 116.4)")
    p.add_argument("--measure", type=int, default=0, metavar="STEPS", help="also time STEPS real training steps")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before the timed ones (--measure)")
    p.add_argument("--source", nargs="*", default=["../shared/data/enwiki_2015_wikiextractor_AA.txt.gz"],
                   help="local article files for --measure")
    p.add_argument("--articles", type=int, default=None, help="articles to load for --measure (default: all)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size for --measure (default: the config's)")
    args = p.parse_args()

    cfg = yaml.safe_load(Path(args.config).read_text())
    arch = BertArchitecture(**cfg["model"]["init_args"]["architecture"])
    data = cfg["data"]["init_args"]
    seq_len, masked = data["max_length"], 0.15 * args.mean_real_tokens
    sequences = round(data["num_articles"] * (1 - data["val_fraction"]))

    parts = analytic_flops(arch, seq_len, masked)
    per_seq = sum(parts.values())
    counted, counted_masked = counted_flops(arch, seq_len)
    check = sum(analytic_flops(arch, seq_len, counted_masked).values())
    print(f"{Path(args.config).name}: {arch.num_hidden_layers} layers x {arch.hidden_size}, "
          f"FFN {arch.intermediate_size}, "
          f"vocab {arch.vocab_size}; {seq_len} positions, {masked:.1f} masked per sequence")
    print("training FLOPs per sequence: " + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in parts.items())
          + f"; total {per_seq / 1e9:.2f} G")
    print(f"cross-check: FlopCounterMode {counted / 1e9:.2f} G vs analytic {check / 1e9:.2f} G "
          f"at the same {counted_masked:.1f} masked positions ({counted / check - 1:+.1%})")
    epoch = sequences * per_seq
    print(f"per epoch: {sequences} sequences x {per_seq / 1e9:.2f} G = {epoch:.3g} FLOPs "
          f"({sequences * seq_len / 1e6:.2f} M positions, {sequences * masked / 1e6:.2f} M masked)")
    for gpu, peak in PEAKS.items():
        seconds = epoch / (peak * args.mfu)
        print(f"  {gpu}: {peak / 1e12:.0f} TFLOP/s bf16 peak x MFU {args.mfu} -> {seconds:.1f} s per epoch, "
              f"{seconds * cfg['trainer']['max_epochs'] / 60:.1f} min for {cfg['trainer']['max_epochs']} epochs")
    if args.measure:
        measure(cfg, arch, args.measure, args.warmup, args.source, args.articles, args.batch_size, sequences)


if __name__ == "__main__":
    main()
