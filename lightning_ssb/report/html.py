"""The report page: a ``Book`` saves each figure as PNG and SVG and embeds the PNG (base64) in one
self-contained HTML file; sections (``report.sections``) only call ``book.draw`` and ``book.note``."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_ssb.parallel import fork_map
from lightning_ssb.report.figures import MissingData

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1400px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.5em; }
figure { margin: 1em 0 2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; display: block; }
figcaption { font-size: 0.9em; color: #444; margin-top: 0.3em; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.3em 0.8em; margin: 0.5em 0;
        font-size: 0.92em; }
.error { background: #fde8e8; border-left-color: #c00; }
table { border-collapse: collapse; font-size: 0.92em; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em;
        text-align: left; vertical-align: top; }
.intro { max-width: 60em; }
"""


@dataclass
class ReportFigure:
    """One figure of the report: where its files are and the numbers it plots."""

    name: str
    title: str
    png: Path
    svg: Path | None
    data: Any
    figure: Any = None  # the matplotlib Figure, kept only when the book is asked to (tests)


@dataclass
class Book:
    """Collects the figures and notes of one report; ``figures_dir`` receives the PNG and SVG files."""

    out: Path
    figures_dir: Path
    dpi: int = 110
    keep_figures: bool = False
    svg: bool = True  # also write every figure as SVG (the end-of-fit report leaves them to `report`)
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    workers: int = 1  # >1: `draw` defers the figure and `render` draws them all in that many processes
    _jobs: list[_Job] = field(default_factory=list, repr=False)

    def _stem(self, name: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "figure"
        taken = {f.png.stem for f in self.figures} | {j.stem for j in self._jobs}
        base, n = stem, 1
        while stem in taken:
            n += 1
            stem = f"{base}_{n}"
        return stem

    def add(self, name: str, fig, data: Any, title: str, caption: str = "") -> str:
        """Save ``fig`` as PNG and SVG beside the page and return its ``<figure>`` HTML (PNG embedded)."""
        stem = self._stem(name)
        png_bytes = _save(fig, self.figures_dir, stem, self.dpi, self.svg)
        return self._added(name, stem, png_bytes, data, title, caption, fig)

    def embed(self, name: str, png: Path, title: str, caption: str = "") -> str:
        """A PNG already on disk (a custom analysis's figure) copied beside the page and embedded like a drawn
        figure (its data: the source path)."""
        stem = self._stem(name)
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        data = png.read_bytes()
        (self.figures_dir / f"{stem}.png").write_bytes(data)
        return self._added(name, stem, data, {"source": str(png)}, title, caption, svg=False)  # no SVG of a PNG

    def _added(self, name: str, stem: str, png_bytes: bytes, data: Any, title: str, caption: str, fig=None,
               svg: bool | None = None) -> str:
        """Record a figure whose files are written and return its HTML; ``svg``: whether an SVG was written
        beside the PNG (default ``self.svg``)."""
        with_svg = self.svg if svg is None else svg
        png, svg_path = self.figures_dir / f"{stem}.png", self.figures_dir / f"{stem}.svg"
        self.figures.append(ReportFigure(name, title, png, svg_path if with_svg else None, data,
                                         fig if self.keep_figures else None))
        rel = self.figures_dir.name
        b64 = base64.b64encode(png_bytes).decode("ascii")
        links = (f'<a href="{rel}/{png.name}">PNG</a>'
                 + (f' \u00b7 <a href="{rel}/{svg_path.name}">SVG</a>' if with_svg else ""))
        text = f"{html.escape(caption)} " if caption else ""
        return (f'<figure id="{stem}"><img src="data:image/png;base64,{b64}" alt="{html.escape(title)}">'
                f"<figcaption>{text}({links})</figcaption></figure>\n")

    def note(self, text: str, error: bool = False) -> str:
        """A visible note: something missing from the results (or, with ``error``, a figure that failed)."""
        (self.errors if error else self.notes).append(text)
        cls = "note error" if error else "note"
        return f'<p class="{cls}">{html.escape(text)}</p>\n'

    def draw(self, name: str, make: Callable, *args, title: str = "", caption: str = "", **kwargs) -> str:
        """Call a figure function of ``report.figures``; what it cannot draw becomes a note, never a crash.

        With ``workers`` > 1 (and ``keep_figures`` off) the figure is only registered: the returned
        placeholder becomes its HTML when ``render`` has drawn every registered figure in parallel."""
        if self.workers > 1 and not self.keep_figures:
            job = _Job(len(self._jobs), name, self._stem(name), make, args, kwargs, title or name, caption)
            self._jobs.append(job)
            return job.placeholder
        try:
            fig, data = make(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - one broken figure must not cost the whole report
            return self._failed(name, title, err)
        return self.add(name, fig, data, title or name, caption)

    def _failed(self, name: str, title: str, err: BaseException) -> str:
        if isinstance(err, MissingData):
            return self.note(f"Not shown: {err}.")
        why = str(err) if isinstance(err, _DrawError) else f"{type(err).__name__}: {err}"
        return self.note(f"Could not draw {title or name}: {why}", error=True)

    @property
    def pending(self) -> int:
        """Figures ``draw`` deferred that ``render`` has not drawn yet."""
        return len(self._jobs)

    def render(self, html_text: str, progress: Callable[[int], object] | None = None) -> str:
        """Draw every figure ``draw`` deferred, in ``workers`` forked processes (each draws and saves its
        share; figures, notes and errors are recorded here in the order they were drawn), and put each
        one's HTML in place of its placeholder in ``html_text``."""
        jobs, self._jobs = self._jobs, []
        if not jobs:
            return html_text
        outcomes = fork_map(lambda i: _draw_one(jobs[i], self.figures_dir, self.dpi, self.svg), len(jobs),
                            self.workers, progress)
        parts = {}
        for job, (ok, payload, png_bytes) in zip(jobs, outcomes, strict=True):
            if ok:
                parts[job.placeholder] = self._added(job.name, job.stem, png_bytes, payload, job.title, job.caption)
            else:
                parts[job.placeholder] = self._failed(job.name, job.title, payload)
        return re.sub(r"<!--ssb-figure-\d+-->", lambda m: parts.get(m.group(0), ""), html_text)


@dataclass
class _Job:
    """A figure ``Book.draw`` deferred: what to call and where its files go."""

    index: int
    name: str
    stem: str
    make: Callable
    args: tuple
    kwargs: dict
    title: str
    caption: str

    @property
    def placeholder(self) -> str:
        return f"<!--ssb-figure-{self.index}-->"


def _save(fig, folder: Path, stem: str, dpi: int, svg: bool) -> bytes:
    """Write ``fig`` as ``<stem>.png`` (and ``.svg``) into ``folder``; returns the PNG bytes."""
    from lightning_ssb.plots import remove_layout_engine, save_png

    folder.mkdir(parents=True, exist_ok=True)
    png = save_png(fig, dpi)
    (folder / f"{stem}.png").write_bytes(png)
    if svg:
        # the PNG's draw placed everything: the SVG keeps that layout, without the engine's extra draw
        # (the same SVG, up to its random element ids, in about 55% of the time)
        remove_layout_engine(fig)
        fig.savefig(folder / f"{stem}.svg", format="svg")
    return png


class _DrawError(Exception):
    """A figure function's error in a worker, as ``<type>: <message>`` (the error itself may not pickle)."""


def _draw_one(job: _Job, folder: Path, dpi: int, svg: bool):
    try:
        fig, data = job.make(*job.args, **job.kwargs)
        return True, data, _save(fig, folder, job.stem, dpi, svg)
    except Exception as err:  # noqa: BLE001 - reported as the serial path does
        err = err if isinstance(err, MissingData) else _DrawError(f"{type(err).__name__}: {err}")
        return False, err, b""


def page(title: str, intro: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole HTML page; ``sections`` are ``(anchor, heading, body html)``."""
    toc = "".join(f'<li><a href="#{a}">{html.escape(h)}</a></li>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{html.escape(h)}</h2>\n{b}</section>\n' for a, h, b in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<div class=\"intro\">{intro}</div>\n<nav><ul>{toc}</ul></nav>\n"
            f"{body}</body></html>\n")
