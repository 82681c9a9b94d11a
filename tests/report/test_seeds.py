"""Across seeds (docs/method.md 5): ``compare_runs``, the ``compare`` command and the report's section,
on synthetic runs written in the docs/RESULTS.md layout (tests/report/synthetic.py).

The synthetic seeds give every node the same multiset of learned sets on differently permuted nodes:
the statistics of the label sets are equal, the identity agreement is low, and a perfect matching
exists (matched agreement exactly 1). Expected values are recomputed here from the files alone.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_ssb.report import SECTIONS, build_report, load_runs
from lightning_ssb.report.cli import compare_main
from lightning_ssb.report.compare import IncomparableRunsError, across_seeds, compare_runs, write_comparison
from tests.report.synthetic import LABELS, write_run

SITES = {"blocks.0.attn.heads": [4, 4], "blocks.1.attn.heads": [4, 4]}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    for seed in (0, 1, 2):
        write_run(root / f"seed_{seed}", run_id=f"run{seed}", sites=SITES, seed=seed)
    return root


def identity_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Of the units live in either run, the share with the same non-empty set at the same index."""
    live = a.any(1) | b.any(1)
    same = a.any(1) & (a == b).all(1)
    return same[live].mean()


def test_statistics_side_by_side_are_the_files_numbers(seeds):
    runs = load_runs([seeds / "seed_0", seeds / "seed_1"])
    cmp = compare_runs(runs)
    assert cmp.names == ["seed_0", "seed_1"] and cmp.epochs == [-1, 0, 1, 2]
    raw = [json.loads((seeds / f"seed_{s}/ssb/run{s}/epoch_002/scalars.json").read_text()) for s in (0, 1)]
    key = "ssb/blocks.1.attn.heads/own/node/acc_mean"
    row = cmp.statistic(2, "blocks.1.attn.heads", "own", "node", "acc_mean")
    a, b = raw[0][key], raw[1][key]
    assert row["seed_0"] == pytest.approx(a) and row["seed_1"] == pytest.approx(b)
    assert row["mean"] == pytest.approx((a + b) / 2)
    assert row["std"] == pytest.approx(abs(a - b) / math.sqrt(2))  # sample std of two values
    assert row["spread"] == pytest.approx(abs(a - b))
    phi = cmp.statistic(2, "blocks.0.attn.heads", "shared", "node", "phi")
    assert phi["spread"] == pytest.approx(0.0)
    assert phi["seed_0"] == pytest.approx(raw[0]["ssb/blocks.0.attn.heads/shared/node/phi"])
    # no live node before training: Phi undefined in both runs
    assert not any(r["statistic"] == "phi" and r["epoch"] == -1 and not math.isnan(r["mean"])
                   and r["granularity"] == "node" for r in cmp.statistics)


def test_identity_and_matched_agreement(seeds):
    cmp = compare_runs(load_runs([seeds / "seed_0", seeds / "seed_1", seeds / "seed_2"]))
    pairs = [p for p in cmp.pairs if p["epoch"] == 2 and p["site"] == "blocks.0.attn.heads" and p["family"] == "own"
             and p["granularity"] == "node"]
    assert ([(p["run_a"], p["run_b"]) for p in pairs]
            == [("seed_0", "seed_1"), ("seed_0", "seed_2"), ("seed_1", "seed_2")])
    for p in pairs:
        a, b = (torch.load(seeds / f"{name}/ssb/run{name[-1]}/epoch_002/arrays.pt")
                ["blocks.0.attn.heads/own/node/labels"].numpy() for name in (p["run_a"], p["run_b"]))
        assert p["identity_agreement"] == pytest.approx(identity_by_hand(a, b))
        assert p["live_a"] == a.any(1).sum() == 12  # three quarters of 16 nodes
        assert p["matched_agreement"] == 1.0  # the same sets, on permuted nodes
        assert p["identity_agreement"] < 0.5
    # before training no unit is live in either run: agreement is undefined, not 0 or 1
    ref = [p for p in cmp.pairs if p["epoch"] == -1 and p["granularity"] == "node"]
    assert ref and all(math.isnan(p["identity_agreement"]) and math.isnan(p["matched_agreement"]) for p in ref)


def test_compare_writes_tables_and_figures(seeds, tmp_path):
    cmp, out, figures = write_comparison([seeds / "seed_0", seeds / "seed_1"], tmp_path / "cmp")
    header = (out / "seeds.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "site", "family", "granularity", "statistic", "seed_0", "seed_1", "mean", "std",
                      "spread"]
    agreement = (out / "agreement.csv").read_text().splitlines()
    assert len(agreement) == 1 + len(cmp.pairs) == 1 + 4 * 2 * 2 * 2  # epochs x sites x families x granularities
    assert sorted(p.name for p in figures) == ["across_seeds_own.png", "across_seeds_shared.png"]
    assert all(p.with_suffix(".svg").is_file() for p in figures)
    # default folder: compare/ in the folder the runs share
    _, default, _ = write_comparison([seeds / "seed_0", seeds / "seed_2"])
    assert default == (seeds / "compare").resolve()


