"""Sinks: the disk layout (never overwritten), any Lightning logger, and a real offline W&B run."""

import csv
import json
import os

import torch
from lightning.pytorch.loggers import CSVLogger

from lightning_ssb.callbacks.figures import heatmap
from lightning_ssb.callbacks.sinks import DiskSink, LoggerSink, WandbSink
from lightning_ssb.loggers.wandb_records import read_wandb_run


def _emit(sink, epoch, step, value):
    fig = heatmap(torch.rand(3, 4), "t", "head", "layer")
    sink.begin(epoch, step)
    sink.log_scalars({"ssb/blocks.0.attn.heads/node/phi": value, "ssb/epoch": float(epoch)}, step)
    sink.log_figure("ssb/heads/accuracy", fig, step)
    sink.log_table("ssb/nodes", ["layer", "node", "learned_labels"], [[0, 1, "capital_of born_in"]], step)
    sink.log_arrays({"blocks.0.attn.heads/node_accuracy": torch.full((2, 3), value)}, step)
    sink.flush(step)


def test_disk_sink_layout_and_no_overwrite(tmp_path):
    sink = DiskSink(str(tmp_path))
    _emit(sink, -1, 0, 0.25)
    _emit(sink, 0, 10, 0.5)
    _emit(sink, 0, 10, 0.75)  # the same epoch again (a re-run): kept beside, not over, the first
    assert sorted(os.listdir(tmp_path)) == ["epoch_000", "epoch_000-1", "reference"]
    ref = tmp_path / "reference"
    assert sorted(os.listdir(ref)) == ["arrays.pt", "scalars.json", "ssb__heads__accuracy.png", "ssb__nodes.csv"]
    assert json.loads((ref / "scalars.json").read_text())["ssb/blocks.0.attn.heads/node/phi"] == 0.25
    assert json.loads((tmp_path / "epoch_000" / "scalars.json").read_text())["step"] == 10
    assert json.loads((tmp_path / "epoch_000-1" / "scalars.json").read_text())["ssb/blocks.0.attn.heads/node/phi"] == 0.75
    assert (ref / "ssb__heads__accuracy.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.reader(open(ref / "ssb__nodes.csv")))
    assert rows == [["layer", "node", "learned_labels"], ["0", "1", "capital_of born_in"]]
    arrays = torch.load(tmp_path / "epoch_000" / "arrays.pt")
    assert torch.equal(arrays["blocks.0.attn.heads/node_accuracy"], torch.full((2, 3), 0.5))


def test_logger_sink_any_lightning_logger(tmp_path):
    logger = CSVLogger(str(tmp_path), name="x", version=0)
    _emit(LoggerSink(logger), 1, 7, 0.5)
    logger.save()
    rows = list(csv.DictReader(open(tmp_path / "x" / "version_0" / "metrics.csv")))
    assert rows[0]["step"] == "7" and float(rows[0]["ssb/blocks.0.attn.heads/node/phi"]) == 0.5


def test_wandb_sink_offline_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project="ssb-test", dir=str(tmp_path), mode="offline")
    sink = WandbSink(run)
    _emit(sink, -1, 0, 0.25)
    _emit(sink, 0, 12, 0.5)
    run.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    records = read_wandb_run(run_dir, wait=60)
    assert records.series("ssb/blocks.0.attn.heads/node/phi") == [0.25, 0.5]
    assert records.series("trainer/global_step") == [0, 12]  # one history row per epoch result
    assert records.series("ssb/epoch") == [-1.0, 0.0]
    images = list((run_dir / "files" / "media" / "images" / "ssb" / "heads").glob("accuracy_*.png"))
    assert len(images) == 2
    (table,) = list((run_dir / "files" / "media" / "table" / "ssb").glob("nodes_0_*.table.json"))
    assert json.loads(table.read_text())["data"] == [[0, 1, "capital_of born_in"]]
