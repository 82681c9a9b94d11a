"""Seeds as an experiment (issue #10.3): the ``seeds`` command, its per-seed configs, the sweep file,
and two seeds of a short quick start compared (docs/method.md 5 across seeds)."""

import math
from pathlib import Path

import pytest
import yaml

from lightning_ssb.cli import CONFIG_DIR
from lightning_ssb.loggers import read_wandb_run
from lightning_ssb.report.compare import compare_runs
from lightning_ssb.report.load import load_runs
from lightning_ssb.seed_runs import main as seeds_main
from lightning_ssb.seed_runs import move_paths, seed_config

# tiny: 2 layers x 4 heads of 12 nodes trained from scratch for two epochs on the shipped FewRel sample
# (64 x 40 sentences; about 20 s per seed on 2 cores; after one epoch too few nodes are live to compare)
TINY = ["--model.init_args.pretrained", "null", "--model.init_args.architecture.num_hidden_layers", "2",
        "--model.init_args.architecture.hidden_size", "48", "--model.init_args.architecture.num_attention_heads", "4",
        "--model.init_args.architecture.intermediate_size", "96", "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false"]


def test_seed_config_moves_the_run_folder_only():
    config = {"seed_everything": 0, "trainer": {
        "default_root_dir": "runs/quickstart/fewrel",
        "logger": {"class_path": "lightning_ssb.loggers.WandbLogger",
                   "init_args": {"name": "quickstart-fewrel", "save_dir": "runs/quickstart/fewrel/"}},
        "callbacks": [{"class_path": "ModelCheckpoint",
                       "init_args": {"dirpath": "runs/quickstart/fewrel/checkpoints"}}]},
        "model": {"init_args": {"pretrained": "runs/quickstart/mlm/checkpoints/last.ckpt"}},
        "data": {"init_args": {"train_file": "runs/quickstart/fewrel2/x.json"}}}
    out = seed_config(config, 3, "runs/quickstart/fewrel_seeds/seed_3")
    assert out["seed_everything"] == 3
    assert out["trainer"]["default_root_dir"] == "runs/quickstart/fewrel_seeds/seed_3"
    assert out["trainer"]["logger"]["init_args"] == {"name": "quickstart-fewrel-seed3",
                                                     "group": "quickstart-fewrel-seeds",
                                                     "save_dir": "runs/quickstart/fewrel_seeds/seed_3"}
    assert out["trainer"]["callbacks"][0]["init_args"]["dirpath"] == "runs/quickstart/fewrel_seeds/seed_3/checkpoints"
    # paths outside the run folder (the stage-1 checkpoint, a folder that only shares a prefix) stay
    assert out["model"] == config["model"] and out["data"] == config["data"]
    assert config["seed_everything"] == 0  # the given config is not changed
    assert move_paths(["a/b", "a/bc", "a"], "a/b", "z") == ["z", "a/bc", "a"]
    # no name (the shipped configs): the seeds' config file names the runs and their group; a group given stays
    config["trainer"]["logger"]["init_args"].update(name=None)
    args = seed_config(config, 1, "f/seed_1",
                       config_file="configs/quickstart_fewrel.yaml")["trainer"]["logger"]["init_args"]
    assert (args["name"], args["group"]) == ("quickstart_fewrel-seed1", "quickstart_fewrel-seeds")
    config["trainer"]["logger"]["init_args"].update(group="mine")
    logger_args = seed_config(config, 1, "f/seed_1", "quickstart_fewrel.yaml")["trainer"]["logger"]["init_args"]
    assert logger_args["group"] == "mine"


def test_the_sweep_runs_this_cli_with_the_seed_swept():
    sweep = yaml.safe_load((CONFIG_DIR / "sweeps" / "seeds.yaml").read_text())
    assert sweep["command"] == ["${env}", "${interpreter}", "-m", "lightning_ssb", "seeds", "${args}"]
    assert sweep["parameters"]["seed_everything"]["values"] == [0, 1, 2, 3, 4]
    assert (CONFIG_DIR / sweep["parameters"]["config"]["value"]).is_file()
    assert (Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "seeds.yaml").is_file()  # the README's path


