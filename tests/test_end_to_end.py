"""End to end through the real CLI, in-process: MLM pre-training, then FewRel from its checkpoint.

Each stage is a short fit of the shipped quick-start config (narrowed further for test time), with
W&B offline; the offline run file is read back and checked for the metrics and the config.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from lightning_ssb.cli import main
from lightning_ssb.loggers import read_wandb_run
from tests.interrupts import hold_analysis_then_interrupt, sigint_restored
from tests.values import same

# 2 layers x 4 heads of 12 nodes: fast, still several heads and nodes per head for the monitor
SMALL = ["--model.init_args.architecture.num_hidden_layers", "2", "--model.init_args.architecture.hidden_size", "48",
         "--model.init_args.architecture.num_attention_heads", "4",
         "--model.init_args.architecture.intermediate_size", "96", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # tokenised once for every run of this module


@contextmanager
def in_folder(folder: Path, cache: Path):
    """Run the CLI in ``folder`` with offline W&B; the working directory and environment are restored."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("LIGHTNING_SSB_CACHE", str(cache))
        yield


@pytest.fixture(autouse=True)
def _env(workdir, cache):
    with in_folder(workdir, cache):
        yield


def fast_monitor(folder: Path, name: str = "quickstart_mlm.yaml") -> str:
    """An extra config: the shipped monitor, with an analysis small enough for a test (two crossover
    sizes; one read-out family and no null where the analysis has them). Only the changed settings: the
    monitor's config group keeps the others, and trainer.callbacks stays as shipped."""
    import dataclasses

    from lightning_ssb.analysis import AnalysisConfig

    names = {f.name for f in dataclasses.fields(AnalysisConfig)}
    analysis = {"crossover_sizes": [1, 4], **{k: v for k, v in (("readout", "shared"), ("null_mode", "off"))
                                              if k in names}}
    # report: the end-of-fit report is tested by tests/test_quickstart.py
    path = folder / f"fast_{name}"
    path.write_text(yaml.safe_dump({"ssb": {"init_args": {"analysis": analysis, "report": False}}}))
    return str(path)


