"""The report's figures plot exactly the numbers on disk: values are read back from the drawn
matplotlib artists and compared with scalars.json, arrays.pt and crossover.csv read independently."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch

from tests.report.synthetic import LABELS, PENALTIES, epoch_dir


def _figures(book, suffix):
    found = [f for f in book.figures if f.name.endswith(suffix)]
    assert found, f"no figure named *{suffix} in the report"
    return found


def _epoch_dir(run, epoch):
    return run / epoch_dir(epoch)


def _scalars(run, epoch):
    with open(_epoch_dir(run, epoch) / "scalars.json") as f:
        return json.load(f)


def _arrays(run, epoch):
    return torch.load(_epoch_dir(run, epoch) / "arrays.pt", weights_only=True)


def _same(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.allclose(a, b, equal_nan=True, atol=1e-6)


def test_statistics_lines_are_the_logged_scalars(synthetic_report):
    run, book = synthetic_report
    figs = _figures(book, "__statistics")
    assert len(figs) == 4  # 2 sites x 2 read-out families
    checked = 0
    for fig in figs:
        site, fam = fig.data["site"], fig.data["family"]
        for ax in fig.figure.axes:
            stat = ax.get_gid()
            if stat is None:
                continue
            lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
            assert set(lines) == {f"{g}/{k}" for g in ("node", "head") for k in ("real", "null_train", "null_both")}, \
                (site, fam, stat)
            for gid, line in lines.items():
                gran, kind = gid.split("/")
                key = f"ssb/{site}/{fam}/{kind}/{gran}/{stat}" if kind != "real" else f"ssb/{site}/{fam}/{gran}/{stat}"
                states = [-3, -1, 0, 1, 2]  # random init, the start, the epochs: in that order on the axis
                expected = [_scalars(run, e)[key] for e in states]
                expected = [math.nan if v is None else v for v in expected]
                assert list(line.get_xdata()) == [-2, -1, 0, 1, 2], (key, line.get_xdata())
                assert _same(line.get_ydata(), expected), (key, line.get_ydata(), expected)
                checked += 1
    assert checked == 4 * 6 * 6
    # Phi is undefined before training (no live node): a gap in the line, not a zero
    phi = next(ax for ax in figs[0].figure.axes if ax.get_gid() == "phi")
    node_phi = next(ln for ln in phi.get_lines() if ln.get_gid() == "node/real")
    assert math.isnan(node_phi.get_ydata()[0]) and not math.isnan(node_phi.get_ydata()[-1])
    assert [t.get_text() for t in phi.get_xticklabels()] == ["init", "start", "0", "1", "2"]


def test_labels_per_unit_axes_start_at_zero(synthetic_report):
    """A count of labels is never negative: its panels (by epoch and against the penalty) start at 0, and
    their automatic top still shows every plotted value (an all-zero line was centred on a -0.05 to
    0.05 axis)."""
    _, book = synthetic_report
    panels = [ax for fig in _figures(book, "__statistics") + _figures(book, "__sensitivity")
              for ax in fig.figure.axes if (ax.get_gid() or "").split("/")[-1] == "mean_labels"]
    assert len(panels) == 4 + 2  # 4 figures by epoch, and one panel per family against the penalty
    for ax in panels:
        values = np.concatenate([np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines() if ln.get_gid()])
        bottom, top = ax.get_ylim()
        assert bottom == 0.0, (ax.get_gid(), bottom)
        assert top >= np.nanmax(values) and np.nanmin(values) >= 0.0, (ax.get_gid(), top, values)


def test_sensitivity_curves_are_the_csv_rows_with_the_chosen_penalty_marked(synthetic_report):
    run, book = synthetic_report
    figs = _figures(book, "__sensitivity")
    assert len(figs) == 1 and figs[0].data["site"] == "blocks.1.attn.heads" and figs[0].data["states"] == [-1, 2]
    rows = {}
    for epoch in (-1, 2):
        with open(_epoch_dir(run, epoch) / "sensitivity.csv") as f:
            for r in csv.DictReader(f):
                rows.setdefault((r["family"], r["granularity"], epoch), []).append(r)
    checked = 0
    for ax in figs[0].figure.axes:
        if not ax.get_gid():
            continue
        family, stat = ax.get_gid().split("/")
        for line in ax.get_lines():
            gid = line.get_gid() or ""
            if gid.startswith("chosen/"):
                part = (PENALTIES["shared"] if family == "shared"
                        else PENALTIES["node" if gid.endswith("node") else "group"])
                assert list(line.get_xdata()) == [part, part]
                continue
            if not gid:
                continue
            gran, epoch = gid.split("/")
            expected = rows[(family, gran, int(epoch))]
            assert list(line.get_xdata()) == [float(r["l2"]) for r in expected]
            assert _same(line.get_ydata(), [float(r[stat]) for r in expected])
            checked += 1
    assert checked == 2 * 3 * 2 * 2  # families x statistics x granularities x states


def test_sensitivity_panels_span_the_grid_when_a_statistic_is_undefined(synthetic_report, tmp_path):
    """With Phi undefined at every penalty (no two live units, as in a run whose nodes learn nothing), its
    panels still span the penalty grid of sensitivity.csv, like the others, and say why they are empty;
    matplotlib alone fitted such an axis to the run's penalty band."""
    from lightning_ssb.report import load_runs
    from lightning_ssb.report.figures import sensitivity_curves

    run, _ = synthetic_report
    copy = shutil.copytree(run, tmp_path / run.name)
    grid = set()
    for csv_path in copy.rglob("sensitivity.csv"):
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        grid |= {float(r["l2"]) for r in rows}
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({**r, "phi": "nan"} for r in rows)
    assert len(grid) >= 3
    fig, _ = sensitivity_curves(load_runs([copy])[0], "blocks.1.attn.heads")
    panels = {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}
    for gid, ax in panels.items():
        lo, hi = ax.get_xlim()
        assert lo < min(grid) and hi > max(grid), (gid, ax.get_xlim(), sorted(grid))
        notes = [t.get_text() for t in ax.texts if t.get_gid() == "undefined"]
        assert notes == (["missing points: undefined (fewer than two live units)"] if gid.endswith("/phi") else []), \
            (gid, notes)
    assert sum(gid.endswith("/phi") for gid in panels) == 2  # one per read-out family


