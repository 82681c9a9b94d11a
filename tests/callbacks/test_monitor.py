"""SSBMonitor end to end on real (tiny) HF BERTs: W&B offline files, disk, resume, faults, validation."""

import csv
import json
import os

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from lightning_ssb.callbacks.monitor import SSBMonitor
from lightning_ssb.callbacks.probe import ProbeConfig
from lightning_ssb.capture import capture_batches
from lightning_ssb.loggers.wandb_records import read_wandb_run
from lightning_ssb.results.build import AnalysisPlan, EpochSnapshot, PenaltyBook, site_results
from lightning_ssb.results.keys import wandb_key
from lightning_ssb.results.sinks import SinkError
from tests.callbacks.toys import ToyClassificationData, ToyMLMData, ToyTask, fast_analysis

ANALYSIS = fast_analysis(crossover_sizes=[1, 4, 32], crossover_draws=2)
FAST = dict(probe=ProbeConfig(train_size=48, test_size=None, batch_size=16), analysis=ANALYSIS,
            report=False)  # the end-of-fit report has its own tests (tests/report, test_quickstart)


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
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))  # offline artifacts are staged here
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

    # the reference equals the analysis of the untrained weights, recomputed here from a fresh capture
    probe = monitor.probe
    x_tr, y_tr = capture_batches(initial.model, probe.train_batches, [1], ["attn.heads"])
    x_te, y_te = capture_batches(initial.model, probe.test_batches, [1], ["attn.heads"])
    snap = EpochSnapshot(-1, 0, x_tr, x_te, y_tr, y_te, 4, probe.label_names)
    expected, arrays_expected, _, _ = site_results(snap, ANALYSIS, plan=AnalysisPlan(nulls=[]))
    assert expected  # keys of blocks.1.attn.heads
    for key, value in expected.items():
        logged = ref[key]
        assert (logged is None and value != value) or logged == pytest.approx(value, abs=1e-6), key
    arrays = torch.load(root / "reference" / "arrays.pt")
    for key, value in arrays_expected.items():
        torch.testing.assert_close(arrays[key], value, equal_nan=True)
    assert arrays["blocks.1.output/shared/node/accuracy"].shape == (32,)
    # training moved the weights: the last epoch's node accuracies are not the reference's
    last = torch.load(root / "epoch_001" / "arrays.pt")["blocks.1.attn.heads/shared/node/accuracy"]
    assert not torch.equal(last, arrays["blocks.1.attn.heads/shared/node/accuracy"])

    # per-node table: one row per node of every site, labels by name
    rows = list(csv.DictReader(open(root / "epoch_001" / "nodes.csv")))
    assert len(rows) == 2 * 32 + 2 * 32
    names = {n for r in rows for n in (r["learned_labels"] + " " + r["hull_labels"]).split()}
    assert names and names <= {f"relation_{k}" for k in range(4)}

    # W&B offline run: one history row per analysis, epoch -1 first, the disk's scalars under their W&B keys
    # (one section per statistic), each plotted against ssb/epoch, images, tables, the results folder
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    records = read_wandb_run(run_dir, wait=60)
    assert records.series("ssb/epoch") == [-1.0, 0.0, 1.0]
    scalar_keys = {wandb_key(k) for k in ref if k.startswith("ssb/")}
    assert scalar_keys <= records.keys()
    assert {k: records.step_metrics.get(k) for k in scalar_keys - {"ssb/epoch"}} == dict.fromkeys(
        scalar_keys - {"ssb/epoch"}, "ssb/epoch")
    key = "ssb/blocks.0.attn.heads/shared/node/acc_mean"
    assert records.series("ssb-acc_mean/shared/node/L00-attn-heads") == [
        _scalars(root / e)[key] for e in ("reference", "epoch_000", "epoch_001")]
    media = run_dir / "files" / "media"  # figures at the reference and the last epoch (figures_every_n_epochs null)
    assert len(list((media / "images" / "ssb-figures" / "accuracy").glob("heads_*.png"))) == 2
    assert len(list((media / "images" / "ssb-figures" / "envelope").glob("L01-attn-heads_*.png"))) == 2
    assert len(list((media / "table" / "ssb").glob("nodes_*.table.json"))) == 3
    (artifact,) = [a for a in records.artifacts if a["type"] == "ssb-results"]  # once, at the end of fit
    assert artifact["name"] == f"ssb-results-{run_id}"
    assert sorted(artifact["files"]) == sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.model.bert.encoder.modules())