def only_run(save_dir: Path) -> Path:
    runs = sorted((save_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def assert_monitor_logged(save: Path, run, epochs: int) -> None:
    """The quick-start monitor: the reference and one analysis per epoch, in W&B and on disk."""
    assert run.series("ssb/epoch") == [-1, *range(epochs)]
    assert "ssb-acc_mean/shared/node/L00-attn-heads" in run.keys()  # W&B: one section per statistic
    assert run.step_metrics["ssb-acc_mean/shared/node/L00-attn-heads"] == "ssb/epoch"
    disk = [p for p in (save / "ssb").glob("*/*") if p.is_dir()]
    assert sorted(p.name for p in disk) == sorted(["reference", *(f"epoch_{e:03d}" for e in range(epochs))])
    for folder in disk:
        assert (folder / "scalars.json").is_file()


def assert_loss_fell(series: list[float]) -> None:
    assert len(series) >= 3, series
    assert sum(series[-2:]) / 2 < series[0] - 0.05, series


MLM = ["fit", "--config", "quickstart_mlm.yaml", *SMALL, "--data.init_args.num_articles", "320",
       "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "2"]


@pytest.fixture(scope="module")
def mlm_stage(workdir, cache):
    with in_folder(workdir, cache):
        return main([*MLM, "--config", fast_monitor(workdir)])


@pytest.mark.slow
def test_mlm_stage_trains_and_logs(mlm_stage, workdir):
    save = workdir / "runs/quickstart/mlm"
    assert (save / "checkpoints/last.ckpt").is_file()
    run = read_wandb_run(only_run(save), wait=60)
    assert run.finished  # the CLI closed the W&B run: its exit record is in the file
    assert run.name == "quickstart_mlm-seed0"  # named after its config and seed (the config names none)
    assert_loss_fell(run.series("train/loss"))
    for key in ("val/loss", "val/ppl", "val/acc", "lr-AdamW/pg1"):
        assert len(run.series(key)) >= 1, (key, sorted(run.keys()))
    assert len(run.series("val/loss")) == 2  # one per epoch
    # the resolved config: pushed to the W&B run config, and saved beside the run and in the run's files
    assert run.config["model"]["class_path"] == "lightning_ssb.models.MLMModule"
    assert run.config["model"]["init_args"]["architecture"]["hidden_size"] == 48
    assert run.config["data"]["init_args"]["num_articles"] == 320
    saved = yaml.safe_load((save / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2
    assert (only_run(save) / "files/lightning_config.yaml").is_file()
    assert_monitor_logged(save, run, epochs=2)
    # what produced it: the run record and every results folder name the versions (and the git commit)
    from lightning_ssb.provenance import versions

    record = json.loads((save / "run.json").read_text())
    assert record["provenance"]["versions"] == versions()
    assert record["provenance"]["versions"]["torch"] == torch.__version__
    for meta in (save / "ssb").glob("*/*/meta.json"):
        assert json.loads(meta.read_text())["provenance"] == record["provenance"], meta


@pytest.mark.slow  # needs the MLM fit of the mlm_stage fixture
def test_fewrel_stage_starts_from_the_mlm_checkpoint(mlm_stage, workdir):
    cli = main(["fit", "--config", "quickstart_fewrel.yaml", *SMALL, "--trainer.max_epochs", "3",
                "--trainer.log_every_n_steps", "4", "--config", fast_monitor(workdir, "quickstart_fewrel.yaml")])
    clf = cli.model
    # the architecture came from the checkpoint (the quick-start config names none); K from the data
    assert clf.model.config.hidden_size == 48 and clf.model.config.num_labels == 64
    assert clf.hparams["pretrained"] is None  # the classifier's own checkpoints stand alone
    save = workdir / "runs/quickstart/fewrel"
    run = read_wandb_run(only_run(save), wait=60)
    assert_loss_fell(run.series("train/loss"))
    for key in ("val/loss", "val/acc", "val/f1_macro"):
        assert len(run.series(key)) == 3, key
    assert run.config["model"]["class_path"] == "lightning_ssb.models.SequenceClassifier"
    assert run.config["data"]["init_args"]["train_per_relation"] == 40
    assert_monitor_logged(save, run, epochs=3)


@pytest.mark.slow  # needs the MLM fit of the mlm_stage fixture
def test_validate_subcommand_restores_the_checkpoint(mlm_stage, workdir):
    ckpt = workdir / "runs/quickstart/mlm/checkpoints/last.ckpt"
    cli = main(["validate", "--config", "quickstart_mlm.yaml", *SMALL, "--data.init_args.num_articles", "320",
                "--ckpt_path", str(ckpt), "--trainer.logger", "false", "--trainer.callbacks", "[]", "--ssb", "null"])
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    ours = cli.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items() if k.startswith("model."))
    assert "val/loss" in cli.trainer.callback_metrics and "val/ppl" in cli.trainer.callback_metrics


def test_missing_ckpt_path_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--config", "quickstart_mlm.yaml", "--ckpt_path", "nothere.ckpt"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "lightning_ssb: error: ckpt_path: nothere.ckpt: no such file"


NOT_COMPARED = {"ssb/analysis_seconds", "_runtime", "_timestamp", "_step"}  # wall-clock and W&B's own counters


def by_step(runs) -> dict:
    """``{(key, trainer/global_step): value}`` over the history rows of one or more W&B run files."""
    out = {}
    for run in runs:
        for row in run.history:
            step = row.get("trainer/global_step")
            for key, value in row.items():
                if key not in NOT_COMPARED and step is not None:
                    out.setdefault((key, step), []).append(value)
    return out


@pytest.mark.slow
def test_interrupted_and_resumed_fit_equals_the_uninterrupted_run(mlm_stage, workdir, cache, tmp_path):
    """Ctrl-C in epoch 2, then `fit --ckpt_path last`: the same W&B run id, the same results folder,
    every epoch analysed once, and every logged value equal to the uninterrupted run of the same seed.

    Equal means equal: the same process, the same deterministic CPU kernels, and the random state
    (masking, data order, dropout) restored from the checkpoint. Only wall-clock keys are left out."""
    with in_folder(tmp_path, cache):
        with sigint_restored(), pytest.raises(SystemExit) as stopped:  # Ctrl-C after batch 3 of epoch 1
            main([*MLM, "--config", fast_monitor(tmp_path), "--trainer.callbacks+", "tests.interrupts.InterruptAt"])
        assert stopped.value.code == 1
        save = tmp_path / "runs/quickstart/mlm"
        record = json.loads((save / "run.json").read_text())
        assert record["status"] == "interrupted"
        interrupted = torch.load(save / "checkpoints/interrupted.ckpt", map_location="cpu", weights_only=False)
        last = torch.load(save / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
        assert last["epoch"] == 0 and interrupted["global_step"] > last["global_step"]  # both kept
        assert last["lightning_ssb_run"]["run_id"] == record["run_id"]
        resumed = main([*MLM, "--config", fast_monitor(tmp_path), "--ckpt_path", "last"])
        assert resumed.trainer.global_step == mlm_stage.trainer.global_step

    runs = [read_wandb_run(p, wait=60) for p in sorted((save / "wandb").glob("offline-run-*"))]
    assert len(runs) == 2 and {p.name.rsplit("-", 1)[1] for p in (save / "wandb").glob("offline-run-*")} == {
        record["run_id"]}  # one W&B run id, continued (offline: two files that `wandb sync` joins)
    assert json.loads((save / "run.json").read_text())["status"] == "finished"
    assert sorted(p.name for p in (save / "ssb").iterdir()) == [record["run_id"]]  # one results folder
    folders = sorted(p.name for p in (save / "ssb" / record["run_id"]).iterdir())
    assert folders == ["epoch_000", "epoch_001", "reference"]  # nothing analysed twice or left out

    reference = by_step([read_wandb_run(only_run(workdir / "runs/quickstart/mlm"), wait=60)])
    got = by_step(runs)
    assert got.keys() == reference.keys()
    assert sum(1 for key, _ in got if key.startswith("ssb-")) > 100
    media = {k.rsplit("/", 1)[0] + "/" for k, _ in reference if k.endswith("/_type")}  # images, tables
    numbers = [(k, step) for k, step in reference if not any(k.startswith(m) for m in media)]
    assert {k for k, _ in numbers} >= {"train/loss", "val/loss", "lr-AdamW/pg1", "ssb/epoch"}
    for key_step in numbers:
        # rows between last.ckpt and the Ctrl-C were logged by both parts, with the same values
        values = got[key_step]
        assert all(same(v, reference[key_step][0]) for v in values), (key_step, values, reference[key_step])
    ref_root = next((workdir / "runs/quickstart/mlm/ssb").iterdir())
    for folder in folders:
        a = json.loads((ref_root / folder / "scalars.json").read_text())
        b = json.loads((save / "ssb" / record["run_id"] / folder / "scalars.json").read_text())
        assert a.keys() == b.keys()
        assert all(same(a[k], b[k]) for k in a if k not in NOT_COMPARED), folder  # NaN is null on disk


@pytest.mark.slow
def test_a_ctrl_c_while_the_last_epoch_is_analysed_in_the_background_loses_nothing(mlm_stage, workdir, cache,
                                                                                   tmp_path, monkeypatch):
    """Issue 16.10 as reported: the analysis lags training (background), Ctrl-C comes after the last epoch was
    trained and checkpointed, while its analysis runs; `fit --ckpt_path last` then has no training left (and
    Lightning skips on_train_start), yet must analyse that epoch: the results equal the uninterrupted run's,
    in one W&B run id and one results folder, and the results folder reaches W&B as an artifact."""
    background = ["--ssb.init_args.background", "true"]
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))  # offline artifacts are staged here
    with in_folder(tmp_path, cache):
        with sigint_restored(), pytest.MonkeyPatch.context() as patches, pytest.raises(SystemExit):
            hold_analysis_then_interrupt(patches, epoch=1)  # the last epoch's analysis still runs at the Ctrl-C
            main([*MLM, "--config", fast_monitor(tmp_path), *background])
        save = tmp_path / "runs/quickstart/mlm"
        assert torch.load(save / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 1
        run_id = json.loads((save / "run.json").read_text())["run_id"]
        assert not (save / "ssb" / run_id / "epoch_001").exists()  # stopped at the Ctrl-C
        resumed = main([*MLM, "--config", fast_monitor(tmp_path), *background, "--ckpt_path", "last"])
        assert resumed.trainer.global_step == mlm_stage.trainer.global_step  # nothing left to train

    folders = sorted(p.name for p in (save / "ssb" / run_id).iterdir())
    assert folders == ["epoch_000", "epoch_001", "reference"]
    ref_root = next((workdir / "runs/quickstart/mlm/ssb").iterdir())
    for folder in folders:
        a = json.loads((ref_root / folder / "scalars.json").read_text())
        b = json.loads((save / "ssb" / run_id / folder / "scalars.json").read_text())
        assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a if k not in NOT_COMPARED), folder
    parts = [read_wandb_run(p, wait=60) for p in sorted((save / "wandb").glob(f"offline-run-*-{run_id}"))]
    assert len(parts) == 2 and parts[1].series("ssb/epoch") == [1.0]  # the resume logged the last epoch
    (artifact,) = [a for a in parts[1].artifacts if a["type"] == "ssb-results"]
    assert artifact["metadata"]["states"] == folders


def test_resume_without_a_checkpoint_is_one_line(tmp_path, cache, capsys):
    with in_folder(tmp_path, cache), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "quickstart_mlm.yaml", "--ckpt_path", "last"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        "lightning_ssb: error: ckpt_path last: no last.ckpt in runs/quickstart/mlm/checkpoints: nothing to "
        "resume (leave out --ckpt_path to start a new run)")
    assert not (tmp_path / "runs").exists()  # no W&B run, no folder


@pytest.mark.slow  # needs the MLM fit of the mlm_stage fixture
def test_a_second_run_into_a_finished_run_folder_is_refused(mlm_stage, workdir, capsys):
    save = workdir / "runs/quickstart/mlm"
    record = json.loads((save / "run.json").read_text())
    assert record["status"] == "finished" and record["configs"] == ["config.yaml"]
    before = sorted(p.name for p in save.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "quickstart_mlm.yaml"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        f"lightning_ssb: error: runs/quickstart/mlm already holds run {record['run_id']} (finished): resume it "
        "with --ckpt_path last, or pass --if_exists version (a new sibling folder) or --if_exists overwrite")
    assert sorted(p.name for p in save.rglob("*")) == before  # nothing written, no last-v1.ckpt


@pytest.mark.slow  # needs the MLM fit of the mlm_stage fixture
def test_a_versioned_sibling_keeps_both_runs_apart(mlm_stage, workdir, capsys):
    cli = main([*MLM, "--config", fast_monitor(workdir), "--if_exists", "version", "--trainer.max_steps", "1",
                "--trainer.limit_val_batches", "1"])
    assert "runs/quickstart/mlm holds run" in capsys.readouterr().err
    first = json.loads((workdir / "runs/quickstart/mlm/run.json").read_text())
    second = json.loads((workdir / "runs/quickstart/mlm-v1/run.json").read_text())
    assert second["run_id"] != first["run_id"] and second["status"] == "finished"
    assert cli.trainer.checkpoint_callback.dirpath == str(workdir / "runs/quickstart/mlm-v1/checkpoints")
    assert only_run(workdir / "runs/quickstart/mlm-v1").name.endswith(second["run_id"])
    config = (workdir / "runs/quickstart/mlm-v1/config.yaml").read_text()
    assert config.startswith(f"# lightning_ssb run {second['run_id']},")
    assert yaml.safe_load(config)["trainer"]["default_root_dir"] == "runs/quickstart/mlm-v1"
    ckpt = torch.load(workdir / "runs/quickstart/mlm-v1/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["lightning_ssb_run"]["run_id"] == second["run_id"]
    # the first run is untouched: stage 2 still reads the run its config names
    assert json.loads((workdir / "runs/quickstart/mlm/run.json").read_text()) == first
