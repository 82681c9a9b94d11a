"""Matplotlib figures of an analysis (object API on the Agg canvas: safe off the main thread).

Shared by the monitor's per-epoch figures (``lightning_ssb.callbacks.figures`` re-exports these) and
the report: the bottom layer (it imports nothing of the package but ``parallel``), so that ``results/``
draws with it without loading the report, and the report command without Lightning.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_TICK_LABELS = 70  # more tick labels than this are unreadable; FewRel's 64 still fit
MAX_NAME_CHARS = 26  # longer label names are cut with an ellipsis (FewRel has 48-character relation names)


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A figure with constrained layout: colour bars, tick labels and titles never overlap."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def short_name(name, max_chars: int = MAX_NAME_CHARS) -> str:
    """A label name cut to ``max_chars`` characters (the last one an ellipsis) for tick labels."""
    name = str(name)
    return name if len(name) <= max_chars else name[: max_chars - 1].rstrip() + "\u2026"


def tick_fontsize(n: int) -> float:
    """Tick label size that keeps ``n`` labels apart on a matrix axis of the sizes used here."""
    return 8.0 if n <= 16 else 7.0 if n <= 32 else 5.0


def remove_layout_engine(figure) -> None:
    """No layout engine at all on ``figure``, not the placeholder "none": with any engine set, savefig
    first draws the whole figure once more for a layout that has nothing left to do. (The rc context
    keeps matplotlib from putting the rc default engine back.)"""
    import matplotlib

    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        figure.set_layout_engine(None)


def save_png(figure, dpi: float | None = None) -> bytes:
    """PNG bytes of ``figure`` at ``dpi`` (default: the figure's), drawn once.

    With a layout engine, ``savefig`` draws the whole figure twice: once, not rendered, for the layout,
    then for the pixels. Here the engine lays the figure out without a draw, and the one draw renders
    it: the same bytes (tested), without the first pass over every tick label. The engine and the dpi
    are the figure's again afterwards.
    """
    engine, figure_dpi = figure.get_layout_engine(), figure.dpi
    dpi = figure_dpi if dpi is None else dpi
    buf = io.BytesIO()
    try:
        if engine is not None:
            figure.set_dpi(dpi)  # lay out at the dpi it is drawn at, as savefig does
            engine.execute(figure)
            remove_layout_engine(figure)
        figure.savefig(buf, format="png", dpi=dpi)
    finally:
        if engine is not None:
            figure.set_layout_engine(engine)
            figure.set_dpi(figure_dpi)
    return buf.getvalue()


def to_png(figure) -> bytes:
    """PNG bytes of a Figure, rendered once and cached on it (the worker renders, sinks reuse)."""
    if isinstance(figure, (bytes, bytearray)):
        return bytes(figure)
    cached = getattr(figure, "_ssb_png", None)
    if cached is None:
        from matplotlib.layout_engine import ConstrainedLayoutEngine

        if isinstance(figure.get_layout_engine(), ConstrainedLayoutEngine):
            # no bbox_inches="tight": constrained layout (every figure of plots.new_figure) already keeps
            # everything inside the canvas, and "tight" drew the whole figure once more to crop it
            cached = save_png(figure)
        else:  # a figure of a custom analysis, laid out some other way or not at all: cropped, as before
            buf = io.BytesIO()
            figure.savefig(buf, format="png", bbox_inches="tight")
            cached = buf.getvalue()
        figure._ssb_png = cached
    return cached


def draw_pngs(makers: dict, workers: int = 1) -> dict[str, bytes]:
    """``{key: PNG bytes}`` of ``{key: zero-argument function returning a Figure}``, drawn by ``fork_map``."""
    from lightning_ssb.parallel import fork_map

    keys = list(makers)
    pngs = fork_map(lambda i: to_png(makers[keys[i]]()), len(keys), workers)
    return dict(zip(keys, pngs, strict=True))


def _np(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _ticks(ax, axis: str, names: Sequence[str] | None, n: int) -> None:
    if names is None or n > MAX_TICK_LABELS:
        return
    positions = np.arange(n)
    labels = [short_name(x) for x in list(names)[:n]]
    if axis == "x":
        ax.set_xticks(positions, labels, rotation=90, fontsize=tick_fontsize(n))
    else:
        ax.set_yticks(positions, labels, fontsize=tick_fontsize(n))


# Titles of matrix plots at the default height, given explicitly: matplotlib then skips its automatic
# placement, which measures every tick label of the axes at each draw to dodge x ticks on top (these
# have none) and a y offset text (categorical or index axes have none). The same picture, sooner: a
# best-node figure's 200 tick labels made that a sixth of its time.
TITLE_Y = 1.0


def heatmap(matrix, title: str, xlabel: str, ylabel: str, xnames=None, ynames=None,
            vmin: float | None = None, vmax: float | None = None, cmap: str = "viridis",
            cbar_label: str | None = None) -> Figure:
    """A labelled heatmap with a colour bar, e.g. per-head accuracy ``[layers, heads]``."""
    m = _np(matrix)
    fig = new_figure(max(4.0, min(12.0, 0.12 * m.shape[1] + 3)), max(3.0, min(10.0, 0.12 * m.shape[0] + 2)))
    ax = fig.subplots()
    im = ax.imshow(m, aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax)
    if cbar_label:
        cbar.set_label(cbar_label)
    ax.set_title(title, fontsize=9, y=TITLE_Y)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _ticks(ax, "x", xnames, m.shape[1])
    _ticks(ax, "y", ynames, m.shape[0])
    return fig


def matrices(left, right, title: str, left_title: str, right_title: str, label_names=None,
             left_cbar: str | None = None, right_cbar: str | None = None,
             xlabels: tuple[str, str] = ("output", "output")) -> Figure:
    """Two ``[K, K]`` matrices side by side (a node's field and confusion matrices).

    Constrained layout keeps the left colour bar clear of the right panel's label names; the
    figure grows with K so that 64 relation names stay legible.
    """
    k = _np(left).shape[0]
    named = label_names is not None and k <= MAX_TICK_LABELS
    side = max(4.0, min(8.0, 0.1 * k + 2.5)) + (1.6 if named else 0.0)  # room for the names
    fig = new_figure(2 * side + 1.0, side + (1.2 if named else 0.4))
    for ax, m, t, unit, xlabel in zip(fig.subplots(1, 2), (left, right), (left_title, right_title),
                                      (left_cbar, right_cbar), xlabels, strict=True):
        m = _np(m)
        im = ax.imshow(m, aspect="auto", interpolation="nearest")
        cbar = fig.colorbar(im, ax=ax, shrink=0.8)
        if unit:
            cbar.set_label(unit)
        ax.set_title(t, fontsize=9, y=TITLE_Y)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("true label")
        _ticks(ax, "x", label_names, m.shape[1])
        _ticks(ax, "y", label_names, m.shape[0])
    fig.suptitle(title, fontsize=10)
    return fig


def envelope(weight, bias, x_range: tuple[float, float], title: str, label_names=None,
             max_labels: int = 12) -> Figure:
    """The K lines z_k(x) = w_k x + b_k of one node over its observed range, upper envelope in black.

    Labels owning a piece of the envelope inside the range are named at the piece's centre.
    """
    w, b = _np(weight), _np(bias)
    lo, hi = x_range
    if not hi > lo:
        hi = lo + 1.0
    xs = np.linspace(lo, hi, 400)
    z = np.outer(xs, w) + b  # [400, K]
    top = z.argmax(1)
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    ax.plot(xs, z, color="0.8", linewidth=0.5)
    ax.plot(xs, z.max(1), color="black", linewidth=1.5)
    owners = [k for k in dict.fromkeys(top.tolist())]
    for k in owners[:max_labels]:
        idx = np.nonzero(top == k)[0]
        mid = idx[len(idx) // 2]
        name = label_names[k] if label_names is not None else str(k)
        ax.annotate(str(name), (xs[mid], z[mid, k]), fontsize=7, xytext=(0, 6), textcoords="offset points",
                    ha="center")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("node activation x")
    ax.set_ylabel("field z_k(x)")
    return fig


def crossover(rows: list[dict], title: str) -> Figure:
    """Accuracy, random-guess level and cooperation ratio against the number of nodes m (log x).

    Accuracy and 1/|R_S| share the left axis, the cooperation ratio (``cooperation`` in
    crossover.csv, ``cooperation_mean`` in the monitor's rows) the right one; one legend names
    all three.
    """
    ms = np.array([r["m"] for r in rows], dtype=float)
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    handles: list = []  # an errorbar container and lines: whatever the legend takes
    if rows and "acc_mean" in rows[0]:
        std = [r.get("acc_std", 0.0) for r in rows] if "acc_std" in rows[0] else None
        h = ax.errorbar(ms, [r["acc_mean"] for r in rows], yerr=std, fmt="o-", capsize=3,
                        label="accuracy acc(S) (mean \u00b1 sd over draws)" if std else "accuracy acc(S)")
        handles.append(h)
    if rows and "guess_level" in rows[0]:
        handles += ax.plot(ms, [r["guess_level"] for r in rows], "s--", label="random guess 1/|R_S|")
    ax.set_xscale("log", base=2)
    if len(ms):
        ax.set_xticks(ms, [str(int(m)) for m in ms])
        ax.minorticks_off()
    ax.set_xlabel("nodes in the subset, m")
    ax.set_ylabel("accuracy on probe-test")
    ax.set_ylim(bottom=0)
    coop = next((c for c in ("cooperation", "cooperation_mean") if rows and c in rows[0]), None)
    if coop:
        ax2 = ax.twinx()
        handles += ax2.plot(ms, [r[coop] for r in rows], "^:", color="tab:red",
                            label="cooperation ratio (right axis)")
        ax2.set_ylabel("cooperation ratio |L_S| / sum |L_n|", color="tab:red")
        ax2.tick_params(axis="y", colors="tab:red")
        ax2.axhline(1.0, color="tab:red", linewidth=0.6, alpha=0.5)
        ax2.set_ylim(bottom=0)
    if handles:  # below the axes: a legend inside would hide one of three curves somewhere
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig
