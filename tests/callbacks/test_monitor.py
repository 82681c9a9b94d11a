"""SSBMonitor end to end on real (tiny) HF BERTs: W&B offline files, disk, resume, validation."""

import csv
import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from lightning_ssb.analysis import AnalysisConfig, analyze_site
from lightning_ssb.callbacks.capture import capture_batches
from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.loggers.wandb_records import read_wandb_run
from tests.callbacks.toys import ToyClassificationData, ToyMLMData, ToyTask

FAST = dict(probe_train_size=48, probe_test_size=None, probe_batch_size=16, crossover_sizes=[1, 4, 32],
            crossover_draws=2)


def _trainer(tmp_path, monitor, max_epochs=2, logger=False, **kw):
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=logger, callbacks=[monitor, *kw.pop(
        "callbacks", [])], enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(tmp_path), enable_checkpointing=kw.pop("enable_checkpointing", False), **kw)


def _scalars(path):
    return json.loads((path / "scalars.json").read_text())


def test_fewrel_fit_logs_reference_and_epochs_to_wandb_and_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    L.seed_everything(0)
    model = ToyTask("classification")
    initial = ToyTask("classification")
    initial.load_state_dict(model.state_dict())  # the weights the reference must be computed on
    data = ToyClassificationData()
    monitor = SSBMonitor(layers=[0, 1], sites=["attn.heads", "output"], background=True, **FAST)
    logger = WandbLogger(project="ssb-test", save_dir=str(tmp_path))
    trainer = _trainer(tmp_path, monitor, logger=logger)
    trainer.fit(model, data)
    run_id = logger.experiment.id
    logger.experiment.finish()

    # disk: the reference and one folder per epoch, under <save_dir>/ssb/<run id>
    root = tmp_path / "ssb" / run_id
    assert sorted(os.listdir(root)) == ["epoch_000", "epoch_001", "reference"]
    ref = _scalars(root / "reference")
    assert ref["epoch"] == -1 and ref["step"] == 0 and _scalars(root / "epoch_001")["step"] == trainer.global_step

    # the reference equals the analysis of the untrained weights, recomputed here by hand
    probe = monitor.probe
    x_tr, y_tr = capture_batches(initial.model, probe.train_batches, [1], ["attn.heads"])
    x_te, y_te = capture_batches(initial.model, probe.test_batches, [1], ["attn.heads"])
    config = AnalysisConfig(crossover_sizes=[1, 4, 32], crossover_draws=2)
    site = analyze_site(x_tr["blocks.1.attn.heads"], y_tr, x_te["blocks.1.attn.heads"], y_te, 4, config)
    for key, value in site.scalars().items():
        logged = ref[f"ssb/blocks.1.attn.heads/{key}"]
        assert (logged is None and value != value) or logged == pytest.approx(value, abs=1e-6), key
    arrays = torch.load(root / "reference" / "arrays.pt")
    torch.testing.assert_close(arrays["blocks.1.attn.heads/node_accuracy"], site.node_accuracy)
    assert arrays["blocks.1.output/node_accuracy"].shape == (1, 32)
    # training moved the weights: the last epoch is not the reference again
    assert not torch.equal(torch.load(root / "epoch_001" / "arrays.pt")["blocks.1.attn.heads/node_accuracy"],
                           site.node_accuracy) or ref["ssb/blocks.1.attn.heads/site/acc"] != _scalars(
        root / "epoch_001")["ssb/blocks.1.attn.heads/site/acc"]

    # per-node table: one row per node of every site, labels by name
    rows = list(csv.DictReader(open(root / "epoch_001" / "ssb__nodes.csv")))
    assert len(rows) == 2 * 32 + 2 * 32
    names = {n for r in rows for n in (r["learned_labels"] + " " + r["hull_labels"]).split()}
    assert names and names <= {f"relation_{k}" for k in range(4)}

    # W&B offline run: one history row per analysis, epoch -1 first, images and tables on disk
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    records = read_wandb_run(run_dir, wait=60)
    assert records.series("ssb/epoch") == [-1.0, 0.0, 1.0]
    keys = {k for k in records.keys() if k.startswith("ssb/") and "/" not in k[len("ssb/"):].split("/", 1)[-1]
            or k.startswith("ssb/")}
    scalar_keys = {k for k in ref if k.startswith("ssb/")}
    assert 20 < len(scalar_keys) < 200  # hundreds at most per run, never one per node
    assert "ssb/blocks.0.attn.heads/node/phi" in keys
    media = run_dir / "files" / "media"
    assert len(list((media / "images" / "ssb" / "heads").glob("accuracy_*.png"))) == 3
    assert len(list((media / "images" / "ssb" / "blocks.1.attn.heads").glob("envelope_*.png"))) == 3
    assert len(list((media / "table" / "ssb").glob("nodes_*.table.json"))) == 3
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.model.bert.encoder.modules())


