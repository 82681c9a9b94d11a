"""The W&B logger (offline fallback, WANDB_MODE=disabled, resuming a run) and the offline run-file reader."""

import os
import subprocess
import sys
import time

import pytest

from lightning_ssb.loggers import WandbLogger, read_wandb_run


@pytest.fixture
def quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))


def test_wandb_mode_disabled_is_respected(tmp_path):
    # in a fresh process: wandb keeps the mode of its first run for the rest of a process
    script = """
import os, sys
from lightning_ssb.loggers import WandbLogger
logger = WandbLogger(save_dir=sys.argv[1])
assert not logger.offline  # Lightning's offline=True would have set WANDB_MODE=dryrun
logger.log_metrics({"loss": 1.0}, step=0)
logger.log_config("a: 1\\n", {"a": 1})
logger.finalize("success")
print(os.environ["WANDB_MODE"], logger.version is not None)
"""
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["disabled", "True"]
    assert not (tmp_path / "wandb").exists()  # nothing written


def test_resume_run_continues_the_same_id_offline(quiet, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = WandbLogger(save_dir=str(tmp_path))
    first.log_metrics({"loss": 2.0}, step=1)
    run_id = first.version
    first.finalize("failed")  # interrupted: the run is finished with exit code 1, its file complete
    time.sleep(1.1)  # offline run folders are named by the second they start in, plus the id
    second = WandbLogger(save_dir=str(tmp_path))
    second.resume_run(run_id)
    second.log_metrics({"loss": 1.0}, step=2)
    assert second.version == run_id
    second.finalize("success")
    folders = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 2  # one id; offline, each part is its own file until `wandb sync`
    parts = [read_wandb_run(f, wait=60) for f in folders]
    assert [p.series("loss") for p in parts] == [[2.0], [1.0]] and all(p.finished for p in parts)
    with pytest.raises(RuntimeError, match="before the W&B run is created"):
        second.resume_run("other")


def test_wandb_record_reader_on_a_real_offline_run(tmp_path, monkeypatch):
    """Values logged through the real W&B client come back from the offline run file."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="t", dir=str(tmp_path), config={"a": {"b": 3}, "lr": 0.5})
    big = "x" * 40000  # one record longer than a 32 KiB block: split into first/middle/last chunks
    for step in range(3):
        run.log({"loss": 1.0 / (step + 1), "note": big if step == 1 else "s"})
    run.finish()
    folder = next((tmp_path / "wandb").glob("offline-run-*"))
    rec = read_wandb_run(folder, wait=60)
    assert rec.finished
    assert rec.series("loss") == [1.0, 0.5, 1.0 / 3]
    assert rec.series("note")[1] == big
    assert rec.config["a"] == {"b": 3} and rec.config["lr"] == 0.5
    assert rec.summary["loss"] == 1.0 / 3