class PretrainedToy(ToyTask):
    """A toy whose weights count as pre-trained (the monitor reads ``hparams.pretrained``)."""

    def __init__(self) -> None:
        super().__init__("classification")
        self.save_hyperparameters({"pretrained": "toy-checkpoint"})


def test_init_reference_is_a_seeded_random_init_that_leaves_training_alone(tmp_path, capsys):
    data = ToyClassificationData()
    runs = {}
    for init in (True, False):
        L.seed_everything(0)
        model = PretrainedToy()
        monitor = SSBMonitor(layers=[1], init_reference=init, init_seed=5, figures=False, sensitivity=False,
                             dirpath=str(tmp_path / f"ssb_{init}"), **FAST)
        _trainer(tmp_path, monitor, max_epochs=1).fit(model, data)
        runs[init] = (model, monitor)
    model, monitor = runs[True]
    root = tmp_path / "ssb_True"
    assert sorted(os.listdir(root)) == ["epoch_000", "init", "reference"]
    assert sorted(os.listdir(tmp_path / "ssb_False")) == ["epoch_000", "reference"]
    # training drew the same numbers with and without the extra initialisation
    for a, b in zip(model.parameters(), runs[False][0].parameters(), strict=True):
        assert torch.equal(a, b)
    # init/ is the analysis of BertForSequenceClassification(config) built under manual_seed(5), at the run's penalties
    torch.manual_seed(5)
    fresh = type(model.model)(model.model.config)
    x_tr, y_tr = capture_batches(fresh, monitor.probe.train_batches, [1], ["attn.heads"])
    x_te, y_te = capture_batches(fresh, monitor.probe.test_batches, [1], ["attn.heads"])
    snap = EpochSnapshot(-3, 0, x_tr, x_te, y_tr, y_te, 4, monitor.probe.label_names)
    expected, _, _, _ = site_results(snap, ANALYSIS, plan=AnalysisPlan(book=PenaltyBook(monitor.book.penalties)))
    logged = _scalars(root / "init")
    for key, value in expected.items():
        assert (logged[key] is None and value != value) or logged[key] == pytest.approx(value, abs=1e-9), key
    assert json.loads((root / "init" / "meta.json").read_text())["penalties"] == monitor.book.penalties.as_dict()
    # the foreground analysis (a CPU run) says what training waits for
    err = capsys.readouterr().err
    assert "lightning_ssb: SSBMonitor: waiting for random init" in err or "waiting for before training" in err


def test_mlm_fit_every_n_epochs_foreground_csv_logger(tmp_path):
    L.seed_everything(0)
    model = ToyTask("mlm")
    data = ToyMLMData()
    monitor = SSBMonitor(every_n_epochs=2, background=False, figures=False, report=False,
                         probe=ProbeConfig(train_size=48, test_size=None, batch_size=16, top_k_tokens=6),
                         analysis=fast_analysis(crossover_sizes=[1, 4, 32], crossover_draws=2,
                                                granularities=("node",)))
    logger = CSVLogger(str(tmp_path), name="csv", version=0)
    trainer = _trainer(tmp_path, monitor, max_epochs=2, logger=logger)
    trainer.fit(model, data)
    root = tmp_path / "csv" / "version_0" / "ssb"  # a logger with its own folder: no run-id level
    assert sorted(os.listdir(root)) == ["epoch_001", "reference"]  # epochs 1 (every 2nd) and the reference
    assert [h["epoch"] for h in monitor.history] == [-1, 1]
    assert monitor.probe.num_classes == 6 and monitor.probe.label_names == data.tokenizer.convert_ids_to_tokens(
        monitor.probe.class_ids)
    rows = list(csv.DictReader(open(root / "epoch_001" / "nodes.csv")))
    names = {n for r in rows for n in r["hull_labels"].split()}
    assert names and names <= set(monitor.probe.label_names)
    logged = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    epochs = [float(r["ssb/epoch"]) for r in logged if r.get("ssb/epoch")]
    assert epochs == [-1.0, 1.0]
    columns = set(logged[0])
    assert "ssb/blocks.1.attn.heads/shared/node/phi" in columns
    assert not any("/head/" in c for c in columns)  # granularities=("node",)


