"""End to end through the real CLI, in-process: MLM pre-training, then FewRel from its checkpoint.

Each stage is a short fit of the shipped quick-start config (narrowed further for test time), with
W&B offline; the offline run file is read back and checked for the metrics and the config.
"""

from pathlib import Path

import pytest
import yaml

from lightning_ssb.cli import main
from lightning_ssb.loggers import read_wandb_run

# 2 layers x 4 heads of 12 nodes: fast, still several heads and nodes per head for the monitor
SMALL = ["--model.init_args.architecture.num_hidden_layers", "2", "--model.init_args.architecture.hidden_size", "48",
         "--model.init_args.architecture.num_attention_heads", "4",
         "--model.init_args.architecture.intermediate_size", "96", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(autouse=True)
def _env(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("LIGHTNING_SSB_CACHE", str(workdir / "cache"))


def only_run(save_dir: Path) -> Path:
    runs = sorted((save_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def assert_monitor_logged(save: Path, run, epochs: int) -> None:
    """The quick-start monitor: the reference and one analysis per epoch, in W&B and on disk."""
    assert run.series("ssb/epoch") == [-1, *range(epochs)]
    assert any(k.startswith("ssb/blocks.0.attn.heads/node/") for k in run.keys())
    disk = [p for p in (save / "ssb").glob("*/*") if p.is_dir()]
    assert sorted(p.name for p in disk) == sorted(["reference", *(f"epoch_{e:03d}" for e in range(epochs))])
    for folder in disk:
        assert (folder / "scalars.json").is_file()


def assert_loss_fell(series: list[float]) -> None:
    assert len(series) >= 3, series
    assert sum(series[-2:]) / 2 < series[0] - 0.05, series


@pytest.fixture(scope="module")
def mlm_stage(workdir):
    import os

    os.chdir(workdir)
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", LIGHTNING_SSB_CACHE=str(workdir / "cache"))
    cli = main(["fit", "--config", "quickstart_mlm.yaml", *SMALL, "--data.init_args.num_articles", "320",
                "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "2"])
    return cli


def test_mlm_stage_trains_and_logs(mlm_stage, workdir):
    save = workdir / "runs/quickstart/mlm"
    assert (save / "checkpoints/last.ckpt").is_file()
    run = read_wandb_run(only_run(save), wait=60)
    assert run.finished  # the CLI closed the W&B run: its exit record is in the file
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


def test_fewrel_stage_starts_from_the_mlm_checkpoint(mlm_stage, workdir):
    cli = main(["fit", "--config", "quickstart_fewrel.yaml", *SMALL, "--trainer.max_epochs", "3",
                "--trainer.log_every_n_steps", "4"])
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



def test_validate_subcommand_restores_the_checkpoint(mlm_stage, workdir):
    import torch

    ckpt = workdir / "runs/quickstart/mlm/checkpoints/last.ckpt"
    cli = main(["validate", "--config", "quickstart_mlm.yaml", *SMALL, "--data.init_args.num_articles", "320",
                "--ckpt_path", str(ckpt), "--trainer.logger", "false", "--trainer.callbacks", "[]"])
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    ours = cli.model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items() if k.startswith("model."))
    assert "val/loss" in cli.trainer.callback_metrics and "val/ppl" in cli.trainer.callback_metrics


def test_missing_ckpt_path_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--config", "quickstart_mlm.yaml", "--ckpt_path", "nothere.ckpt"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "lightning_ssb: error: ckpt_path: nothere.ckpt: no such file"
