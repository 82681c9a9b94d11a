"""``python -m lightning_ssb analyze`` (issue #10.1): the monitor's analysis of a checkpoint or a
pre-trained Hugging Face model, without training, written like an epoch of ``fit`` (disk and W&B).

The FewRel test analyses the last checkpoint of a short fit and must find exactly the numbers that
the fit itself logged for that epoch (same weights, same probe); the MLM test analyses the real
pre-trained MiniLM (a Hugging Face folder) on the shipped Wikipedia sample.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml

from lightning_ssb.cli import main
from lightning_ssb.loggers import read_wandb_run
from lightning_ssb.report.load import load_runs
from tests.test_end_to_end import SMALL, in_folder, only_run

FIT = ["--config", "quickstart_fewrel.yaml", *SMALL, "--model.init_args.pretrained", "null",
       "--trainer.max_epochs", "1"]


def fast(folder: Path, **monitor) -> str:
    """An extra config: a checkpoint callback and a monitor that analyses in seconds (own read-out, no null)."""
    args = {"probe": {"train_size": 256}, "figures": False, "background": False,
            "analysis": {"readout": "own", "null_mode": "off", "crossover_sizes": [1, 4], "crossover_draws": 2}}
    args.update(monitor)
    path = folder / f"fast_{len(list(folder.glob('fast_*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": "runs/quickstart/fewrel/checkpoints", "filename": "last"}}]},
        "ssb": {"init_args": args}}))
    return str(path)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analyze")
    with in_folder(folder, folder / "cache"):
        main(["fit", *FIT, "--config", fast(folder)])  # about 10 s: the checkpoint to analyse
    return folder


@pytest.fixture(autouse=True)
def _env(workdir):
    with in_folder(workdir, workdir / "cache"):
        yield


def one(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_analyze_a_checkpoint_gives_the_numbers_fit_logged(workdir):
    main(["analyze", *FIT, "--config", fast(workdir), "--ckpt_path", "last"])
    fit_epoch = one("runs/quickstart/fewrel/ssb/*/epoch_000", workdir)
    out = workdir / "runs/quickstart/fewrel_analyze"  # a run folder of its own beside the fit's
    folder = one("ssb/*/analyze", out)
    fitted, analysed = (json.loads((f / "scalars.json").read_text()) for f in (fit_epoch, folder))
    site_keys = [k for k in fitted if k.startswith("ssb/blocks.")]
    assert len(site_keys) > 50 and sorted(site_keys) == sorted(k for k in analysed if k.startswith("ssb/blocks."))
    nan = float("nan")
    for key in site_keys:  # same weights, same probe: the same analysis (NaN is null on disk)
        got, want = (nan if d[key] is None else d[key] for d in (analysed, fitted))
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9, nan_ok=True), key
    assert analysed["ssb/epoch"] == -2
    a, b = (torch.load(f / "arrays.pt") for f in (fit_epoch, folder))
    assert torch.equal(a["blocks.1.attn.heads/own/node/labels"], b["blocks.1.attn.heads/own/node/labels"])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["epoch"] == -2 and meta["source"]["epoch"] == 0 and meta["source"]["task"] == "classification"
    assert meta["source"]["ckpt_path"] == str(workdir / "runs/quickstart/fewrel/checkpoints/last.ckpt")
    # the W&B run: the same scalars, under ssb/epoch -2, and the config; run.json and config.yaml name the run
    run = read_wandb_run(only_run(out), wait=60)
    run_id = folder.parent.name
    assert run.finished and run.series("ssb/epoch") == [-2]
    assert run.name == "quickstart_fewrel-seed0_analyze"  # its config, its seed, and what it is
    assert run.series("ssb-acc_mean/own/node/L00-attn-heads") == [pytest.approx(
        fitted["ssb/blocks.0.attn.heads/own/node/acc_mean"])]
    record = json.loads((out / "run.json").read_text())
    assert record["run_id"] == run_id and record["status"] == "finished"
    assert (out / "config.yaml").read_text().startswith(f"# lightning_ssb run {run_id}, analyze started")
    # ready for the report: one run whose one epoch is "analyze"
    (loaded,) = load_runs([out])
    assert [e.name for e in loaded.epochs] == ["analyze"] and loaded.notes == []


@pytest.mark.slow
def test_analyze_a_hugging_face_model_on_the_mlm_probe(workdir, minilm_path):
    main(["analyze", "--config", "quickstart_mlm.yaml", "--model.init_args.pretrained", str(minilm_path),
          "--data.init_args.num_articles", "200", "--trainer.enable_progress_bar", "false",
          "--config", fast(workdir, layers=[5], probe={"train_size": 135, "top_k_tokens": 50},
                           analysis={"readout": "shared", "null_mode": "off", "crossover_sizes": [1, 4],
                                     "crossover_draws": 2})])
    folder = one("runs/quickstart/mlm_analyze/ssb/*/analyze", workdir)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["sites"] == {"blocks.5.attn.heads": [12, 32]}  # MiniLM-L6: 12 heads of 32 nodes
    assert meta["num_classes"] == 50 and len(meta["label_names"]) == 50  # the 50 most often masked tokens
    assert meta["source"]["pretrained"] == str(minilm_path) and meta["source"]["task"] == "mlm"
    scalars = json.loads((folder / "scalars.json").read_text())
    arrays = torch.load(folder / "arrays.pt")
    for gran, units in (("node", 384), ("head", 12)):  # the logged statistics, recomputed from the label sets
        labels = arrays[f"blocks.5.attn.heads/shared/{gran}/labels"]
        assert labels.shape == (units, 50)
        key = f"ssb/blocks.5.attn.heads/shared/{gran}"
        assert scalars[f"{key}/live"] == labels.any(1).sum().item()
        assert scalars[f"{key}/coverage"] == pytest.approx(labels.any(0).double().mean().item())
        assert scalars[f"{key}/mean_labels"] == pytest.approx(labels.sum(1).double().mean().item())
        accuracy = arrays[f"blocks.5.attn.heads/shared/{gran}/accuracy"].double()
        assert scalars[f"{key}/acc_mean"] == pytest.approx(accuracy.mean().item())
        assert scalars[f"{key}/acc_max"] == pytest.approx(accuracy.max().item())
    # from the context alone, the site's read-out of a [MASK] position finds the masked token above chance (1/50)
    assert scalars["ssb/blocks.5.attn.heads/shared/site/acc"] > 2 / 50
    assert scalars["ssb/blocks.5.attn.heads/shared/node/hull_violations"] == 0


@pytest.mark.slow
def test_analyze_errors_are_one_line(workdir, capsys):
    ckpt = str(workdir / "runs/quickstart/fewrel/checkpoints/last.ckpt")
    with pytest.raises(SystemExit):
        main(["analyze", "--config", "quickstart_mlm.yaml", *SMALL, "--trainer.default_root_dir", "runs/err",
              "--trainer.logger.init_args.save_dir", "runs/err", "--ckpt_path", ckpt])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"lightning_ssb: error: ckpt_path: {ckpt}: a checkpoint of task 'classification', but the "
                       f"config builds a MLMModule (task 'mlm'): use the config that trained it, or give an MLM "
                       f"checkpoint to a classifier as --model.init_args.pretrained")
    assert not (workdir / "runs/err_analyze/wandb").exists()  # stopped before any W&B run
