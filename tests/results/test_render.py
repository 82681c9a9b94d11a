"""Figures drawn from an analysis show the node's fields in its read-out family."""

import numpy as np
import torch

from lightning_ssb.analysis import AnalysisConfig, analyze_site
from lightning_ssb.results.build import EpochSnapshot
from lightning_ssb.results.keys import figure_key
from lightning_ssb.results.render import site_figures


def test_envelope_figure_uses_the_mean_ablation_intercepts():
    gen = torch.Generator().manual_seed(0)
    k, h, d, n = 4, 2, 3, 240
    y = torch.arange(n) % k
    x = (torch.randn(k, h, d, generator=gen)[y] + torch.randn(n, h, d, generator=gen) + 5.0)
    site = analyze_site(x, y, x, y, k, AnalysisConfig(readout="shared", ablation="mean", shared_bias=True,
                                                      crossover_sizes=[], top_nodes=1, max_iter=50))
    snap = EpochSnapshot(0, 0, {"blocks.0.attn.heads": x}, {"blocks.0.attn.heads": x}, y, y, k, list("abcd"))
    snap.results["blocks.0.attn.heads"] = site
    fig = site_figures(snap, "ssb", ["node"])[figure_key("blocks.0.attn.heads", "envelope", "ssb")]
    node = site.best_nodes[0]["node"]
    lines = fig.axes[0].lines[:k]                       # the K grey lines, then the envelope
    r = site.readout
    mu = r.mean
    for label, line in enumerate(lines):
        xs, zs = line.get_data()
        # independent: the other nodes held at their probe-train mean, plus the bias
        const = r.bias[label] + (r.weight[label] * mu).sum() - r.weight[label, node] * mu[node]
        np.testing.assert_allclose(zs, xs * float(r.weight[label, node]) + float(const), rtol=1e-4, atol=1e-4)


def test_figure_titles_name_the_state():
    """An `analyze` result was titled "reference (before training)": every state has its own name."""
    gen = torch.Generator().manual_seed(1)
    k, n = 3, 90
    y = torch.arange(n) % k
    x = torch.randn(k, 2, 2, generator=gen)[y] + torch.randn(n, 2, 2, generator=gen)
    site = analyze_site(x, y, x, y, k, AnalysisConfig(readout="shared", crossover_sizes=[], top_nodes=1, l2=1e-3))
    for epoch, name in ((-2, "analyze"), (-3, "random init"), (-1, "before training"), (4, "epoch 4")):
        snap = EpochSnapshot(epoch, 0, {"blocks.0.attn.heads": x}, {"blocks.0.attn.heads": x}, y, y, k, list("abc"))
        snap.results["blocks.0.attn.heads"] = site
        figs = site_figures(snap, "ssb", ["node", "head"])
        titles = [ax.get_title() for fig in figs.values() for ax in fig.axes if ax.get_title()]
        titles += [fig._suptitle.get_text() for fig in figs.values() if fig._suptitle is not None]
        assert titles and all(name in t for t in titles if "accuracy" in t or "envelope" in t), (epoch, titles)
        assert not any("reference" in t for t in titles if epoch != -1)


def test_figures_drawn_by_forked_workers_are_the_ones_drawn_here():
    """The monitor draws a state's figures in forked processes on a CPU: the same PNG bytes, same keys."""
    from lightning_ssb.plots import draw_pngs, to_png
    from lightning_ssb.results.render import site_figure_makers

    gen = torch.Generator().manual_seed(2)
    k, n = 3, 120
    y = torch.arange(n) % k
    x = torch.randn(k, 2, 3, generator=gen)[y] + torch.randn(n, 2, 3, generator=gen)
    site = analyze_site(x, y, x, y, k, AnalysisConfig(readout="shared", crossover_sizes=[1, 2, 6], top_nodes=1,
                                                      l2=1e-3, crossover_draws=2))
    snap = EpochSnapshot(1, 0, {"blocks.0.attn.heads": x}, {"blocks.0.attn.heads": x}, y, y, k, list("abc"))
    snap.results["blocks.0.attn.heads"] = site
    makers = site_figure_makers(snap, "ssb", ["node", "head"])
    assert len(makers) == 5  # heads heatmap, node accuracy, best node, envelope, crossover
    here = {key: to_png(fig) for key, fig in site_figures(snap, "ssb", ["node", "head"]).items()}
    assert draw_pngs(makers, workers=2) == here