def test_resume_logs_every_epoch_once_in_the_same_folder(tmp_path):
    """A fit stopped after epoch 0's checkpoint and resumed: epochs -1, 0, 1 each stored exactly once."""
    L.seed_everything(0)
    data = ToyClassificationData()
    out = tmp_path / "ssb"
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last", save_top_k=1,
                           enable_version_counter=False)
    first = SSBMonitor(dirpath=str(out), figures=False, background=True, **FAST)
    _trainer(tmp_path, first, max_epochs=1, callbacks=[ckpt], enable_checkpointing=True).fit(
        ToyTask("classification"), data)
    assert [h["epoch"] for h in first.history] == [-1, 0]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    (state,) = [v for k, v in saved.items() if k.startswith("SSBMonitor")]
    # written after epoch 0 was captured, while its analysis ran: captured, not yet logged
    assert state["captured"] == [-1, 0] and [h["epoch"] for h in state["history"]] == [-1]
    assert state["probe"]["seed"] == 0
    # a new monitor with other sizes and seed: the checkpoint's probe state wins; epoch 0 is on disk already
    second = SSBMonitor(dirpath=str(out), figures=False, **{**FAST, "probe": ProbeConfig(train_size=20, seed=7)})
    _trainer(tmp_path, second, max_epochs=2).fit(ToyTask("classification"), data,
                                                   ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert second.probe.train_indices == first.probe.train_indices and second.probe.seed == first.probe.seed
    assert [h["epoch"] for h in second.history] == [-1, 0, 1]
    assert sorted(os.listdir(out)) == ["epoch_000", "epoch_001", "reference"]  # nothing analysed twice


def test_resume_analyses_the_checkpoint_epoch_when_its_result_was_lost(tmp_path):
    L.seed_everything(0)
    data = ToyClassificationData()
    out = tmp_path / "ssb"
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last", save_top_k=1)
    first = SSBMonitor(dirpath=str(out), figures=False, background=True, **FAST)
    _trainer(tmp_path, first, max_epochs=1, callbacks=[ckpt], enable_checkpointing=True).fit(
        ToyTask("classification"), data)
    expected = _scalars(out / "epoch_000")
    os.remove(out / "epoch_000" / "scalars.json")  # as if the process died before epoch 0 was written
    second = SSBMonitor(dirpath=str(out), figures=False, background=False, **FAST)
    _trainer(tmp_path, second, max_epochs=2).fit(ToyTask("classification"), data,
                                                   ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [h["epoch"] for h in second.history] == [-1, 0, 1]
    again = _scalars(out / "epoch_000")  # the same weights and probe: the same numbers
    assert again.keys() == expected.keys()
    for key in expected.keys() - {"ssb/analysis_seconds"}:
        assert again[key] == expected[key], key


def test_a_failing_disk_sink_keeps_the_checkpoint_and_the_other_sinks(tmp_path):
    L.seed_everything(0)
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the results folder should be")
    csv_logger = CSVLogger(str(tmp_path), name="csv", version=0)
    monitor = SSBMonitor(dirpath=str(blocker / "ssb"), figures=False, background=True, **FAST)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last", save_top_k=1)
    trainer = _trainer(tmp_path, monitor, max_epochs=2, logger=csv_logger, callbacks=[ckpt],
                       enable_checkpointing=True)
    with pytest.warns(UserWarning, match="the disk sink could not write"):
        with pytest.raises(SinkError) as err:
            trainer.fit(ToyTask("classification"), ToyClassificationData())
    assert str(err.value).startswith(f"SSBMonitor: the disk sink could not write {blocker / 'ssb' / 'reference'}: ")
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["epoch"] == 1  # the model survived
    csv_logger.save()
    logged = list(csv.DictReader(open(tmp_path / "csv" / "version_0" / "metrics.csv")))
    assert [float(r["ssb/epoch"]) for r in logged if r.get("ssb/epoch")] == [-1.0, 0.0, 1.0]  # the others got all


def test_a_failing_artifact_upload_keeps_the_checkpoint_the_disk_and_the_wandb_history(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))

    log_artifact = wandb.sdk.wandb_run.Run.log_artifact

    def down(self, artifact, *args, **kwargs):  # the results folder's upload fails (W&B logs tables as artifacts too)
        if getattr(artifact, "type", None) == "ssb-results":
            raise ConnectionError("upload refused")
        return log_artifact(self, artifact, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log_artifact", down)
    L.seed_everything(0)
    logger = WandbLogger(project="ssb-test", save_dir=str(tmp_path))
    monitor = SSBMonitor(layers=[1], figures=False, **FAST)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last", save_top_k=1)
    trainer = _trainer(tmp_path, monitor, max_epochs=1, logger=logger, callbacks=[ckpt], enable_checkpointing=True)
    with pytest.warns(UserWarning, match="the wandb sink could not log the results folder"):
        with pytest.raises(SinkError, match="ConnectionError: upload refused"):
            trainer.fit(ToyTask("classification"), ToyClassificationData())
    run_id = logger.experiment.id
    logger.experiment.finish()
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["epoch"] == 0
    root = tmp_path / "ssb" / run_id
    assert sorted(p.parent.name for p in root.glob("*/scalars.json")) == ["epoch_000", "reference"]
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    assert read_wandb_run(run_dir, wait=60).series("ssb/epoch") == [-1.0, 0.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"sites": ["attn.scores"]}, "sites"),
    ({"every_n_epochs": 0}, "every_n_epochs"),
    ({"sinks": ["tensorboard"]}, "sinks"),
    ({"layers": [0, 0]}, "layers"),
])
def test_arguments_are_checked_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SSBMonitor(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": [0, 5]}, r"layers must be in 0\.\.1"),
    ({"probe": ProbeConfig(position_rule="masked")}, "position_rule 'masked' does not fit task 'classification'"),
])
def test_check_against_the_model_before_fit(kwargs, message):
    monitor = SSBMonitor(**kwargs)
    with pytest.raises(ValueError, match=message):
        monitor.check(ToyTask("classification"), ToyClassificationData())


def test_sinks_wandb_without_a_wandb_logger(tmp_path):
    monitor = SSBMonitor(sinks=["wandb"], **FAST)
    with pytest.raises(ValueError, match="no WandbLogger"):
        _trainer(tmp_path, monitor).fit(ToyTask("classification"), ToyClassificationData())


def test_probe_settings_are_validated_once_by_their_dataclass():
    with pytest.raises(ValueError, match="probe.train_size must be null or an integer >= 2, got 1"):
        ProbeConfig(train_size=1)
    with pytest.raises(ValueError, match="top_k_tokens"):
        ProbeConfig(top_k_tokens="most")
    assert ProbeConfig().rule_for("mlm") == "masked" and ProbeConfig().rule_for("classification") == "cls"


def test_the_schedule_computes_what_a_full_analysis_computes_where_both_ran(tmp_path):
    """nulls, crossover and sensitivity at the reference and the last epoch only (the defaults): every
    scalar a scheduled state logs equals the full, unscheduled analysis of the same state."""
    data = ToyClassificationData()
    roots = {}
    for name, modes in (("scheduled", {}), ("full", {"null_mode": "all", "crossover_mode": "all"})):
        L.seed_everything(0)
        analysis = fast_analysis(crossover_sizes=[1, 4], crossover_draws=2, null_mode=modes.get("null_mode", "ends"),
                                 crossover_mode=modes.get("crossover_mode", "ends"))
        monitor = SSBMonitor(layers=[1], figures=False, dirpath=str(tmp_path / name), report=False,
                             probe=FAST["probe"], analysis=analysis)
        _trainer(tmp_path, monitor, max_epochs=3).fit(ToyTask("classification"), data)
        roots[name] = tmp_path / name
    for state in ("reference", "epoch_000", "epoch_001", "epoch_002"):
        scheduled, full = _scalars(roots["scheduled"] / state), _scalars(roots["full"] / state)
        middle = state in ("epoch_000", "epoch_001")  # not an end of the run
        assert any("/null_train/" in k for k in scheduled) != middle      # nulls at the ends only
        extra = set(full) - set(scheduled)
        assert (not extra) if not middle else extra and all("/null_" in k for k in extra)
        for key, value in scheduled.items():
            if key != "ssb/analysis_seconds":
                assert value == full[key], (state, key)
        has_crossover = (roots["scheduled"] / state / "crossover.csv").exists()
        assert has_crossover != middle and (roots["full"] / state / "crossover.csv").exists()