def test_mlm_fit_every_n_epochs_foreground_csv_logger(tmp_path):
    L.seed_everything(0)
    model = ToyTask("mlm")
    data = ToyMLMData()
    monitor = SSBMonitor(top_k_tokens=6, every_n_epochs=2, background=False, figures=False,
                         granularities=["node"], **FAST)
    logger = CSVLogger(str(tmp_path), name="csv", version=0)
    trainer = _trainer(tmp_path, monitor, max_epochs=2, logger=logger)
    trainer.fit(model, data)
    root = tmp_path / "csv" / "version_0" / "ssb"
    assert sorted(os.listdir(root)) == ["epoch_001", "reference"]  # epochs 1 (every 2nd) and the reference
    assert [h["epoch"] for h in monitor.history] == [-1, 1]
    assert monitor.probe.num_classes == 6 and monitor.probe.label_names == data.tokenizer.convert_ids_to_tokens(
        monitor.probe.class_ids)
    rows = list(csv.DictReader(open(root / "epoch_001" / "ssb__nodes.csv")))
    names = {n for r in rows for n in r["hull_labels"].split()}
    assert names and names <= set(monitor.probe.label_names)
    logged = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    epochs = [float(r["ssb/epoch"]) for r in logged if r.get("ssb/epoch")]
    assert epochs == [-1.0, 1.0]
    assert "ssb/blocks.1.attn.heads/head/phi" not in logged[0]  # granularities=["node"]
    assert model.training is True or trainer.state.finished


def test_resume_continues_the_same_history(tmp_path):
    L.seed_everything(0)
    data = ToyClassificationData()
    out = tmp_path / "ssb"
    # saved at the end of epoch 0's validation, which runs before on_train_epoch_end: before epoch 0
    # is analysed (the default, at the train epoch's end, would already hold epoch 0)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="val_end", save_top_k=-1,
                           save_on_train_epoch_end=False)
    first = SSBMonitor(dirpath=str(out), figures=False, background=False, **FAST)
    _trainer(tmp_path, first, max_epochs=1, callbacks=[ckpt], enable_checkpointing=True).fit(
        ToyTask("classification"), data)
    assert [h["epoch"] for h in first.history] == [-1, 0]
    saved = torch.load(tmp_path / "ckpt" / "val_end.ckpt", weights_only=False)["callbacks"]
    (state,) = [v for k, v in saved.items() if k.startswith("SSBMonitor")]
    assert [h["epoch"] for h in state["history"]] == [-1] and state["probe"]["seed"] == 0
    # a new monitor with other sizes and seed: the checkpoint's probe state wins
    second = SSBMonitor(dirpath=str(out), figures=False, seed=7, **{**FAST, "probe_train_size": 20})
    _trainer(tmp_path, second, max_epochs=2).fit(ToyTask("classification"), data,
                                                   ckpt_path=str(tmp_path / "ckpt" / "val_end.ckpt"))
    assert second.probe.train_indices == first.probe.train_indices and second.probe.seed == first.probe.seed
    # the reference is not redone; epoch 0 is, on the restored weights, beside the first run's folder
    assert [h["epoch"] for h in second.history] == [-1, 0, 1]
    assert sorted(os.listdir(out)) == ["epoch_000", "epoch_000-1", "epoch_001", "reference"]
    a, b = _scalars(out / "epoch_000"), _scalars(out / "epoch_000-1")
    for key in a.keys() - {"ssb/analysis_seconds"}:
        assert a[key] == b[key] or (a[key] is None and b[key] is None), key  # same probe, same weights


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": [0, 5]}, "layers"),
    ({"sites": ["attn.scores"]}, "sites"),
    ({"granularities": ["neuron"]}, "granularities"),
    ({"position_rule": "masked"}, "position_rule"),
    ({"theta": 1.5}, "theta"),
    ({"every_n_epochs": 0}, "every_n_epochs"),
    ({"top_k_tokens": "most"}, "top_k_tokens"),
    ({"sinks": ["wandb"]}, "WandbLogger"),
])
def test_setup_rejects_bad_arguments(tmp_path, kwargs, message):
    monitor = SSBMonitor(**{**FAST, **kwargs})
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, monitor).fit(ToyTask("classification"), ToyClassificationData())