def _matrix_figures(names):
    from lightning_ssb import plots

    gen = torch.Generator().manual_seed(2)
    k = len(names)
    field, confusion = torch.randn(k, k, generator=gen), torch.randint(0, 30, (k, k), generator=gen)
    return [plots.matrices(field, confusion, "blocks.5.attn.heads: best node 7 (head 0, node 7), epoch 1",
                           "field matrix F[i, k]", "confusion matrix C[i, j]", names),
            plots.heatmap(torch.rand(6, 12, generator=gen), "single-head accuracy, epoch 1", "head", "layer",
                          ynames=[str(i) for i in range(6)], vmin=0.0)]


def test_matrix_titles_placed_by_hand_draw_what_matplotlibs_placement_draws(monkeypatch):
    """The heatmaps' titles are given their height (plots.TITLE_Y), which spares matplotlib's placement
    its measuring of every tick label at each draw: with tick labels at the bottom only, the pixels must
    be those of the automatic placement (TITLE_Y None), title and all."""
    from lightning_ssb import plots

    names = [f"relation name {i} of the label set" for i in range(64)]  # FewRel-long names, cut to 26
    fixed = [plots.to_png(fig) for fig in _matrix_figures(names)]
    monkeypatch.setattr(plots, "TITLE_Y", None)
    automatic = _matrix_figures(names)
    assert all(ax._autotitlepos for fig in automatic for ax in fig.axes if ax.get_title())  # really automatic
    assert [plots.to_png(fig) for fig in automatic] == fixed


def test_a_figure_saved_without_a_tight_box_keeps_everything_inside_its_canvas():
    """``to_png`` saves the canvas as constrained layout laid it out (no second draw to crop it): every
    title, tick label and colour bar, 64 rotated label names included, must lie inside the PNG."""
    import io

    from matplotlib.image import imread

    from lightning_ssb import plots

    names = [f"relation name {i} of the label set" for i in range(64)]
    for fig in _matrix_figures(names):
        png = plots.to_png(fig)
        renderer = fig.canvas.get_renderer()
        box, canvas = fig.get_tightbbox(renderer), fig.bbox_inches
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1
        pixels = imread(io.BytesIO(png))
        assert pixels.shape[:2] == (round(fig.bbox.height), round(fig.bbox.width))
        edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])[:, :3]
        assert (edge == 1.0).all()  # a white margin all round: nothing runs off the canvas


def test_a_figure_laid_out_once_saves_the_bytes_savefig_saves():
    """``save_png`` lays a figure out without the draw savefig spends on it: the same PNG bytes as
    ``savefig`` at the figure's dpi and at the report's, for colour bars, rotated names and a legend
    outside the axes; the figure keeps its layout engine and dpi."""
    import io

    from lightning_ssb import plots

    rows = [{"m": m, "acc_mean": 0.1 * i, "acc_std": 0.01, "guess_level": 1 / (i + 1), "cooperation_mean": 1.0 + i}
            for i, m in enumerate((1, 2, 4, 8))]
    names = [f"label {i}" for i in range(50)]
    makers = [lambda: _matrix_figures(names)[0], lambda: _matrix_figures(names)[1],
              lambda: plots.crossover(rows, "blocks.0.attn.heads: crossover")]
    for dpi in (None, 110):
        for make in makers:
            buf = io.BytesIO()  # two fresh figures: a second save of one figure differs in matplotlib too
            make().savefig(buf, format="png", dpi=dpi if dpi is not None else "figure")
            fig = make()
            engine, figure_dpi = fig.get_layout_engine(), fig.dpi
            assert plots.save_png(fig, dpi) == buf.getvalue()
            assert fig.get_layout_engine() is engine and fig.dpi == figure_dpi


def test_a_custom_figure_without_constrained_layout_is_still_cropped_to_its_content():
    """A custom analysis' figure may put a label outside its canvas (no layout engine): ``to_png`` keeps
    cropping such figures to their content, so the label is in the PNG."""
    import io

    from matplotlib.figure import Figure
    from matplotlib.image import imread

    from lightning_ssb import plots

    fig = Figure(figsize=(3, 2), dpi=100)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1])
    ax.text(1.3, 0.5, "a note right of the canvas", transform=ax.transAxes)  # ends beyond x = 3 in
    pixels = imread(io.BytesIO(plots.to_png(fig)))
    assert pixels.shape[1] > 300  # wider than the 300-pixel canvas: the crop reached out to the note
