"""Matplotlib figures of an analysis (object API on the Agg canvas: safe off the main thread)."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

MAX_TICK_LABELS = 70  # more tick labels than this are unreadable; FewRel's 64 still fit


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def to_png(figure) -> bytes:
    """PNG bytes of a Figure, rendered once and cached on it (the worker renders, sinks reuse)."""
    if isinstance(figure, (bytes, bytearray)):
        return bytes(figure)
    cached = getattr(figure, "_ssb_png", None)
    if cached is None:
        buf = io.BytesIO()
        figure.savefig(buf, format="png", bbox_inches="tight")
        cached = buf.getvalue()
        figure._ssb_png = cached
    return cached


def _np(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _ticks(ax, axis: str, names: Sequence[str] | None, n: int) -> None:
    if names is None or n > MAX_TICK_LABELS:
        return
    positions = np.arange(n)
    if axis == "x":
        ax.set_xticks(positions, list(names)[:n], rotation=90, fontsize=5)
    else:
        ax.set_yticks(positions, list(names)[:n], fontsize=5)


def heatmap(matrix, title: str, xlabel: str, ylabel: str, xnames=None, ynames=None,
            vmin: float | None = None, vmax: float | None = None, cmap: str = "viridis") -> Figure:
    """A labelled heatmap with a colour bar, e.g. per-head accuracy ``[layers, heads]``."""
    m = _np(matrix)
    fig = new_figure(max(4.0, min(12.0, 0.12 * m.shape[1] + 3)), max(3.0, min(10.0, 0.12 * m.shape[0] + 2)))
    ax = fig.subplots()
    im = ax.imshow(m, aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _ticks(ax, "x", xnames, m.shape[1])
    _ticks(ax, "y", ynames, m.shape[0])
    return fig


def matrices(left, right, title: str, left_title: str, right_title: str, label_names=None) -> Figure:
    """Two ``[K, K]`` matrices side by side (a node's field and confusion matrices)."""
    fig = new_figure(11, 5)
    for ax, m, t in zip(fig.subplots(1, 2), (left, right), (left_title, right_title)):
        m = _np(m)
        im = ax.imshow(m, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("output")
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
    """Accuracy, random-guess level and cooperation ratio against the number of nodes m (log x)."""
    ms = np.array([r["m"] for r in rows], dtype=float)
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    for key, label, style in (("acc_mean", "accuracy acc(S)", "o-"), ("guess_level", "guess 1/|R_S|", "s--")):
        if rows and key in rows[0]:
            ax.plot(ms, [r[key] for r in rows], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("nodes m")
    ax.set_ylabel("accuracy")
    if rows and "cooperation_mean" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(ms, [r["cooperation_mean"] for r in rows], "^:", color="tab:red", label="cooperation")
        ax2.set_ylabel("cooperation ratio", color="tab:red")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig
