"""A real ``torchrun`` launch: 2 CPU processes, gloo backend, on the quick-start config."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_ssb.loggers import read_wandb_run
from tests.test_end_to_end import SMALL


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_on_the_quickstart_config(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "LIGHTNING_SSB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "lightning_ssb", "fit", "--config", "quickstart_mlm.yaml", *SMALL,
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1",
           "--trainer.log_every_n_steps", "1", "--data.init_args.num_articles", "256"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    save = tmp_path / "runs/quickstart/mlm"
    runs = list((save / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs  # one W&B run, written by rank 0, never one per rank
    run = read_wandb_run(runs[0], wait=60)
    # 256 articles, 10% validation -> 230 train; 2 ranks x batch 32 -> ceil(115 / 32) = 4 steps
    assert run.series("trainer/global_step")[-1] in (3, 4)
    assert len(run.series("val/loss")) == 1
    ckpt = torch.load(save / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert run.config["trainer"]["strategy"] == "ddp" and str(run.config["trainer"]["devices"]) == "2"
    assert Path(save / "config.yaml").is_file()
