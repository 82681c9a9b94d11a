"""The statistics registry: a statistic added here, in the test module, as its computation plus its
entry, reaches W&B, the disk, the report and ``compare`` without any other edit; the built-ins agree
with a recount; names are checked."""

import json
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_ssb import statistics as registry
from lightning_ssb.callbacks import ProbeConfig, SSBMonitor
from lightning_ssb.loggers import WandbLogger, read_wandb_run
from lightning_ssb.report.build import build_report
from lightning_ssb.report.compare import compare_runs, summary_rows
from lightning_ssb.report.load import load_runs
from lightning_ssb.statistics import Plot, Statistic, Units
from tests.callbacks.toys import ToyClassificationData, ToyTask, fast_analysis

ROOT = Path(__file__).resolve().parents[1]


def max_labels(units: Units) -> float:
    """The largest learned label set among the granularity's units (0 when no unit has one)."""
    return float(units.labels.sum(1).max()) if len(units.labels) else math.nan


MAX_LABELS = Statistic("max_labels", "the largest learned label set of the granularity's units",
                       compute=max_labels, plot=Plot("largest label set", "max |L_u| (labels)"), table=True,
                       compare=True)


def _brute_max(labels: torch.Tensor) -> float:
    """max_u |L_u| by a Python loop over the units of arrays.pt."""
    return float(max(sum(bool(v) for v in row) for row in labels.tolist()))


