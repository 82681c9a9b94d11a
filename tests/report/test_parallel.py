"""The report's figures drawn by forked worker processes are the figures drawn in one process: the same
files byte for byte, the same page, the same plotted data, notes and errors, in the same order."""

import re

import pytest

from lightning_ssb.parallel import default_workers
from lightning_ssb.plots import new_figure
from lightning_ssb.report.build import build_report
from lightning_ssb.report.figures import MissingData
from lightning_ssb.report.load import load_runs
from lightning_ssb.report.sections import SECTIONS
from tests.report.synthetic import write_run


def _broken(run):
    raise ValueError("boom")


def _absent(run):
    raise MissingData("nothing here")


def _line(run):
    fig = new_figure(3, 2)
    fig.subplots().plot([0, 1], [1, 0])
    return fig, {"run": run.run_id}


def extras(runs, book):
    """A section whose figures fail, miss their data and succeed, between the built-in ones."""
    run = runs[0]
    body = [book.draw("broken", _broken, run, title="a broken figure"),
            book.draw("absent", _absent, run, title="an absent figure"),
            book.draw("line", _line, run, title="a line")]
    return "Extras", "".join(body)


def _page(path):
    text = path.read_text()
    return re.sub(r"\w+_figures/", "FIGURES/", text)


def test_forked_workers_draw_the_same_report(tmp_path):
    runs = load_runs([write_run(tmp_path / "run")])
    sections = [*SECTIONS[:2], extras, *SECTIONS[2:]]
    serial = build_report(runs, tmp_path / "serial.html", sections, svg=True, workers=1)
    forked = build_report(runs, tmp_path / "forked.html", sections, svg=True, workers=2)
    assert len(serial.figures) > 20
    assert [f.name for f in forked.figures] == [f.name for f in serial.figures]
    for a, b in zip(serial.figures, forked.figures, strict=True):
        assert a.png.read_bytes() == b.png.read_bytes(), a.name
        assert a.svg.stat().st_size > 0 and b.svg.stat().st_size > 0
        assert repr(a.data) == repr(b.data), a.name
    assert forked.notes == serial.notes and forked.errors == serial.errors
    assert "Could not draw a broken figure: ValueError: boom" in forked.errors
    assert "Not shown: nothing here." in forked.notes
    assert _page(tmp_path / "forked.html") == _page(tmp_path / "serial.html")
    assert "<!--ssb-figure-" not in (tmp_path / "forked.html").read_text()


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("LIGHTNING_SSB_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("LIGHTNING_SSB_WORKERS", "many")
    with pytest.raises(ValueError, match="LIGHTNING_SSB_WORKERS must be an integer, got 'many'"):
        default_workers()
