"""Turn one epoch's analysis into what the sinks log besides scalars: figures and tables."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch

from lightning_ssb.capture import has_heads, parse_snapshot_name
from lightning_ssb.results import epochs
from lightning_ssb.results.keys import figure_key

if TYPE_CHECKING:  # figures (matplotlib) are imported where drawn: results/ loads without matplotlib
    from lightning_ssb.results.build import EpochSnapshot

TABLE_COLUMNS = ["site", "family", "layer", "head", "node", "accuracy", "learned_labels", "hull_labels",
                 "hull_bound"]


def _layer(name: str) -> int:
    return parse_snapshot_name(name)[0]


def _names(mask: torch.Tensor, label_names: list[str]) -> str:
    return " ".join(label_names[i] for i in mask.nonzero().flatten().tolist())


def _analyses(snap: EpochSnapshot, families: dict | None) -> list[tuple[str, str, object]]:
    """``(site, family, SiteAnalysis)`` of every family when given (``{site: {family: analysis}}``),
    else of ``snap.results``."""
    if families is None:
        return [(name, getattr(site, "family", "shared"), site) for name, site in snap.results.items()]
    return [(name, family, site) for name, per_family in families.items() for family, site in per_family.items()]


def node_table(snap: EpochSnapshot, families: dict | None = None) -> tuple[list[str], list[list]]:
    """One row per node of every site and family: where it is, its accuracy, learned and hull labels, bound."""
    rows = []
    for name, family, site in _analyses(snap, families):
        acc = site.node_accuracy.flatten()  # [D]
        d = site.node_accuracy.shape[-1] if site.node_accuracy.dim() == 2 else acc.numel() // site.num_heads
        layer = _layer(name)
        for n in range(acc.numel()):
            rows.append([name, family, layer, n // d, n % d, round(float(acc[n]), 5),
                         _names(site.node_labels[n], snap.label_names), _names(site.hull_labels[n], snap.label_names),
                         round(float(site.hull_bound[n]), 5)])
    return TABLE_COLUMNS, rows

def site_figures(snap: EpochSnapshot, prefix: str, granularities: list[str]) -> dict:
    """Heatmaps (heads: layers x heads; nodes: per site), best-node matrices and envelope, crossover:
    ``{key: Figure}`` (``site_figure_makers``, each drawn here)."""
    return {key: make() for key, make in site_figure_makers(snap, prefix, granularities).items()}


def site_figure_makers(snap: EpochSnapshot, prefix: str, granularities: list[str]) -> dict:
    """The figures of ``site_figures`` as ``{key: zero-argument function returning the Figure}``, so that
    ``plots.draw_pngs`` can draw them in worker processes (the functions hold CPU tensors only)."""
    from lightning_ssb import plots as figures  # here: results/ loads without matplotlib

    out = {}
    title = epochs.label(snap.epoch)
    head_sites = [n for n in snap.results if has_heads(n)]
    if "head" in granularities and head_sites and snap.results[head_sites[0]].head_accuracy is not None:
        grid = torch.stack([snap.results[n].head_accuracy for n in head_sites]).cpu()
        out[figure_key("heads", "accuracy", prefix)] = partial(
            figures.heatmap, grid, f"single-head accuracy, {title}", "head", "layer",
            ynames=[str(_layer(n)) for n in head_sites], vmin=0.0)
    for name, site in snap.results.items():
        if "node" in granularities:
            out[figure_key(name, "node_accuracy", prefix)] = partial(
                figures.heatmap, site.node_accuracy.cpu(), f"{name}: single-node accuracy, {title}", "node", "head",
                vmin=0.0)
        best = site.best_nodes[0] if site.best_nodes else None
        if best is not None:
            node, d = best["node"], site.node_accuracy.shape[1]
            where = f"node {node} (head {node // d}, node {node % d}; accuracy {best['accuracy']:.3f})"
            out[figure_key(name, "best_node", prefix)] = partial(
                figures.matrices, best["field"].cpu(), best["confusion"].cpu(), f"{name}: best {where}, {title}",
                "field matrix F[i, k]", "confusion matrix C[i, j]", snap.label_names)
            x = snap.test[name].flatten(1)[:, node]  # the range the hull labels are computed over
            # the node's own K lines in its family: the effective intercepts (own fit, shared bias,
            # mean-ablation constant), not the read-out's raw bias
            out[figure_key(name, "envelope", prefix)] = partial(
                figures.envelope, site.nodes.slope[node].cpu(), site.nodes.intercept[node].cpu(),
                (float(x.min()), float(x.max())), f"{name}: upper envelope of {where}, {title}", snap.label_names)
        if site.crossover:
            out[figure_key(name, "crossover", prefix)] = partial(
                figures.crossover, site.crossover, f"{name}: crossover in the number of nodes, {title}")
    return out


def crossover_table(snap: EpochSnapshot, families: dict | None = None) -> tuple[list[str], list[list]]:
    """The crossover rows of every site and family in one table: site, family, then the analysis' columns."""
    sites = [(name, family, site) for name, family, site in _analyses(snap, families) if site.crossover]
    columns = list(sites[0][2].crossover[0]) if sites else []
    rows = [[name, family] + [row.get(c) for c in columns] for name, family, site in sites for row in site.crossover]
    return ["site", "family", *columns], rows

def to_png(figure) -> bytes:
    """The PNG bytes of a figure (rendered once, cached on the figure)."""
    from lightning_ssb.plots import to_png as render

    return render(figure)