def test_two_monitors_in_one_trainer_keep_their_own_results_and_state(tmp_path):
    """Two SSBMonitors in one Trainer (different layers, sites and prefix): Lightning accepts them (each has
    its own ``state_key``), each logs its own sites under its own prefix into its own folder, and each gets
    its own state back from the checkpoint."""
    data = ToyClassificationData()
    heads = SSBMonitor(layers=[0], sites=["attn.heads"], dirpath=str(tmp_path / "heads"), figures=False,
                       background=False, **FAST)
    outputs = SSBMonitor(layers=[1], sites=["output"], prefix="ssb_out", dirpath=str(tmp_path / "outputs"),
                         figures=False, background=False, **FAST)
    assert heads.state_key != outputs.state_key
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last", save_top_k=1,
                           enable_version_counter=False)
    L.seed_everything(0)
    _trainer(tmp_path, heads, max_epochs=1, callbacks=[outputs, ckpt], enable_checkpointing=True).fit(
        ToyTask("classification"), data)
    for monitor, folder, key in ((heads, "heads", "ssb/blocks.0.attn.heads/shared/node/live"),
                                 (outputs, "outputs", "ssb_out/blocks.1.output/shared/node/live")):
        assert [h["epoch"] for h in monitor.history] == [-1, 0]
        scalars = _scalars(tmp_path / folder / "epoch_000")
        assert key in scalars
        assert not any(k.split("/")[1].startswith("blocks.1" if folder == "heads" else "blocks.0") for k in scalars
                       if k.count("/") > 2)  # each monitor's own sites only
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert {heads.state_key, outputs.state_key} <= saved.keys()
    assert saved[heads.state_key]["probe"] == heads.state_dict()["probe"]


def test_beside_cpu_training_the_penalties_come_first_and_the_analysis_runs_nicer_until_training_ends(tmp_path):
    """background=True on a CPU: the run's penalties are chosen before training goes on (so the first state's
    analysis finds them), every state's forked processes run ``background_nice`` nicer while training runs
    and at full priority once it is over, and the results are those of a fit that waits for each state."""
    from lightning_ssb.parallel import child_nice

    runs = {}
    for background in (False, True):
        L.seed_everything(0)
        monitor = SSBMonitor(layers=[0, 1], background=background, figures=False,
                             dirpath=str(tmp_path / str(background)), **FAST)
        seen = []

        def analyse(snapshot, plan, *args, _original=monitor.engine.analyse, _seen=seen, **kwargs):
            _seen.append((snapshot.epoch, child_nice(), plan.book.penalties is not None))
            return _original(snapshot, plan, *args, **kwargs)

        monitor.engine.analyse = analyse
        _trainer(tmp_path, monitor, max_epochs=3).fit(ToyTask("classification"), ToyClassificationData())
        runs[background] = (seen, tmp_path / str(background))
    assert runs[False][0] == [(-1, 0, False), (0, 0, True), (1, 0, True), (2, 0, True)]
    assert runs[True][0] == [(-1, 19, True), (0, 19, True), (1, 19, True), (2, 0, True)]
    for folder in ("reference", "epoch_000", "epoch_002"):
        waited, beside = (_scalars(runs[b][1] / folder) for b in (False, True))
        waited.pop("ssb/analysis_seconds")
        beside.pop("ssb/analysis_seconds")
        assert beside == waited, folder
    meta = json.loads((runs[True][1] / "reference" / "meta.json").read_text())
    assert "penalties (cross-validation)" in meta["seconds"]  # chosen ahead, still timed as the first state's
