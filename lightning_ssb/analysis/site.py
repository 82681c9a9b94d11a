"""One analysis of one site: METHOD.md sections 3 to 7 on a probe snapshot, as one result object."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._checks import check_ablation, check_features, check_labels, check_readout
from .crossover import crossover
from .envelope import node_predictions
from .hull import hull_bound, node_hull_labels
from .order import order_parameters
from .readout import DEFAULT_L2, DEFAULT_MAX_ITER, Readout, fit_readout
from .silencing import head_predictions
from .units import (class_means, cluster_stats, confusion_matrices, head_field_matrices, label_stats,
                    learned_labels, node_field_matrices)

GRANULARITIES = ("node", "head")


@dataclass
class AnalysisConfig:
    """Every choice METHOD.md leaves open, with its default."""

    theta: float = 0.5
    """Recall threshold for a learned label (METHOD.md 4); the label must also beat chance."""
    tau: float = 0.3
    """Threshold on the max-normalised field matrix that makes the 0/1 cluster matrix B_u."""
    ablation: str = "zero"
    """"zero": silenced nodes leave the sum; "mean": they are replaced by their probe-train mean."""
    l2: float = DEFAULT_L2
    """L2 penalty of the read-out on standardised nodes, added to the mean cross-entropy."""
    max_iter: int = DEFAULT_MAX_ITER
    """L-BFGS iterations of the read-out fit (full batch)."""
    seed: int = 0
    """Seeds the probe-train subset (max_train) and the crossover draws."""
    granularities: tuple[str, ...] = GRANULARITIES
    """Units to analyse: "node" and/or "head"."""
    crossover_sizes: list[int] | None = None
    """Subset sizes m of the crossover; None gives 1, 2, 4, ..., D; [] skips the crossover."""
    crossover_draws: int = 5
    """Random subsets drawn per size."""
    max_train: int | None = None
    """Fit the read-out on at most this many probe-train examples (seeded draw); None uses all."""
    exact_reach_max_m: int = 3
    """Largest subset size whose reachable labels are exact (hull); beyond, distinct predictions."""
    top_nodes: int = 8
    """Best nodes (by accuracy) whose confusion and field matrices are kept for figures."""
    max_matrix_classes: int = 1024
    """Above this K the per-unit K x K field matrices (and cluster statistics) are skipped: NaN."""

    def __post_init__(self):
        check_ablation(self.ablation)
        bad = [g for g in self.granularities if g not in GRANULARITIES]
        if bad or not self.granularities:
            raise ValueError(f"granularities must be a non-empty subset of {GRANULARITIES}, got {self.granularities}")
        if not 0 <= self.theta <= 1:
            raise ValueError(f"theta must lie in [0, 1], got {self.theta}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if self.crossover_draws < 1:
            raise ValueError(f"crossover_draws must be >= 1, got {self.crossover_draws}")


@dataclass
class SiteAnalysis:
    """The analysis of one site with H heads of d nodes (D = H*d) and K labels.

    Accuracies are on the probe-test split. node_labels `[D, K]` / head_labels `[H, K]` are the
    learned sets L_u; hull_labels `[D, K]` is R_n over the probe-test range of each node and
    hull_labels_all `[D, K]` over all x; hull_bound and tightness `[D]`. `order` and `clusters`
    map a granularity to its statistics; `crossover` has one row per subset size; `best_nodes`
    holds, for the top nodes, {"node", "accuracy", "confusion" [K, K], "field" [K, K]}.
    """

    readout: Readout
    num_heads: int
    site_accuracy: float
    node_accuracy: Tensor
    head_accuracy: Tensor | None
    node_labels: Tensor
    head_labels: Tensor | None
    hull_labels: Tensor
    hull_labels_all: Tensor
    hull_bound: Tensor
    tightness: Tensor
    prior: Tensor
    order: dict[str, dict[str, float]]
    clusters: dict[str, dict[str, float]]
    crossover: list[dict] = field(default_factory=list)
    best_nodes: list[dict] = field(default_factory=list)

    def scalars(self) -> dict[str, float]:
        """Flat scalars for loggers: site/, {granularity}/, hull/, cluster/{granularity}/ keys."""
        out = {"site/acc": float(self.site_accuracy)}
        for g, stats in self.order.items():
            out.update({f"{g}/{k}": float(v) for k, v in stats.items()})
        out["hull/labels_mean"] = self.hull_labels.sum(1).double().mean().item()
        out["hull/labels_all_mean"] = self.hull_labels_all.sum(1).double().mean().item()
        out["hull/bound_mean"] = self.hull_bound.mean().item()
        out["hull/tightness_mean"] = self.tightness.mean().item()
        for g, stats in self.clusters.items():
            out.update({f"cluster/{g}/{k}": float(v) for k, v in stats.items()})
        return out


def _cluster_means(fields: Tensor | None, tau: float) -> dict[str, float]:
    if fields is None:
        return {"count_mean": math.nan, "size_mean": math.nan, "noise_mean": math.nan}
    c = cluster_stats(fields, tau)
    return {"count_mean": c.count.double().mean().item(), "size_mean": c.mean_size.mean().item(),
            "noise_mean": c.noise.double().mean().item()}


def analyze_site(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int,
                 config: AnalysisConfig = AnalysisConfig(), readout: Readout | None = None) -> SiteAnalysis:
    """Analyse a site from its probe snapshots x_* `[N, H, d]` (H = 1 for a hidden state), y_* `[N]`.

    Fits the read-out on the probe-train split (unless `readout` is given) and measures everything
    else on the probe-test split. Every class 0..K-1 must occur in both splits.
    """
    check_features("x_train", x_train, 3)
    check_features("x_test", x_test, 3)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"x_train and x_test must share [H, d], got {tuple(x_train.shape[1:])} "
                         f"and {tuple(x_test.shape[1:])}")
    y_train = check_labels("y_train", y_train, x_train.shape[0], num_classes)
    y_test = check_labels("y_test", y_test, x_test.shape[0], num_classes)
    cfg = config
    num_heads, d = x_train.shape[1], x_train.shape[2]
    xtr, xte = x_train.flatten(1), x_test.flatten(1)
    if readout is None:
        readout = fit_readout(xtr, y_train, num_classes, l2=cfg.l2, max_iter=cfg.max_iter, seed=cfg.seed,
                              max_examples=cfg.max_train)
    else:
        check_readout(readout, xtr.shape[1])
        if readout.num_classes != num_classes:
            raise ValueError(f"readout has {readout.num_classes} outputs but num_classes={num_classes}")
        if cfg.ablation == "mean" and readout.mean is None:
            readout = Readout(readout.weight, readout.bias, xtr.mean(0))
    k, ab = num_classes, cfg.ablation
    xte = xte.to(readout.weight.dtype)
    prior = torch.bincount(y_test, minlength=k).double() / len(y_test)
    means = class_means(xte, y_test, k)
    matrices = k <= cfg.max_matrix_classes
    site_acc = (readout.fields(xte).argmax(1) == y_test).double().mean().item()

    # Nodes: exact single-node predictions through the envelopes.
    node_pred = node_predictions(xte, readout, ab)
    node_stats = label_stats(node_pred, y_test, k)
    node_labels = learned_labels(node_stats, cfg.theta)
    order = {}
    clusters = {}
    if "node" in cfg.granularities:
        order["node"] = order_parameters(node_labels, node_stats.accuracy)
        clusters["node"] = _cluster_means(node_field_matrices(means, readout.weight) if matrices else None, cfg.tau)

    head_acc = head_labels = None
    if "head" in cfg.granularities:
        head_pred = head_predictions(xte, readout, num_heads, ab)
        head_stats = label_stats(head_pred, y_test, k)
        head_acc, head_labels = head_stats.accuracy, learned_labels(head_stats, cfg.theta)
        order["head"] = order_parameters(head_labels, head_acc)
        clusters["head"] = _cluster_means(head_field_matrices(means, readout.weight, num_heads)
                                          if matrices else None, cfg.tau)

    # The hull bound over each node's observed probe-test range (the data the accuracy is measured on).
    hull_labels = node_hull_labels(readout, xte.min(0).values, xte.max(0).values, ab)
    hull_all = node_hull_labels(readout, None, None, ab)
    bound = hull_bound(hull_labels, prior)
    tightness = node_stats.accuracy / bound

    rows = []
    if cfg.crossover_sizes != []:
        rows = crossover(xte, y_test, readout, node_labels, num_heads, cfg.crossover_sizes, cfg.crossover_draws,
                         cfg.seed, ab, cfg.theta, cfg.exact_reach_max_m)

    best = []
    if matrices and cfg.top_nodes > 0:
        top = torch.argsort(node_stats.accuracy, descending=True, stable=True)[:cfg.top_nodes]
        conf = confusion_matrices(node_pred[top], y_test, k)
        fields = node_field_matrices(means, readout.weight, top)
        best = [{"node": int(n), "accuracy": node_stats.accuracy[n].item(), "confusion": conf[i], "field": fields[i]}
                for i, n in enumerate(top)]

    return SiteAnalysis(readout, num_heads, site_acc, node_stats.accuracy.view(num_heads, d), head_acc,
                        node_labels, head_labels, hull_labels, hull_all, bound, tightness, prior, order,
                        clusters, rows, best)
