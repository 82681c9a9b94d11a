"""Derived (not measured) time per epoch of ``bert6.yaml`` on one GPU: FLOPs per epoch / (peak x MFU).

No GPU was available to this project, so the README's GPU figure is this arithmetic, labelled as such:

1. FLOPs of one training sequence at the config's shapes, counted two ways that must agree:
   analytically (2 FLOPs per multiply-add; backward = 2 x forward) and with PyTorch's
   ``FlopCounterMode`` on a real forward + backward of ``MLMModule`` (the same code path as training:
   encoder at every padded position, MLM head at the masked positions only).
2. Sequences per epoch: ``num_articles x (1 - val_fraction)`` of the config; every batch is padded to
   its longest sequence, which is 128 tokens in practice (88% of the Wikipedia articles reach 128
   tokens, so a batch of 32 without one has probability ~1e-30); masked positions: 15% of the real tokens.
3. Time = FLOPs per epoch / (peak bf16 dense FLOP/s x an assumed model-FLOPs utilisation, MFU).

    python benchmarks/bert6_epoch_time.py                   # the shipped bert6.yaml, MFU 0.3
    python benchmarks/bert6_epoch_time.py --mfu 0.2 --mean-real-tokens 116.4
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--mfu", type=float, default=0.3, help="assumed model-FLOPs utilisation")
    p.add_argument("--mean-real-tokens", type=float, default=116.4,
                   help="real tokens per article at max_length 128 (measured on shared/data's AA+AB: 116.4)")
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


if __name__ == "__main__":
    main()
