"""The shipped token-learning recipe (tokens.yaml, issue 17) runs end to end, shortened.

The full recipe pre-trains for about 20 minutes and is not part of the suite; here the same config,
through the real CLI, on 400 of its articles for 3 epochs (36 steps), with smaller probes and a short
crossover, everything else as shipped. Checked: the loss falls; the ProbeAccuracy callback scores the
same probe as the monitor, before training and after every epoch; its last score equals a brute-force
recomputation from the model's full logits and the raw articles (tests/mlm_recount.py).
"""

from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from lightning_ssb.callbacks import SSBMonitor
from lightning_ssb.cli import main, resolve_config
from lightning_ssb.loggers import read_wandb_run
from lightning_ssb.probe_accuracy import ProbeAccuracy
from tests.mlm_recount import own_predictions, recount

pytestmark = pytest.mark.slow


def short_recipe(folder: Path, shared_data: Path) -> str:
    """An extra config: the shipped data files by absolute path, 400 articles, 3 epochs, probes of 64
    training sequences (the 40 validation ones score), a crossover of two sizes, no end-of-fit report."""
    shipped = yaml.safe_load(Path(resolve_config("tokens.yaml")).read_text())
    callbacks = shipped["trainer"]["callbacks"]
    for cb in callbacks:
        if cb["class_path"].endswith("ProbeAccuracy"):
            cb["init_args"]["probe"]["train_size"] = 64
    monitor = shipped["ssb"]["init_args"]
    monitor["probe"]["train_size"] = 64
    monitor["analysis"].update(crossover_sizes=[1, 4], crossover_draws=2)
    monitor["report"] = False  # the report is tested by tests/test_quickstart.py
    sources = [str(shared_data / Path(p).name) for p in shipped["data"]["init_args"]["source"]]
    extra = {"trainer": {"callbacks": callbacks, "max_epochs": 3, "log_every_n_steps": 2,
                         "enable_progress_bar": False},
             "ssb": {"init_args": monitor},
             "data": {"init_args": {"source": sources, "num_articles": 400}}}
    path = folder / "short_tokens.yaml"
    path.write_text(yaml.safe_dump(extra))
    return str(path)


def test_tokens_recipe_shortened(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("LIGHTNING_SSB_CACHE", str(tmp_path / "cache"))
    cli = main(["fit", "--config", "tokens.yaml", "--config", short_recipe(tmp_path, shared_data)])
    assert cli.trainer.global_step == 36  # 360 training articles / 32 = 12 steps, 3 epochs
    save = tmp_path / "runs/tokens/mlm"
    assert (save / "checkpoints/last.ckpt").is_file()
    (wandb_run,) = (save / "wandb").glob("offline-run-*")
    run = read_wandb_run(wandb_run, wait=60)
    loss = run.series("train/loss")
    assert len(loss) >= 10 and sum(loss[-3:]) / 3 < loss[0] - 1.0, loss  # from ~10.4 (log 30,522) down

    scorer = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ProbeAccuracy))
    monitor = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SSBMonitor))
    assert scorer.probe.state_dict() == monitor.probe.state_dict()  # the same sequences, masks and classes
    assert [h["epoch"] for h in scorer.history] == [-1, 0, 1, 2]
    assert run.series("probe/epoch") == [-1, 0, 1, 2]
    assert run.series("probe/restricted_acc") == pytest.approx([h["restricted"] for h in scorer.history])
    assert run.series("ssb/epoch") == [-1, 0, 1, 2]

    # the last score, recomputed by brute force on the trained model
    dm, probe, last = cli.datamodule, scorer.probe, scorer.history[-1]
    top, examples = recount(dm, probe)
    assert top == probe.class_ids
    tokens = torch.tensor([e[3] for e in examples["test"]])
    restricted, full = own_predictions(cli.model, probe, examples["test"], top)
    n = len(tokens)
    assert last["n"] == n
    assert abs(last["restricted"] - (restricted == tokens).float().mean().item()) <= 1 / n
    assert abs(last["full"] - (full == tokens).float().mean().item()) <= 1 / n
    assert last["majority"] == Counter(tokens.tolist()).most_common(1)[0][1] / n