def test_report_of_several_seeds_has_the_section(seeds, tmp_path):
    runs = load_runs([seeds / "seed_0", seeds / "seed_1"])
    assert across_seeds in SECTIONS  # write_report's default sections; only this one is drawn here (time)
    book = build_report(runs, tmp_path / "report.html", sections=[across_seeds], keep_figures=True)
    page = (tmp_path / "report.html").read_text()
    assert "Across seeds" in page and "identity" in page
    fig = next(f for f in book.figures if f.name == "across_seeds__own")
    assert fig.data["node"]["matched_agreement"] == [1.0, 1.0]
    cmp = compare_runs(runs)
    for i, site in enumerate(SITES):
        assert fig.data["node"]["identity_agreement"][i] == pytest.approx(
            cmp.agreement(2, site, "own", "node")["identity_agreement"][0])
        # the plotted Phi of each run is its scalars.json value
        assert fig.data["node"]["phi"]["seed_1"][i] == pytest.approx(runs[1].series(site, "own", "node", "phi")[1][-1])
    one = build_report(runs[:1], tmp_path / "one.html", sections=[across_seeds])
    assert "Across seeds" not in (tmp_path / "one.html").read_text() and one.errors == []


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lightning_ssb", "compare", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_compare_command_prints_the_table(seeds, tmp_path):
    proc = run_cli(seeds / "seed_0", seeds / "seed_1", "--out", tmp_path / "cmp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("2 runs (seed_0, seed_1), epoch 2")
    row = next(ln.split() for ln in lines if ln.startswith("blocks.0.attn.heads  own     node"))
    assert row[-1] == "1.000"  # matched agreement
    assert (tmp_path / "cmp" / "seeds.csv").is_file()


def error_of(capsys, *args) -> str:
    """The one stderr line of the compare command run in-process (same code as ``python -m``)."""
    assert compare_main([str(a) for a in args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_one_line_errors_name_the_folder(seeds, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error_of(capsys, seeds / "seed_0", empty) == (
        f"lightning_ssb: error: {empty}: no SSBMonitor results (no ssb/<run id>/reference or epoch_* folders)")
    write_run(tmp_path / "wide", run_id="w", sites={"blocks.0.attn.heads": [4, 4]})
    assert error_of(capsys, seeds / "seed_0", tmp_path / "wide").startswith(
        f"lightning_ssb: error: {tmp_path / 'wide'}: its sites ['blocks.0.attn.heads'] differ")
    labels = write_run(tmp_path / "relabelled", run_id="r", sites=SITES)
    for meta in labels.glob("*/meta.json"):
        m = json.loads(meta.read_text())
        m["label_names"] = list(reversed(LABELS))
        meta.write_text(json.dumps(m))
    assert error_of(capsys, seeds / "seed_0", tmp_path / "relabelled") == (
        f"lightning_ssb: error: {tmp_path / 'relabelled'}: its probe labels differ from those of {seeds / 'seed_0'} "
        f"(different label names)")
    assert error_of(capsys, seeds / "seed_0") == (
        f"lightning_ssb: error: {seeds / 'seed_0'}: holds one run only; compare needs two or more runs")
    with pytest.raises(IncomparableRunsError):
        compare_runs(load_runs([seeds / "seed_0", tmp_path / "wide"]))


def test_an_undefined_agreement_is_no_bar_and_different_penalties_are_noted(tmp_path):
    """No unit live in either run: the agreement is undefined (NaN), drawn as no bar with "n/a", never a
    0 bar; runs analysed at different read-out penalties are said to be so."""
    from lightning_ssb.report.compare import agreement_figure

    for seed in (0, 1):
        write_run(tmp_path / f"seed_{seed}", run_id=f"run{seed}", sites=SITES, seed=seed, epochs=(-1, 0))
    meta = tmp_path / "seed_1/ssb/run1/reference/meta.json"
    m = json.loads(meta.read_text())
    m["penalties"]["node"] = 0.1
    meta.write_text(json.dumps(m))
    runs = load_runs([tmp_path / "seed_0", tmp_path / "seed_1"])
    cmp = compare_runs(runs)
    assert any("different L2 penalties for the own single-node read-outs (seed_0 0.01, seed_1 0.1)" in n
               for n in cmp.notes)
    fig, data = agreement_figure(cmp, "own", epoch=-1)     # before training no node is live in either run
    assert all(math.isnan(v) for v in data["node"]["identity_agreement"])
    ax = next(a for a in fig.axes if a.get_gid() == "node/agreement")
    heights = [p.get_height() for p in ax.patches]
    assert heights == [] or not any(h == 0 for h in heights)  # no zero-height bar stands for "undefined"
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 2 * len(SITES)
