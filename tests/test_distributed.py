"""Real ``torchrun`` launches: 2 CPU processes, gloo backend, on the quick-start config (a fit; a stop and resume)."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lightning_ssb.loggers import read_wandb_run
from tests.launch import failure_text, free_port, run_tree
from tests.test_end_to_end import SMALL

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes_on_the_quickstart_config(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "LIGHTNING_SSB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "lightning_ssb", "fit", "--config", "quickstart_mlm.yaml", *SMALL,
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1",
           "--trainer.log_every_n_steps", "1", "--data.init_args.num_articles", "256"]
    res = run_tree(cmd, tmp_path, env, timeout=600)
    assert res.returncode == 0, failure_text(res.stderr)
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


class RecordRankDraws(Callback):
    """Every rank writes, per training batch, its labels and its loss before the gradients are averaged
    (which its own dropout masks decided) to ``$SSB_RECORD/rank<r>.jsonl``."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        row = {"epoch": trainer.current_epoch, "batch": batch_idx, "loss": float(outputs["loss"]),
               "labels": batch["labels"].tolist()}
        with open(Path(os.environ["SSB_RECORD"]) / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


class StopAfterFirstEpoch(Callback):
    """A stop at the end of epoch 0 (after last.ckpt is written), as a preempted job would be."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def rows(folder: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_ddp_resume_restores_every_ranks_random_state(tmp_path):
    """Two gloo ranks, stopped after epoch 0 and resumed with --ckpt_path last, train epoch 1 exactly as the
    uninterrupted run did on each rank: the same batches and the same per-rank losses, i.e. the same dropout
    masks. The ranks' sentences differ in length, so their random states part after the first step; before,
    every rank got rank 0's state back and rank 1 drew other dropout masks than it would have."""
    fit = ["fit", "--config", "quickstart_fewrel.yaml", *SMALL, "--model.init_args.pretrained", "null",
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "2",
           "--data.init_args.train_per_relation", "4", "--data.init_args.test_per_relation", "1",
           "--data.init_args.batch_size", "16", "--trainer.log_every_n_steps", "1", "--ssb", "null",
           "--trainer.callbacks+", "tests.test_distributed.RecordRankDraws"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "LIGHTNING_SSB_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def launch(folder: str, *extra: str) -> Path:
        record = tmp_path / "records" / folder
        record.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "lightning_ssb", *fit, *extra]
        res = run_tree(cmd, tmp_path / folder.split("_")[0], {**env, "SSB_RECORD": str(record)}, timeout=600)
        assert res.returncode == 0, failure_text(res.stderr)
        return record

    for name in ("straight", "stopped"):
        (tmp_path / name).mkdir()
    straight = launch("straight")
    first = launch("stopped", "--trainer.callbacks+", "tests.test_distributed.StopAfterFirstEpoch")
    resumed = launch("stopped_resume", "--ckpt_path", "last")
    for rank in (0, 1):
        expected = rows(straight, rank)
        assert {r["epoch"] for r in expected} == {0, 1} and len(expected) >= 8
        assert [r for r in rows(first, rank)] == [r for r in expected if r["epoch"] == 0]
        assert [r for r in rows(resumed, rank)] == [r for r in expected if r["epoch"] == 1], rank
    ckpt = torch.load(tmp_path / "stopped/runs/quickstart/fewrel/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)
    saved = next(v for k, v in ckpt["callbacks"].items() if k.startswith("RNGState"))
    assert len(saved["rng_per_rank"]) == 2 and not torch.equal(saved["rng_per_rank"][0]["torch"],
                                                                saved["rng_per_rank"][1]["torch"])
