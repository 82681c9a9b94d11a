"""Run by test_ddp.py, under ``torchrun --nproc_per_node=2`` (gloo on CPU) or as one plain process.

Usage: python ddp_script.py OUT_DIR. The learning rate is 0 so both runs analyse the same weights
at every epoch; only the way the probe is captured (one process, or two shares gathered on rank 0)
differs. The probe-train set has 3 batches, so the two ranks' shares are uneven (2 and 1).
"""

import os
import sys
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy

from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.callbacks.probe import ProbeConfig
from lightning_ssb.cli import release_process_group
from tests.callbacks.toys import ToyClassificationData, ToyTask, fast_analysis


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    L.seed_everything(0)
    model = ToyTask("classification", lr=0.0)
    data = ToyClassificationData(train_per_class=12, test_per_class=6, batch_size=8)
    monitor = SSBMonitor(probe=ProbeConfig(train_size=40, test_size=None, batch_size=16),
                         analysis=fast_analysis(crossover_draws=2, crossover_sizes=[1, 4, 32]), figures=False,
                         background=True, sinks=["disk"], dirpath=out_dir, report=False)
    # a collective that waits two minutes is an error here (the default is 30 minutes of silence)
    strategy = DDPStrategy(timeout=timedelta(seconds=120)) if world > 1 else "auto"
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=strategy, max_epochs=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        callbacks=[monitor])
    trainer.fit(model, data)
    if trainer.is_global_zero:
        print("SSB_DONE", [h["epoch"] for h in monitor.history], flush=True)
    release_process_group()  # as `python -m lightning_ssb` does: rank 1 leaves while rank 0 still analyses


if __name__ == "__main__":
    main(sys.argv[1])