def _fit(tmp_path: Path, seed: int, monkeypatch) -> tuple[Path, Path]:
    """A toy fit with W&B (offline), the disk and the end-of-fit report; returns (results folder, W&B run dir)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    L.seed_everything(seed)
    save = tmp_path / f"seed{seed}"
    monitor = SSBMonitor(layers=[0, 1], figures=False, background=False, report=True,
                         probe=ProbeConfig(train_size=64, test_size=None, batch_size=32),
                         analysis=fast_analysis(crossover_sizes=[], null_mode="ends"), sensitivity=False)
    logger = WandbLogger(project="ssb-test", save_dir=str(save), name=f"seed{seed}")
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=logger, callbacks=[monitor],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=str(save))
    trainer.fit(ToyTask("classification", lr=1e-2), ToyClassificationData())
    run_id = logger.experiment.id
    logger.experiment.finish()
    (run_dir,) = (save / "wandb").glob(f"offline-run-*-{run_id}")
    return Path(monitor.dirpath), run_dir


def test_a_statistic_registered_here_reaches_wandb_disk_report_and_compare(tmp_path, monkeypatch):
    with registry.registered(MAX_LABELS):
        folders = [_fit(tmp_path, seed, monkeypatch) for seed in (0, 1)]
        results, wandb_dir = folders[0]

        # disk: the value of every site, family, granularity and null, equal to a recount from arrays.pt
        checked = 0
        for state in ("reference", "epoch_000"):
            scalars = json.loads((results / state / "scalars.json").read_text())
            arrays = torch.load(results / state / "arrays.pt")
            for key, labels in arrays.items():
                m = re.fullmatch(r"(blocks\.\d\.attn\.heads)/shared(/null_\w+)?/(node|head)/labels", key)
                if m:
                    site, null, gran = m.groups()
                    logged = scalars[f"ssb/{site}/shared{null or ''}/{gran}/max_labels"]
                    assert logged == _brute_max(labels), key
                    checked += 1
        assert checked == 2 * 2 * 2 * 3  # states x sites x granularities x (real, null_train, null_both)
        assert {k.rsplit("/", 1)[1] for k in scalars if k.startswith("ssb/blocks.")} <= {
            s.name for s in registry.statistics()}  # every statistic logged has an entry

        # W&B: its own workspace section, one panel per site, against ssb/epoch
        run = read_wandb_run(wandb_dir, wait=60)
        scalars = [json.loads((results / s / "scalars.json").read_text()) for s in ("reference", "epoch_000")]
        for site, tag in (("blocks.0.attn.heads", "L00-attn-heads"), ("blocks.1.attn.heads", "L01-attn-heads")):
            key = f"ssb-max_labels/shared/node/{tag}"
            assert run.series(key) == [s[f"ssb/{site}/shared/node/max_labels"] for s in scalars]
            assert run.step_metrics[key] == "ssb/epoch"
        assert run.series("ssb-null_both/max_labels/shared/head/L01-attn-heads") == [
            s["ssb/blocks.1.attn.heads/shared/null_both/head/max_labels"] for s in scalars]

        # the report at the end of fit: the deepest layer's table has a row for it
        page = (results / "report.html").read_text()
        assert "largest label set" in page
        # the report's figure of the statistics by epoch: a panel that plots the logged values
        runs = load_runs([results])
        book = build_report(runs, tmp_path / "again.html", keep_figures=True, svg=False)
        (fig,) = [f for f in book.figures if f.name.endswith("blocks.1.attn.heads__shared__statistics")]
        epochs, values = fig.data["statistics"]["max_labels"]["node/real"]
        assert values == [s["ssb/blocks.1.attn.heads/shared/node/max_labels"] for s in scalars]
        assert "max_labels" not in fig.data["missing"]
        panel = next(ax for ax in fig.figure.axes if ax.get_gid() == "max_labels")
        assert panel.get_title() == "largest label set"

        # compare: a column of the summary, the mean over the two seeds
        cmp = compare_runs(load_runs([f[0] for f in folders]))
        header, rows = summary_rows(cmp)
        assert "max_labels" in header
        col = header.index("max_labels")
        both = [json.loads((f[0] / "epoch_000" / "scalars.json").read_text()) for f in folders]
        row = next(r for r in rows if r[:3] == ["blocks.1.attn.heads", "shared", "node"])
        mean = sum(s["ssb/blocks.1.attn.heads/shared/node/max_labels"] for s in both) / 2
        assert row[col].startswith(f"{mean:.3f}\u00b1")
    assert registry.get("max_labels") is None  # the block removed it again


def test_an_unregistered_statistic_in_the_results_still_gets_a_panel(tmp_path):
    """A report drawn by a process that does not know a statistic (registered by the run's process)
    still shows it, titled by its name."""
    from tests.report.synthetic import write_run

    folder = write_run(tmp_path / "ssb")
    for state in folder.iterdir():
        if (state / "scalars.json").exists():
            scalars = json.loads((state / "scalars.json").read_text())
            sites = {k.split("/")[1] for k in scalars if k.startswith("ssb/blocks.")}
            scalars.update({f"ssb/{site}/shared/node/odd_one": 0.5 for site in sites})
            (state / "scalars.json").write_text(json.dumps(scalars))
    book = build_report(load_runs([folder]), tmp_path / "r.html", keep_figures=True, svg=False)
    stats = [f for f in book.figures if f.name.endswith("__shared__statistics")]
    assert stats and all(f.data["statistics"]["odd_one"]["node/real"][1] for f in stats)


def test_builtin_unit_statistics_agree_with_a_recount():
    gen = torch.Generator().manual_seed(0)
    labels = torch.rand(9, 6, generator=gen) < 0.3
    labels[0] = False
    acc = torch.rand(9, generator=gen, dtype=torch.float64)
    got = registry.unit_statistics(labels, acc)
    sets = [set(torch.nonzero(r).flatten().tolist()) for r in labels]
    live = [s for s in sets if s]
    pairs = [len(a & b) / len(a | b) for i, a in enumerate(live) for j, b in enumerate(live) if i != j]
    assert got["live"] == len(live)
    assert got["live_fraction"] == pytest.approx(len(live) / 9)
    assert got["overlap"] == pytest.approx(sum(pairs) / len(pairs))
    assert got["phi"] == pytest.approx(1 - sum(pairs) / len(pairs))
    assert got["mean_labels"] == pytest.approx(sum(len(s) for s in sets) / 9)
    assert got["coverage"] == pytest.approx(len(set().union(*sets)) / 6)
    assert got["acc_mean"] == pytest.approx(float(acc.mean())) and got["acc_max"] == float(acc.max())
    assert "acc_mean" not in registry.unit_statistics(labels)  # needs the accuracies
    assert list(got)[:8] == ["live", "live_fraction", "overlap", "phi", "mean_labels", "coverage", "acc_mean",
                             "acc_max"]


def test_a_name_taken_or_malformed_is_refused_with_one_line():
    with pytest.raises(ValueError, match="'phi' is already registered"):
        registry.register(Statistic("phi", "another phi", compute=lambda u: 0.0))
    for bad in ("Phi", "null_x", "a/b", ""):
        with pytest.raises(ValueError, match="statistic name"):
            Statistic(bad, "x")
    with pytest.raises(ValueError, match="levels"):
        Statistic("x", "x", levels=("layer",))
    with pytest.raises(ValueError, match="compute works on units"):
        Statistic("x", "x", levels=("site",), compute=lambda u: 0.0)
    with pytest.raises(KeyError, match="no statistic 'nope'"):
        registry.unregister("nope")


def test_docs_results_lists_every_builtin_statistic_with_its_levels():
    text = (ROOT / "docs" / "RESULTS.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| ([a-z, ]+) \|", text, re.M)}
    assert rows == {name: ", ".join(registry.get(name).levels) for name in registry.BUILTIN}
