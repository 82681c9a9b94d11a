"""Training throughput: this project's Lightning path against the reference loop a researcher would write.

Reference: a plain PyTorch loop over Hugging Face ``BertForMaskedLM`` / ``BertForSequenceClassification``
with every sequence padded to 128 and the MLM decoder applied at all 128 positions.
Ours: the Lightning modules of ``lightning_ssb.models`` fed by ``lightning_ssb.data`` (batches padded to their
longest sequence, length-grouped FewRel batches, the MLM decoder at masked positions only).

Both run in this process on the same model (same initial weights, dropout off so that losses are
comparable), the same batches in the same order (same MLM masks) and the same optimiser and schedule.
The script prints examples/s and real (non-padding) tokens/s for each, their ratio, and the loss of
both after every step: they must agree up to float rounding.

    python benchmarks/bench_training.py                 # BERT-6 shapes (hidden 768), both tasks
    python benchmarks/bench_training.py --task fewrel --steps 6 --batch-size 32
"""

from __future__ import annotations

import argparse
import copy
import time
from itertools import islice

import lightning as L
import torch
import torch.nn.functional as F

from lightning_ssb.data import FewRelDataModule, WikipediaDataModule
from lightning_ssb.models import BertArchitecture, MLMModule, OptimizerConfig, SequenceClassifier
from lightning_ssb.models.optim import linear_schedule

REF_LEN = 128


def pad_to(batch: dict, length: int) -> dict:
    """The reference's batches: every sequence padded to ``length`` (labels with -100 for MLM)."""
    out = {}
    for key, t in batch.items():
        if t.dim() == 2:
            fill = -100 if key == "labels" else 0
            out[key] = F.pad(t, (0, length - t.shape[1]), value=fill)
        else:
            out[key] = t
    return out


def reference_loop(model, batches, optim_cfg, task, clip=1.0):
    """The plain loop: HF forward with labels (decoder at every position for MLM), AdamW, clipping."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim_cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=optim_cfg.lr,
                                  betas=optim_cfg.betas, eps=optim_cfg.eps)  # PyTorch's default implementation
    scheduler = linear_schedule(optimizer, optim_cfg, len(batches))
    model.train()
    losses, times = [], []
    for batch in batches:
        b = pad_to(batch, REF_LEN)
        t0 = time.perf_counter()
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(out.loss.item())
    return losses, times


class StepTimer(L.Callback):
    def __init__(self):
        self.losses, self.times = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self._t0)
        self.losses.append(outputs["loss"].item())


class FixedBatches(L.LightningDataModule):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.batches, batch_size=None, shuffle=False)


def lightning_path(module, batches, clip=1.0):
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=len(batches), max_epochs=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        gradient_clip_val=clip, callbacks=[timer])
    trainer.fit(module, datamodule=FixedBatches(batches))
    return timer.losses, timer.times


def run(task: str, args) -> None:
    arch = BertArchitecture(num_hidden_layers=args.layers, hidden_size=args.hidden, num_attention_heads=args.heads,
                            intermediate_size=4 * args.hidden, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
    optim_cfg = OptimizerConfig(lr=5e-5, weight_decay=0.01, warmup=0.0)
    if task == "fewrel":
        dm = FewRelDataModule(train_file=args.fewrel_file, train_per_relation=135, test_per_relation=15,
                              batch_size=args.batch_size, length_grouped=True, seed=0)
    else:
        dm = WikipediaDataModule(source=args.wiki_source, num_articles=args.batch_size * (args.steps + 2) * 2,
                                 batch_size=args.batch_size, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    batches = list(islice(iter(dm.train_dataloader()), args.steps + 1))  # masks drawn once, shared by both
    torch.manual_seed(0)
    if task == "fewrel":
        module = SequenceClassifier(num_labels=dm.num_labels, architecture=arch, optimizer=optim_cfg)
    else:
        module = MLMModule(architecture=arch, optimizer=optim_cfg)
    ref_model = copy.deepcopy(module.model)

    ref_losses, ref_times = reference_loop(ref_model, batches, optim_cfg, task)
    our_losses, our_times = lightning_path(module, batches)

    # throughput over steps 1.. (step 0 warms up allocators and kernels)
    n_ex = sum(b["input_ids"].shape[0] for b in batches[1:])
    n_tok = sum(int(b["attention_mask"].sum()) for b in batches[1:])
    t_ref, t_our = sum(ref_times[1:]), sum(our_times[1:])
    mean_len = n_tok / n_ex
    print(f"\n== {task}: BERT shapes L={args.layers} H={args.hidden} heads={args.heads}, batch {args.batch_size}, "
          f"{len(batches) - 1} timed steps, mean real length {mean_len:.1f} tokens")
    print(f"reference (pad to {REF_LEN}{', decoder at all positions' if task == 'mlm' else ''}): "
          f"{n_ex / t_ref:8.2f} examples/s  {n_tok / t_ref:9.1f} tokens/s")
    print(f"lightning_ssb                                : {n_ex / t_our:8.2f} examples/s  "
          f"{n_tok / t_our:9.1f} tokens/s")
    print(f"speed-up: {t_ref / t_our:.2f}x")
    diffs = [abs(a - b) for a, b in zip(ref_losses, our_losses, strict=True)]
    for i, (a, b) in enumerate(zip(ref_losses, our_losses, strict=True)):
        print(f"  step {i}: loss reference {a:.6f}  lightning_ssb {b:.6f}")
    print(f"max |loss difference| over {len(diffs)} steps: {max(diffs):.2e} "
          f"({'agree' if max(diffs) < 1e-3 else 'DISAGREE'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["fewrel", "mlm", "both"], default="both")
    p.add_argument("--steps", type=int, default=4, help="timed steps (one more untimed warm-up step)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--fewrel-file", default="../shared/data/fewrel_train64x150.json.gz")
    p.add_argument("--wiki-source", default="sample")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 on CPU")
    for task in (["fewrel", "mlm"] if args.task == "both" else [args.task]):
        run(task, args)


if __name__ == "__main__":
    main()