def test_seeds_needs_a_config_and_distinct_seeds(capsys):
    assert seeds_main(["--seeds", "0", "1"]) == 2
    assert capsys.readouterr().err.strip() == ("lightning_ssb: error: seeds needs --config (the fit config every "
                                               "seed runs)")
    assert seeds_main(["--config", "quickstart_fewrel.yaml", "--seeds", "1", "1"]) == 2
    assert capsys.readouterr().err.strip() == "lightning_ssb: error: --seeds: each seed once, got [1, 1]"


@pytest.mark.slow
def test_two_seeds_of_a_short_quick_start_break_symmetry_differently(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("LIGHTNING_SSB_CACHE", str(tmp_path / "cache"))
    extra = tmp_path / "fast.yaml"  # one read-out family, no null, two crossover sizes: the analysis in seconds
    extra.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": "runs/quickstart/fewrel/checkpoints", "filename": "last"}}]},
        "ssb": {"init_args": {"probe": {"train_size": 256}, "figures": False, "background": False,
                                  "analysis": {"readout": "own", "null_mode": "off", "crossover_sizes": [1, 4],
                                               "crossover_draws": 2}}}}))
    assert seeds_main(["--config", "quickstart_fewrel.yaml", "--config", str(extra), *TINY, "--seeds", "0", "1"]) == 0
    root = tmp_path / "runs/quickstart/fewrel_seeds"
    for seed in (0, 1):
        folder = root / f"seed_{seed}"
        assert (folder / "checkpoints/last.ckpt").is_file()
        saved = yaml.safe_load((folder / "config.yaml").read_text())
        assert saved["seed_everything"] == seed and saved["trainer"]["default_root_dir"] == str(
            Path("runs/quickstart/fewrel_seeds") / f"seed_{seed}")
        (wandb_run,) = (folder / "wandb").glob("offline-run-*")  # one W&B group, a name per seed
        records = read_wandb_run(wandb_run, wait=60)
        assert (records.name, records.group) == (f"quickstart_fewrel-seed{seed}", "quickstart_fewrel-seeds")
    cmp = compare_runs(load_runs([root / "seed_0", root / "seed_1"]))
    assert cmp.names == ["seed_0", "seed_1"] and cmp.epochs == [-1, 0, 1]
    rows = list(csv_rows(root / "compare/agreement.csv"))  # what the command wrote at the end
    assert len(rows) == len(cmp.pairs) == 3 * 2 * 2  # epochs x sites x granularities, one pair of runs
    # Stated tolerance (2 seeds of a tiny model after two epochs): per site, own read-out, nodes, the last
    # epoch: live fraction within 0.2, coverage within 0.15, mean accuracy within 0.005 (chance: 1/64;
    # measured: 0.125 and 0.02, 0 and 0.03, 0.0007 and 0.0012);
    # while the node-to-label assignment differs: identity agreement below matched agreement.
    for site in ("blocks.0.attn.heads", "blocks.1.attn.heads"):
        for stat, tol in (("live_fraction", 0.2), ("coverage", 0.15), ("acc_mean", 0.005)):
            row = cmp.statistic(1, site, "own", "node", stat)
            assert row["spread"] <= tol, (site, stat, row)
        acc = cmp.statistic(1, site, "own", "node", "acc_mean")
        assert acc["seed_0"] != acc["seed_1"]  # two different networks, not one run twice
        live = cmp.statistic(1, site, "own", "node", "live")
        assert min(live["seed_0"], live["seed_1"]) >= 10  # enough live nodes for the agreement to mean something
        agree = cmp.agreement(1, site, "own", "node")
        assert agree["identity_agreement"][0] < agree["matched_agreement"][0], (site, agree)
    on_disk = {(r["site"], r["granularity"], int(r["epoch"])): float(r["matched_agreement"] or "nan") for r in rows}
    for p in cmp.pairs:
        got = on_disk[p["site"], p["granularity"], p["epoch"]]
        assert (math.isnan(got) and math.isnan(p["matched_agreement"])) or got == pytest.approx(p["matched_agreement"])


def csv_rows(path):
    import csv

    with open(path, newline="") as f:
        yield from csv.DictReader(f)