def test_learned_label_matrix_is_the_last_epochs_label_sets_in_block_order(synthetic_report):
    run, book = synthetic_report
    arrays = _arrays(run, 2)
    figs = _figures(book, "__learned_node")
    assert len(figs) == 4
    for fig in figs:
        d = fig.data
        labels = arrays[f"{d['site']}/{d['family']}/node/labels"].numpy()
        image = fig.figure.axes[0].get_images()[0].get_array()
        units, cols = np.asarray(d["units"]), np.asarray(d["labels"])
        assert sorted(units) == sorted(np.nonzero(labels.any(1))[0]), "rows must be exactly the live nodes"
        assert sorted(cols) == list(range(len(LABELS)))
        assert _same(image, labels[units][:, cols])
        first = np.asarray(image).argmax(1)
        assert (np.diff(first) >= 0).all(), "rows are not ordered by their first learned label"
        names = [t.get_text() for t in fig.figure.axes[0].get_xticklabels()]
        assert names[0] == LABELS[cols[0]][:26] or names[0].startswith(LABELS[cols[0]][:20])
        assert len(names) == len(LABELS)


def test_crossover_curves_are_crossover_csv(synthetic_report):
    run, book = synthetic_report
    with open(_epoch_dir(run, 2) / "crossover.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    figs = _figures(book, "__crossover")
    assert len(figs) == 4
    for fig in figs:
        mine = [r for r in rows if r["site"] == fig.data["site"] and r["family"] == fig.data["family"]]
        ms = [float(r["m"]) for r in mine]
        ax, ax2 = fig.figure.axes[0], fig.figure.axes[1]
        acc, guess = ax.get_lines()[0], ax.get_lines()[-1]
        assert _same(acc.get_xdata(), ms) and _same(acc.get_ydata(), [float(r["acc_mean"]) for r in mine])
        assert _same(guess.get_ydata(), [float(r["guess_level"]) for r in mine])
        coop = ax2.get_lines()[0]
        assert _same(coop.get_ydata(), [float(r["cooperation"]) for r in mine])
        legend = [t.get_text() for t in fig.figure.legends[0].get_texts()]
        assert len(legend) == 3 and any("cooperation" in t for t in legend) and any("1/|R_S|" in t for t in legend)


def test_hull_scatter_is_accuracy_against_bound(synthetic_report):
    run, book = synthetic_report
    arrays = _arrays(run, 2)
    for fig in _figures(book, "__hull_bound__own") + _figures(book, "__hull_bound__shared"):
        fam = fig.data["family"]
        panels = [ax for ax in fig.figure.axes if ax.get_visible() and ax.get_gid()]
        assert [ax.get_gid() for ax in panels] == ["blocks.0.attn.heads", "blocks.1.attn.heads"]
        for ax in panels:
            pts = ax.collections[0].get_offsets()
            assert _same(pts[:, 0], arrays[f"{ax.get_gid()}/{fam}/node/hull_bound"])
            assert _same(pts[:, 1], arrays[f"{ax.get_gid()}/{fam}/node/accuracy"])
            diag = ax.get_lines()[0]
            assert _same(diag.get_xdata(), diag.get_ydata()), "the y = x line"


def test_head_accuracy_grid_is_layers_by_heads(synthetic_report):
    run, book = synthetic_report
    for fig in _figures(book, "__head_accuracy__own") + _figures(book, "__head_accuracy__shared"):
        fam = fig.data["family"]
        panels = [ax for ax in fig.figure.axes if (ax.get_gid() or "").startswith("epoch")]
        assert len(panels) == 5
        for ax, epoch in zip(panels, [-3, -1, 0, 1, 2], strict=True):  # random init, the start, the epochs
            arrays = _arrays(run, epoch)
            expected = np.stack([arrays[f"blocks.{layer}.attn.heads/{fam}/head/accuracy"].numpy() for layer in (0, 1)])
            assert _same(ax.get_images()[0].get_array(), expected), (fam, epoch)


@pytest.mark.parametrize("family", ["own", "shared"])
def test_best_node_matrices_have_named_labels(synthetic_report, family):
    run, book = synthetic_report
    arrays = _arrays(run, 2)
    figs = [f for f in _figures(book, "__best_node") if f.data["family"] == family]
    assert len(figs) == 2
    for fig in figs:
        site = fig.data["site"]
        field_ax, conf_ax = fig.figure.axes[0], fig.figure.axes[1]
        assert (field_ax.get_gid(), conf_ax.get_gid()) == ("field", "confusion")
        assert _same(field_ax.get_images()[0].get_array(), arrays[f"{site}/{family}/best/field"][0])
        assert _same(conf_ax.get_images()[0].get_array(), arrays[f"{site}/{family}/best/confusion"][0])
        assert fig.data["node"] == int(arrays[f"{site}/{family}/best/nodes"][0])
        for ax in (field_ax, conf_ax):
            assert [t.get_text() for t in ax.get_yticklabels()][:3] == ["country", "located in the administra\u2026",
                                                                         "country of citizenship"]
