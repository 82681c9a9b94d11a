"""Reading disk results back, finding run folders, and a report that degrades instead of crashing."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from lightning_ssb.report import NoResultsError, build_report, load_runs, write_report
from lightning_ssb.report.figures import block_order
from lightning_ssb.report.sections import crossover_section, learned_labels, overview, statistics
from tests.report.synthetic import LABELS, write_run

ONE_SITE = {"blocks.3.attn.heads": [2, 4]}


def test_load_finds_runs_from_the_run_folder_or_the_ssb_folder(tmp_path):
    folder = write_run(tmp_path / "runs" / "mlm", run_id="abc123", sites=ONE_SITE)
    for path in (tmp_path / "runs" / "mlm", folder, tmp_path):
        (run,) = load_runs([path])
        assert run.run_id == "abc123" and [e.epoch for e in run.epochs] == [-1, 0, 1, 2]
    assert run.label_names == LABELS and run.num_classes == len(LABELS)
    assert run.sites == ["blocks.3.attn.heads"] and run.site_shape("blocks.3.attn.heads") == (2, 4)
    epochs, phi = run.series("blocks.3.attn.heads", "own", "node", "phi")
    raw = [json.loads((folder / d / "scalars.json").read_text())["ssb/blocks.3.attn.heads/own/node/phi"]
           for d in ("reference", "epoch_000", "epoch_001", "epoch_002")]
    assert epochs == [-1, 0, 1, 2]
    assert math.isnan(phi[0]) and raw[0] is None  # null on disk is NaN, "undefined", never 0
    assert phi[1:] == raw[1:]
    assert run.last.best[("blocks.3.attn.heads", "own")]["confusion"].shape == (2, 8, 8)


def test_a_rerun_epoch_folder_replaces_the_first(tmp_path):
    folder = write_run(tmp_path, sites=ONE_SITE)
    rerun = folder / "epoch_001-1"
    rerun.mkdir()
    scalars = json.loads((folder / "epoch_001" / "scalars.json").read_text())
    scalars["ssb/blocks.3.attn.heads/own/node/live_fraction"] = 0.123
    (rerun / "scalars.json").write_text(json.dumps(scalars))
    (run,) = load_runs([folder])
    assert [e.folder.name for e in run.epochs] == ["reference", "epoch_000", "epoch_001-1", "epoch_002"]
    assert run.series("blocks.3.attn.heads", "own", "node", "live_fraction")[1][2] == 0.123


def test_a_folder_without_results_is_a_one_line_error(tmp_path):
    empty = tmp_path / "nothing_here"
    (empty / "ssb" / "run1").mkdir(parents=True)
    with pytest.raises(NoResultsError, match="nothing_here: no SSBMonitor results"):
        write_report([empty])
    done = subprocess.run([sys.executable, "-m", "lightning_ssb", "report", str(empty)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"lightning_ssb: error: {empty}: no SSBMonitor results (no ssb/<run id>/reference or epoch_* folders)"]


def test_command_line_help_and_report(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lightning_ssb", "report", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "RUN_DIR" in done.stdout and "--out" in done.stdout


def test_missing_pieces_become_notes_not_crashes(tmp_path):
    folder = write_run(tmp_path, sites={**ONE_SITE, "blocks.3.output": [1, 8]})
    for d in folder.iterdir():
        (d / "crossover.csv").unlink()  # no crossover at all
    last = folder / "epoch_002"
    arrays = torch.load(last / "arrays.pt", weights_only=True)
    torch.save({k: v for k, v in arrays.items() if "/shared/" not in k}, last / "arrays.pt")  # no shared arrays
    scalars = json.loads((last / "scalars.json").read_text())
    (last / "scalars.json").write_text(json.dumps({k: v for k, v in scalars.items() if not k.endswith("/coverage")}))
    (folder / "epoch_000" / "arrays.pt").write_bytes(b"not a torch file")
    (folder / "epoch_001" / "meta.json").unlink()
    out = tmp_path / "out" / "r.html"
    book = build_report(load_runs([folder]), out, sections=[overview, statistics, learned_labels, crossover_section],
                        dpi=40)
    assert out.exists() and book.errors == []
    notes = " | ".join(book.notes)
    assert "no crossover.csv" in notes
    assert "epoch 0: arrays.pt unreadable" in notes
    assert "epoch 1: no meta.json" in notes
    assert "blocks.3.attn.heads, shared: no node label sets in epoch 2's arrays.pt" in notes
    assert "single head" not in notes and "blocks.3.output, own" not in notes  # its one head is the layer
    assert not any(n.endswith("blocks.3.output__own__learned_head") for n in (f.name for f in book.figures))
    names = [f.name for f in book.figures]
    assert not any("crossover" in n for n in names)
    assert any(n.endswith("blocks.3.attn.heads__own__learned_node") for n in names)
    stats = next(f for f in book.figures if f.name.endswith("blocks.3.attn.heads__own__statistics"))
    cov = stats.data["statistics"]["coverage"]["node/real"]
    assert cov[0] == [-1, 0, 1], "the epoch without coverage is left out of the line"
    page = out.read_text()
    assert page.count('class="note"') >= 5 and "no crossover.csv" in page


def test_a_run_with_one_family_and_no_null_still_reports(tmp_path):
    folder = write_run(tmp_path, sites=ONE_SITE, epochs=(0, 1))
    for d in folder.iterdir():
        scalars = json.loads((d / "scalars.json").read_text())
        keep = {k: v for k, v in scalars.items() if "/shared/" not in k and "/null_" not in k}
        (d / "scalars.json").write_text(json.dumps(keep))
        meta = json.loads((d / "meta.json").read_text())
        (d / "meta.json").write_text(json.dumps({**meta, "families": ["own"], "nulls": []}))
        arrays = torch.load(d / "arrays.pt", weights_only=True)
        torch.save({k: v for k, v in arrays.items() if "/shared/" not in k}, d / "arrays.pt")
    (run,) = load_runs([folder])
    assert run.families == ["own"] and any("no reference/" in n for n in run.notes)
    book = build_report([run], tmp_path / "r.html", sections=[overview, statistics])
    assert book.errors == [] and len(book.figures) == 1
    assert any("shared read-out is not in the results" in n for n in book.notes)
    assert any("no null (permuted probe labels)" in n for n in book.notes)
    stale = tmp_path / "r_figures" / "old_figure.png"
    stale.write_bytes(b"x")
    build_report([run], tmp_path / "r.html", sections=[overview, statistics])
    assert not stale.exists() and len(list((tmp_path / "r_figures").glob("*.png"))) == 1
    lines = book.figures[0].data["statistics"]["live_fraction"]
    assert set(lines) == {"node/real", "head/real"}


def test_block_order_puts_units_with_the_same_labels_together():
    labels = torch.zeros(6, 4, dtype=torch.bool)
    labels[0, 2] = labels[1, 0] = labels[2, 2] = labels[4, 1] = labels[4, 0] = True  # unit 3, 5 dead
    rows, cols = block_order(labels.numpy())
    assert sorted(rows.tolist()) == [0, 1, 2, 4]
    m = labels.numpy()[rows][:, cols]
    first = m.argmax(1)
    assert (first[1:] >= first[:-1]).all() and list(m[-1] | m[-2]) != [False] * 4
    assert rows.tolist().index(0) + 1 == rows.tolist().index(2) or rows.tolist().index(2) + 1 == rows.tolist().index(0)
    rows, cols = block_order(torch.zeros(5, 3, dtype=torch.bool).numpy())  # no live unit: nothing to order
    assert rows.tolist() == [] and cols.tolist() == [0, 1, 2]


def test_a_last_epoch_without_live_units_is_a_note(tmp_path):
    folder = write_run(tmp_path, sites=ONE_SITE, epochs=(-1,))  # the reference only: no unit has a label
    book = build_report(load_runs([folder]), tmp_path / "r.html", sections=[overview, learned_labels], dpi=40)
    assert book.errors == [] and book.figures == []
    assert "Not shown: blocks.3.attn.heads, own: no node has a learned label (before training)." in book.notes


def test_building_the_report_shows_progress(tmp_path, capsys):
    from lightning_ssb.report.sections import SECTIONS

    folder = write_run(tmp_path, sites=ONE_SITE)
    out = write_report([folder], tmp_path / "r.html")
    err = capsys.readouterr().err
    assert out.is_file()
    assert "lightning_ssb: report r.html: 100%" in err and f"{len(SECTIONS)}/{len(SECTIONS)}" in err


def test_the_best_nodes_learned_labels_are_listed_by_name(synthetic_report):
    run, book = synthetic_report
    page = book.out.read_text(encoding="utf-8")
    assert "What the best nodes learned" in page
    arrays = torch.load(run / "epoch_002" / "arrays.pt", weights_only=True)
    site, fam = "blocks.1.attn.heads", "own"
    best = arrays[f"{site}/{fam}/best/nodes"].tolist()
    labels = arrays[f"{site}/{fam}/node/labels"]
    for node in best:  # the row of each best node names exactly its learned labels
        names = ", ".join(LABELS[k] for k in labels[node].nonzero().flatten().tolist()) or "-"
        assert f"<td>{names}</td></tr>" in page.replace("&#x27;", "'")


def test_the_end_of_fit_report_writes_png_only(tmp_path):
    """`fit` writes its report without SVGs (shorter end of run); the page links the PNGs only."""
    folder = write_run(tmp_path, sites=ONE_SITE)
    out = write_report([folder], tmp_path / "r.html", svg=False)
    figures = out.with_name("r_figures")
    pngs, svgs = sorted(figures.glob("*.png")), sorted(figures.glob("*.svg"))
    assert pngs and svgs == []
    page = out.read_text(encoding="utf-8")
    assert ".png\">PNG</a>" in page and "SVG</a>" not in page
    write_report([folder], tmp_path / "r.html")  # the command adds them
    assert sorted(p.stem for p in figures.glob("*.svg")) == [p.stem for p in pngs]


def test_svg_keeps_the_png_layout(tmp_path):
    """The report's SVG keeps the layout of the PNG's draw and is drawn once: element for element the same
    SVG, apart from its random ids, as one saved with matplotlib's placeholder layout engine ("none"),
    which keeps the layout too but draws the whole figure once more before saving."""
    import re

    import numpy as np

    from lightning_ssb.plots import new_figure
    from lightning_ssb.report.html import _save

    def figure():
        fig = new_figure(7, 5)
        ax = fig.add_subplot(1, 2, 1)
        image = ax.imshow(np.arange(400.0).reshape(20, 20))
        ax.set_yticks(range(20), [f"a long relation name {i}" for i in range(20)], fontsize=6)
        fig.colorbar(image, ax=ax, label="recall")
        fig.add_subplot(1, 2, 2).plot([0, 1, 2], [2, 0, 1])
        return fig

    _save(figure(), tmp_path, "fast", 100, svg=True)
    slow = figure()
    slow.savefig(tmp_path / "slow.png", dpi=100)
    slow.set_layout_engine("none")
    slow.savefig(tmp_path / "slow.svg", format="svg")

    def body(path):
        text = (tmp_path / path).read_text()
        text = re.sub(r"<dc:date>.*?</dc:date>", "", text, flags=re.S)
        return re.sub(r'(id="|url\(#|href="#)[^")]*', r"\1", text)

    assert body("fast.svg") == body("slow.svg")
    assert "<image" in body("fast.svg") and body("fast.svg").count("<path") > 20
