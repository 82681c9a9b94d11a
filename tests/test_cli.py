"""The command line: every shipped config parses against the real CLI; lookup, overrides, errors."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_ssb.cli import SSBCLI, main, resolve_config, resolve_config_args, shipped_configs, summarize_parser_error

CONFIGS = shipped_configs()


def resolve_config_path(name: str) -> Path:
    return Path(resolve_config(name))


def print_config(capsys, *args) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_the_expected_configs_are_shipped():
    assert {"bert6.yaml", "bert6_fewrel.yaml", "quickstart_mlm.yaml", "quickstart_fewrel.yaml"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_parses(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bare name must work from any directory
    cfg = print_config(capsys, "--config", name)
    assert cfg["model"]["class_path"].startswith("lightning_ssb.models.")
    assert cfg["data"]["class_path"].startswith("lightning_ssb.data.")
    assert cfg["trainer"]["logger"]["class_path"] == "lightning_ssb.loggers.WandbLogger"
    # every key of the shipped file survives into the resolved config (nothing silently dropped)
    raw = yaml.safe_load(resolve_config_path(name).read_text())
    for key, value in raw["model"]["init_args"].items():
        if isinstance(value, dict):
            for k, v in value.items():
                assert cfg["model"]["init_args"][key][k] == v, (key, k)
        else:
            assert cfg["model"]["init_args"][key] == value, key


def test_local_file_wins_over_shipped_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    local = yaml.safe_load(resolve_config_path("quickstart_mlm.yaml").read_text())
    local["trainer"]["max_epochs"] = 11
    (tmp_path / "quickstart_mlm.yaml").write_text(yaml.safe_dump(local))
    assert print_config(capsys, "--config", "quickstart_mlm.yaml")["trainer"]["max_epochs"] == 11
    assert resolve_config("quickstart_mlm") .endswith("configs/quickstart_mlm.yaml")  # name without suffix


def test_several_configs_and_dotted_overrides(tmp_path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("trainer:\n  max_epochs: 9\nmodel:\n  init_args:\n    optimizer:\n      lr: 0.25\n")
    cfg = print_config(capsys, "--config", "quickstart_mlm.yaml", "--config", str(extra),
                       "--model.init_args.architecture.num_hidden_layers", "3", "--trainer.max_epochs", "4")
    assert cfg["trainer"]["max_epochs"] == 4  # command line beats the later file
    assert cfg["model"]["init_args"]["optimizer"]["lr"] == 0.25  # later file beats the earlier one
    assert cfg["model"]["init_args"]["optimizer"]["weight_decay"] == 0.01  # untouched keys kept
    assert cfg["model"]["init_args"]["architecture"]["num_hidden_layers"] == 3
    assert cfg["model"]["init_args"]["architecture"]["hidden_size"] == 192


def test_unknown_key_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    optimiser:\n      lr: 1\n")
    res = subprocess.run([sys.executable, "-m", "lightning_ssb", "fit", "--config", "quickstart_mlm.yaml",
                          "--config", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if "error" in line]
    assert lines == ["lightning_ssb: error: unknown key 'model.init_args.optimiser.lr' "
                     "(not an option of lightning_ssb.models.MLMModule) (see --help)"]


@pytest.mark.parametrize("args, line", [
    (["--trainer.max_epochs", "abc"], "key 'trainer.max_epochs': expected int, got abc"),
    (["--data.init_args.batch_size", "x"], "key 'data.init_args.batch_size': expected int, got x"),
    (["--model.init_args.optimiser.lr", "1"],
     "unknown key 'model.init_args.optimiser.lr' (not an option of lightning_ssb.models.MLMModule)"),
    (["--trainer.callbacks+", "lightning_ssb.callbacks.Nope"],
     "key 'trainer.callbacks': class_path 'lightning_ssb.callbacks.Nope' not found"),
])
def test_command_line_errors_are_as_clear_as_yaml_ones(args, line, capsys, monkeypatch):
    monkeypatch.delenv("LIGHTNING_SSB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "quickstart_mlm.yaml", *args, "--print_config"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"lightning_ssb: error: {line} (see --help)"


def test_monitor_argument_errors_come_before_any_wandb_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("LIGHTNING_SSB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exit_info:  # layer 9 of a 6-layer model: known only with the model
        main(["fit", "--config", "quickstart_mlm.yaml", "--data.init_args.num_articles", "64",
              "--ssb.layers", "[9]"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lightning_ssb: error: SSBMonitor.layers must be in 0..5, got [9]")
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("run.json"))


def test_parser_error_summaries():
    nested = ('Parser key "data":\n  Does not validate\n  Errors:\n'
              "    - Problem with given class_path 'lightning_ssb.data.FewRelDataModule':\n"
              '        Parser key "batch_size":\n          Expected a <class \'int\'>. Got value: abc\n'
              "    - Expected a <class 'NoneType'>\n")
    assert summarize_parser_error(nested) == "key 'data.init_args.batch_size': expected int, got abc"
    assert summarize_parser_error("unrecognized arguments: --x 1") == "unrecognized arguments: --x 1"


def test_missing_checkpoint_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lightning_ssb", "fit", "--config", "quickstart_fewrel.yaml",
                          "--model.init_args.pretrained", "runs/none/last.ckpt"],
                         capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ,
                                                                             "WANDB_MODE": "offline"})
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "lightning_ssb: error: model.pretrained: runs/none/last.ckpt: no such file or directory")


@pytest.mark.parametrize("precision, accelerator, cuda, bf16, expected", [
    ("bf16-mixed", "auto", False, False, "32-true"),     # paper config on a CPU-only machine
    ("bf16-mixed", "cpu", True, True, "32-true"),        # CPU asked for explicitly
    ("bf16-mixed", "auto", True, True, "bf16-mixed"),    # Ampere or newer
    ("bf16-mixed", "gpu", True, False, "16-mixed"),      # a GPU without bf16
    ("32-true", "auto", True, True, "32-true"),          # anything else is left alone
    ("16-mixed", "cpu", False, False, "16-mixed"),
])
def test_mixed_precision_where_the_hardware_has_it(precision, accelerator, cuda, bf16, expected):
    from lightning_ssb.cli import resolve_precision

    got, why = resolve_precision(precision, accelerator, cuda, bf16)
    assert got == expected
    assert bool(why) == (got != precision)


def test_paper_config_on_this_cpu_runs_in_fp32(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("LIGHTNING_SSB_CACHE", str(tmp_path / "cache"))
    cli = main(["fit", "--config", "bert6_fewrel.yaml", "--data.init_args.train_file", "null",
                "--data.init_args.train_per_relation", "40", "--data.init_args.test_per_relation", "10",
                "--data.init_args.num_workers", "0", "--model.init_args.pretrained", "null",
                "--model.init_args.architecture.num_hidden_layers", "1",
                "--model.init_args.architecture.hidden_size", "24",
                "--model.init_args.architecture.num_attention_heads", "2",
                "--model.init_args.architecture.intermediate_size", "24",
                "--trainer.logger", "false", "--trainer.callbacks", "[]", "--ssb", "null", "--trainer.max_steps", "1",
                "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.precision == "32-true"
    assert "trainer.precision bf16-mixed -> 32-true: this run is on the CPU" in capfd.readouterr().err
    assert cli.trainer.global_step == 1


def build(*args) -> SSBCLI:
    """The CLI's objects for these arguments, built but not run (LightningCLI's run=False)."""
    return SSBCLI(args=resolve_config_args(list(args)), run=False)


def callback_types(cli) -> list[str]:
    return [type(cb).__name__ for cb in cli.trainer.callbacks]


def test_a_second_config_changes_one_monitor_setting_and_keeps_every_callback(tmp_path, monkeypatch):
    """The monitor is its own config group: a later file that sets one of its settings leaves the other
    settings and trainer.callbacks (checkpoint, interrupt, learning rate) as the first file has them."""
    monkeypatch.chdir(tmp_path)
    extra = tmp_path / "extra.yaml"
    extra.write_text("ssb:\n  init_args:\n    probe:\n      train_size: 7\n")
    cli = build("--config", "quickstart_mlm.yaml", "--config", str(extra), "--ssb.analysis.theta", "0.4")
    types = callback_types(cli)
    for name in ("ModelCheckpoint", "InterruptCheckpoint", "LearningRateMonitor", "SSBMonitor"):
        assert types.count(name) == 1, (name, types)
    monitor = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "SSBMonitor")
    assert monitor.probe_config.train_size == 7 and monitor.analysis.theta == 0.4  # the two changes
    shipped = yaml.safe_load(resolve_config_path("quickstart_mlm.yaml").read_text())["ssb"]["init_args"]
    assert monitor.probe_config.top_k_tokens == shipped["probe"]["top_k_tokens"] == 50  # the rest as shipped
    assert monitor.analysis.tau == shipped["analysis"]["tau"] and monitor.every_n_epochs == shipped["every_n_epochs"]


@pytest.mark.parametrize("args, name", [
    (["--config", "quickstart_mlm.yaml"], "quickstart_mlm-seed0"),
    (["--config", "quickstart_mlm.yaml", "--config", "extra.yaml", "--seed_everything", "3"],
     "quickstart_mlm-seed3"),  # the first config names the run
    (["--config", "quickstart_mlm.yaml", "--trainer.logger.init_args.name", "mine"], "mine"),  # a given name wins
    (["--config", "quickstart_mlm.yaml", "--seed_everything", "false"], "quickstart_mlm"),  # no seed, no suffix
])
def test_a_wandb_run_without_a_name_is_named_after_its_config_and_seed(args, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    (tmp_path / "extra.yaml").write_text("trainer:\n  max_epochs: 3\n")
    cli = build(*args)
    assert cli.trainer.logger._wandb_init["name"] == name
    assert yaml.safe_load(resolve_config_path("quickstart_mlm.yaml").read_text())["trainer"]["logger"]["init_args"][
        "name"] is None  # the shipped configs leave it to this rule


def test_monitor_null_is_a_fit_without_the_monitor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with_it = callback_types(build("--config", "quickstart_mlm.yaml"))
    without = callback_types(build("--config", "quickstart_mlm.yaml", "--ssb", "null"))
    assert "SSBMonitor" in with_it and "SSBMonitor" not in without
    assert [t for t in with_it if t != "SSBMonitor"] == without  # every other callback stays


@pytest.mark.parametrize("args, reason", [
    (["--config", "bad.yaml"], "Group 'probe' does not accept option 'trian_size'"),  # jsonargparse's own words
    (["--ssb.probe.trian_size", "10"], "(not an option of lightning_ssb.callbacks.SSBMonitor)"),
])
def test_a_typo_in_a_nested_monitor_group_keeps_jsonargparse_reason(args, reason, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LIGHTNING_SSB_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("ssb:\n  init_args:\n    probe:\n      trian_size: 10\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "quickstart_mlm.yaml", *args, "--print_config"])
    assert exit_info.value.code == 2
    separator = ": " if reason.startswith("Group") else " "
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"lightning_ssb: error: unknown key 'ssb.init_args.probe.trian_size'{separator}{reason} (see --help)")


def test_a_monitor_in_both_places_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "quickstart_mlm.yaml", "--trainer.callbacks+", "lightning_ssb.callbacks.SSBMonitor"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lightning_ssb: error: ssb: an SSBMonitor is also in trainer.callbacks; keep one (the shipped configs "
        "set it as the top-level ssb: group)")


def installed_script():
    """The function pyproject.toml installs as the ``lightning-ssb`` script."""
    import importlib
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    module, function = project["scripts"]["lightning-ssb"].split("#")[0].strip().split(":")
    return getattr(importlib.import_module(module), function)


@pytest.mark.parametrize("command, usage", [
    ("report", "usage: python -m lightning_ssb report"),
    ("compare", "usage: python -m lightning_ssb compare"),
    ("seeds", "usage: python -m lightning_ssb seeds"),
    ("fit", "--ssb CONFIG | CLASS_PATH_OR_NAME"),
])
def test_the_installed_script_knows_every_subcommand(command, usage, capsys):
    with pytest.raises(SystemExit) as exit_info:
        installed_script()([command, "--help"])
    assert exit_info.value.code in (0, None)
    assert usage in capsys.readouterr().out


def test_top_level_help_lists_every_subcommand_and_shipped_config():
    res = subprocess.run([sys.executable, "-m", "lightning_ssb", "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: python -m lightning_ssb ")
    listed = set(re.findall(r"^ {2,4}([a-z]+) ", res.stdout, flags=re.M))
    assert {"fit", "validate", "test", "predict", "analyze", "report", "compare", "seeds"} <= listed
    for name in CONFIGS:
        assert re.search(rf"^  {re.escape(name)} +\S", res.stdout, flags=re.M), name  # with what it is


@pytest.mark.parametrize("flag, name, option", [
    ("--model.help", "MLMModule", "--model.pretrained"),
    ("--model.help", "SequenceClassifier", "--model.num_labels"),
    ("--data.help", "FewRelDataModule", "--data.train_per_relation"),
    ("--ssb.help", "SSBMonitor", "--ssb.probe.train_size"),
])
def test_class_help_by_short_name(flag, name, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", flag, name])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert option in out and f"Help for {flag}=lightning_ssb." in out


def test_a_fit_without_any_logger_leaves_out_the_learning_rate_monitor(tmp_path, monkeypatch, capfd):
    """`--trainer.logger false` (no W&B, no logger): the shipped LearningRateMonitor, which Lightning refuses
    without a logger, is left out with one line, every other callback stays, and a real fit runs to its
    checkpoint."""
    monkeypatch.chdir(tmp_path)
    shipped = callback_types(build("--config", "quickstart_mlm.yaml", "--ssb", "null"))
    without = callback_types(build("--config", "quickstart_mlm.yaml", "--ssb", "null", "--trainer.logger", "false"))
    assert "LearningRateMonitor" in shipped
    assert without == [t for t in shipped if t != "LearningRateMonitor"]
    assert "lightning_ssb: trainer.logger is false: LearningRateMonitor left out" in capfd.readouterr().err
    cli = main(["fit", "--config", "quickstart_mlm.yaml", "--ssb", "null", "--trainer.logger", "false",
                "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
                "false"])
    assert cli.trainer.global_step == 2 and cli.trainer.logger is None
    assert (tmp_path / "runs" / "quickstart" / "mlm" / "checkpoints" / "last.ckpt").is_file()
