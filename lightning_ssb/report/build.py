"""Load runs, run every section, write the page: ``write_report`` is the one call a user (or ``fit``) needs."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from lightning_ssb.parallel import default_workers
from lightning_ssb.progress import progress
from lightning_ssb.report.html import Book, page
from lightning_ssb.report.load import RunResults, load_runs
from lightning_ssb.report.sections import SECTIONS, Section

INTRO = (
    "<p>Spontaneous symmetry breaking of single nodes and heads, read from the SSBMonitor's disk results. "
    "A unit (a node or a head) is read through a linear read-out: <b>own</b> fits one for the unit alone, "
    "<b>shared</b> silences every other node of the site's read-out. A unit's <i>learned label set</i> "
    "L_u holds the labels it recalls at least half of the time, significantly above chance. "
    "\u03a6 = 1 \u2212 mean pairwise Jaccard overlap of the live units' sets (0: all alike, towards 1: each unit "
    "its own labels). The <b>null</b> repeats everything with permuted probe labels: a statistic means "
    "something only above it. \"before training\" is the reference analysis (epoch \u22121). "
    "Chance level: {chance}.</p>")


def default_out(runs: Sequence[RunResults]) -> Path:
    """``<ssb/<run id>>/report.html`` for one run, ``./ssb_report.html`` for several."""
    return runs[0].folder / "report.html" if len(runs) == 1 else Path("ssb_report.html").resolve()


def _resolve_out(out, runs) -> Path:
    if out is None:
        return default_out(runs)
    out = Path(out)
    if out.is_dir() or str(out).endswith(os.sep):
        return out / "report.html"
    return out if out.suffix.lower() in (".html", ".htm") else out.with_suffix(".html")


def build_report(runs: list[RunResults], out, sections: Sequence[Section] = SECTIONS, dpi: int = 110,
                 keep_figures: bool = False, svg: bool = True, workers: int | None = None) -> Book:
    """Write the report of already loaded runs to ``out`` and return the ``Book`` (figures with their
    plotted data, notes, errors); `svg` also writes every figure as SVG. ``workers``: processes that draw
    the figures (default ``parallel.default_workers()``; 1 draws them here, as ``keep_figures`` does)."""
    out = _resolve_out(out, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, int(workers))
    book = Book(out=out, figures_dir=out.with_name(out.stem + "_figures"), dpi=dpi, keep_figures=keep_figures,
                svg=svg, workers=workers)
    if book.figures_dir.is_dir():  # figures of an earlier report there would read as part of this one
        for old in [*book.figures_dir.glob("*.png"), *book.figures_dir.glob("*.svg")]:
            old.unlink()
    parts = []
    for section in progress(sections, desc=f"report {out.name}", unit="sections"):  # minutes on a big run
        try:
            result = section(runs, book)
        except Exception as err:  # noqa: BLE001 - a broken section is a visible note, the rest still renders
            result = (section.__name__, book.note(f"Section {section.__name__} failed: {type(err).__name__}: "
                                                  f"{err}", error=True))
        if result is not None:
            heading, body = result
            parts.append((section.__name__, heading, body))
    ks = sorted({r.num_classes for r in runs if r.num_classes})
    chance = ", ".join(f"1/K = 1/{k} = {1 / k:.4f}" for k in ks) or "unknown (no label count in meta.json)"
    title = "SSB report: " + ", ".join(r.run_id for r in runs)
    text = page(title, INTRO.format(chance=html.escape(chance)), parts)
    if book.pending:
        with progress(total=book.pending, desc=f"report {out.name}: figures ({book.workers} processes)",
                      unit="figures") as bar:
            text = book.render(text, bar.update)
    out.write_text(text, encoding="utf-8")
    return book


def write_report(run_dirs, out=None, sections: Sequence[Section] = SECTIONS, svg: bool = True,
                 workers: int | None = None) -> Path:
    """Write the HTML report of one or more runs and return its path.

    ``run_dirs``: a path or a list of paths, each a run folder (every ``ssb/<run id>/`` under it is
    read) or an ``ssb/<run id>/`` folder itself. ``out``: the HTML file (a folder gets
    ``report.html``); default ``<ssb/<run id>>/report.html`` for one run, ``./ssb_report.html`` for
    several. Figures go as PNG (and SVG, with `svg`) to ``<out stem>_figures/`` beside it. Raises
    ``NoResultsError`` (a ValueError naming the folder) when a path holds no monitor results;
    anything else missing becomes a note in the report.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    runs = load_runs(run_dirs)
    return build_report(runs, out, sections, svg=svg, workers=workers).out
