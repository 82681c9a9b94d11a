"""One analysis of one site: docs/method.md sections 3 to 7 on a probe snapshot.

`analyze_site` analyses one read-out family (`AnalysisConfig.readout` "own" or "shared");
`analyze_all` runs every family the config asks for, and the null (the same analysis with the probe
labels permuted), and returns them together with their statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ._checks import check_ablation, check_features, check_labels, check_readout
from .crossover import crossover
from .families import FAMILIES, HeadMaps, NodeLines, own_units, shared_units
from .fit import DEFAULT_CONST_TOL, DEFAULT_L2, DEFAULT_MAX_ITER, DEFAULT_OWN_L2, FitSettings
from .hull import hull_bound
from .order import order_parameters
from .readout import Readout, fit_readout
from .units import class_means, cluster_stats, confusion_matrices, head_field_matrices, label_stats, \
    learned_labels, node_field_matrices

GRANULARITIES = ("node", "head")
READOUTS = ("both",) + FAMILIES
NULL_MODES = ("all", "reference", "off")


@dataclass
class AnalysisConfig:
    """Every choice docs/method.md leaves open, with its default (the monitor's ``analysis:`` group)."""

    readout: Literal["both", "own", "shared"] = "both"
    """Read-out family (docs/method.md 3): "own" (a read-out fitted on the unit alone, with a bias),
    "shared" (the unit's contribution to one read-out of the site) or "both" (`analyze_all` only)."""
    shared_bias: bool = False
    """Give the shared read-out a bias. Off by default: on a fine-tuned BERT the bias dominates a single
    node's small field and every node predicts one label (docs/method.md 3); kept for comparison."""
    ablation: Literal["zero", "mean"] = "zero"
    """Shared family: "zero" (silenced nodes leave the sum) or "mean" (they stay at their probe-train mean)."""
    theta: float = 0.5
    """Recall a label needs to be learned by a unit (docs/method.md 4)."""
    q: float | None = 0.05
    """False discovery rate of the binomial test of learned labels (Benjamini-Hochberg over the site's
    (unit, label) pairs); null switches the test off (noise then passes)."""
    null_mode: Literal["all", "reference", "off"] = "all"
    """Run the null (permuted probe labels) every analysis ("all"), only before training
    ("reference"), or never ("off"). (Not called `null`: YAML reads that key as None.)"""
    tau: float = 0.3
    """Threshold on the max-normalised field matrix that makes the 0/1 cluster matrix B_u."""
    l2: float = DEFAULT_L2
    """L2 penalty of the shared read-out on standardised nodes, added to the mean cross-entropy."""
    own_l2: float = DEFAULT_OWN_L2
    """L2 penalty of the own read-outs (nodes, heads, crossover subsets). A node is one feature with 2K
    parameters fitted on a few dozen examples per class; with a weak penalty, sampling noise puts nearly
    every label on its envelope and lets marginal associations pass. On MiniLM's last layer (FewRel
    sample, 40 per relation) the nodes with a learned label before / after one fine-tuning epoch were
    29% / 100% at 1e-3, 1% / 98% at 0.1, 0% / 97% at 0.15, 0% / 95% at 0.25, and 0% / 0% at 0.3,
    where the penalty flattens every line: 0.15 keeps a factor 2 from that edge. On the mean
    cross-entropy it is an effect-size floor that does not shrink with the probe size."""
    max_iter: int = DEFAULT_MAX_ITER
    """L-BFGS iterations of each read-out fit (full batch)."""
    const_tol: float = DEFAULT_CONST_TOL
    """A node whose probe-train std is below const_tol x its root mean square is constant: weight 0."""
    own_bins: int | None = 128
    """Own read-out of single nodes: fitted on this many quantile bins of each node's activation
    (binned sufficient statistics, one vectorised fit for all nodes); null fits on every example."""
    max_train: int | None = None
    """Fit the read-outs on at most this many probe-train examples (seeded draw); null uses all."""
    seed: int = 0
    """Seeds max_train's draw, the crossover draws and the null's permutation."""
    granularities: tuple[str, ...] = GRANULARITIES
    """Units to analyse: "node" and/or "head"."""
    crossover_sizes: list[int] | None = None
    """Subset sizes m of the crossover; null gives 1, 2, 4, ..., D; [] skips the crossover."""
    crossover_draws: int = 5
    """Random subsets drawn per size."""
    crossover_max_train: int | None = 4096
    """Own family: each subset's read-out is fitted on at most this many probe-train examples."""
    top_nodes: int = 8
    """Best nodes (by accuracy) whose confusion and field matrices are kept for figures."""
    max_matrix_classes: int = 1024
    """Above this K the per-unit K x K field matrices (and cluster statistics) are skipped: NaN."""

    def __post_init__(self):
        check_ablation(self.ablation)
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.null_mode not in NULL_MODES:
            raise ValueError(f"null_mode must be one of {NULL_MODES}, got {self.null_mode!r}")
        self.granularities = tuple(self.granularities)
        bad = [g for g in self.granularities if g not in GRANULARITIES]
        if bad or not self.granularities:
            raise ValueError(f"granularities must be a non-empty subset of {GRANULARITIES}, got {self.granularities}")
        if not 0 <= self.theta <= 1:
            raise ValueError(f"theta must lie in [0, 1], got {self.theta}")
        if self.q is not None and not 0 < self.q < 1:
            raise ValueError(f"q must lie in (0, 1) or be null (no test), got {self.q}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if self.crossover_draws < 1:
            raise ValueError(f"crossover_draws must be >= 1, got {self.crossover_draws}")
        if self.crossover_sizes is not None and any(int(m) < 1 for m in self.crossover_sizes):
            raise ValueError(f"crossover_sizes must be positive integers, got {self.crossover_sizes}")
        for name in ("own_bins", "max_train", "crossover_max_train"):
            value = getattr(self, name)
            if value is not None and int(value) < 2:
                raise ValueError(f"{name} must be null or an integer >= 2, got {value}")
        if self.top_nodes < 0:
            raise ValueError(f"top_nodes must be >= 0, got {self.top_nodes}")
        self.fit_settings(), self.fit_settings(own=True)  # l2, own_l2, max_iter, const_tol

    def fit_settings(self, own: bool = False) -> FitSettings:
        """Fit settings of the shared read-out, or (own=True) of the own read-outs."""
        return FitSettings(self.own_l2 if own else self.l2, self.max_iter, self.const_tol)

    def families(self) -> tuple[str, ...]:
        return FAMILIES if self.readout == "both" else (self.readout,)


@dataclass
class SiteAnalysis:
    """The analysis of one site (H heads of d nodes, D = H*d, K labels) for one read-out family.

    Accuracies are on the probe-test split. node_labels `[D, K]` / head_labels `[H, K]` are the learned
    sets L_u; hull_labels `[D, K]` is R_n over each node's probe-test range and hull_labels_all `[D, K]`
    over all x; hull_bound and tightness `[D]`. `order` and `clusters` map a granularity to its
    statistics; `crossover` has one row per subset size; `best_nodes` holds, for the top nodes,
    {"node", "accuracy", "confusion" [K, K], "field" [K, K]}. `readout` is the site's shared read-out
    (for the own family: the one passed in, which only warm-starts the crossover's subset fits, or
    None); `nodes` / `heads` are the units' fields in either family.
    """

    family: str
    readout: Readout | None
    nodes: NodeLines
    heads: HeadMaps | None
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

    def statistics(self) -> dict[str, dict[str, float]]:
        """{granularity: {statistic: value}} as docs/RESULTS.md names them ("site" only for shared)."""
        out: dict[str, dict[str, float]] = {}
        for g, stats in self.order.items():
            out[g] = {k: float(v) for k, v in stats.items()}
            out[g].update({f"cluster_{k}": float(v) for k, v in self.clusters[g].items()})
        if "node" in out:
            acc = self.node_accuracy.flatten()
            out["node"].update({
                "hull_labels": self.hull_labels.sum(1).double().mean().item(),
                "hull_labels_all": self.hull_labels_all.sum(1).double().mean().item(),
                "hull_bound": self.hull_bound.mean().item(),
                "hull_tightness": self.tightness.mean().item(),
                "hull_violations": float((acc > self.hull_bound + 1e-12).sum()),
            })
        if self.family == "shared":
            out["site"] = {"acc": float(self.site_accuracy)}
        return out

    def scalars(self) -> dict[str, float]:
        """`statistics()` flattened to "granularity/statistic" keys."""
        return {f"{g}/{k}": v for g, stats in self.statistics().items() for k, v in stats.items()}


def _cluster_means(fields: Tensor | None, tau: float) -> dict[str, float]:
    if fields is None:
        return {"count": math.nan, "size": math.nan, "noise": math.nan}
    c = cluster_stats(fields, tau)
    return {"count": c.count.double().mean().item(), "size": c.mean_size.mean().item(),
            "noise": c.noise.double().mean().item()}


def _check_snapshot(x_train, y_train, x_test, y_test, num_classes):
    check_features("x_train", x_train, 3)
    check_features("x_test", x_test, 3)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"x_train and x_test must share [H, d], got {tuple(x_train.shape[1:])} "
                         f"and {tuple(x_test.shape[1:])}")
    return (check_labels("y_train", y_train, x_train.shape[0], num_classes),
            check_labels("y_test", y_test, x_test.shape[0], num_classes))


def analyze_site(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int,
                 config: AnalysisConfig = AnalysisConfig(readout="own"),
                 readout: Readout | None = None) -> SiteAnalysis:
    """Analyse a site from its probe snapshots x_* `[N, H, d]` (H = 1 for a hidden state), y_* `[N]`,
    for the read-out family `config.readout` ("own" or "shared").

    Fits the read-outs on probe-train (the shared one unless `readout` is given) and measures everything
    else on probe-test. Every class 0..K-1 must occur in both splits. For the own family a given shared
    `readout` only starts the crossover's subset fits (same optimum, fewer steps).
    """
    y_train, y_test = _check_snapshot(x_train, y_train, x_test, y_test, num_classes)
    cfg = config
    if cfg.readout not in FAMILIES:
        raise ValueError(f"AnalysisConfig.readout={cfg.readout!r}: analyze_site analyses one read-out family, "
                         f"'own' or 'shared' (analyze_all runs both)")
    family, k, ab = cfg.readout, num_classes, cfg.ablation
    num_heads, d = x_train.shape[1], x_train.shape[2]
    xtr, xte = x_train.flatten(1), x_test.flatten(1)
    settings = cfg.fit_settings(own=family == "own")
    if cfg.max_train is not None and xtr.shape[0] > cfg.max_train:
        keep = torch.randperm(xtr.shape[0], generator=torch.Generator().manual_seed(cfg.seed))[:cfg.max_train]
        xtr, y_train = xtr[keep], y_train[keep]
    want_heads = "head" in cfg.granularities

    site_acc = math.nan
    if family == "shared":
        if readout is None:
            readout = fit_readout(xtr, y_train, k, cfg.l2, cfg.max_iter, bias=cfg.shared_bias, const_tol=cfg.const_tol)
        else:
            check_readout(readout, xtr.shape[1])
            if readout.num_classes != k:
                raise ValueError(f"readout has {readout.num_classes} outputs but num_classes={k}")
            if ab == "mean" and readout.mean is None:
                readout = Readout(readout.weight, readout.bias, xtr.mean(0))
        nodes, heads = shared_units(readout, num_heads, ab)
        xte = xte.to(readout.weight.dtype)
        site_acc = (readout.fields(xte).argmax(1) == y_test).double().mean().item()
    else:
        if readout is not None:
            check_readout(readout, xtr.shape[1])
        nodes, heads = own_units(xtr, y_train, k, num_heads, settings, cfg.own_bins, heads=want_heads)
        xte = xte.to(nodes.slope.dtype)

    prior = torch.bincount(y_test, minlength=k).double() / len(y_test)
    means = class_means(xte, y_test, k)
    matrices = k <= cfg.max_matrix_classes

    # Nodes: exact single-node predictions through the envelopes of their K lines.
    node_pred = nodes.predict(xte)
    node_stats = label_stats(node_pred, y_test, k)
    node_labels = learned_labels(node_stats, cfg.theta, cfg.q)
    order, clusters = {}, {}
    if "node" in cfg.granularities:
        order["node"] = order_parameters(node_labels, node_stats.accuracy)
        clusters["node"] = _cluster_means(
            node_field_matrices(means, nodes.slope.T, intercept=nodes.intercept) if matrices else None, cfg.tau)

    head_acc = head_labels = None
    if want_heads:
        head_pred = heads.predict(xte)
        head_stats = label_stats(head_pred, y_test, k)
        head_acc, head_labels = head_stats.accuracy, learned_labels(head_stats, cfg.theta, cfg.q)
        order["head"] = order_parameters(head_labels, head_acc)
        clusters["head"] = _cluster_means(
            head_field_matrices(means, heads.weight, num_heads, heads.bias) if matrices else None, cfg.tau)

    # The hull bound over each node's probe-test range (the data the accuracy is measured on).
    hull_labels = nodes.hull(xte.min(0).values, xte.max(0).values)
    hull_all = nodes.hull(None, None)
    bound = hull_bound(hull_labels, prior)
    tightness = node_stats.accuracy / bound

    rows = []
    if cfg.crossover_sizes != []:
        rows = crossover(xte, y_test, readout, node_labels, num_heads, cfg.crossover_sizes, cfg.crossover_draws,
                         cfg.seed, ab, cfg.theta, cfg.q, family, xtr, y_train, settings, cfg.crossover_max_train)

    best = []
    if matrices and cfg.top_nodes > 0:
        top = torch.argsort(node_stats.accuracy, descending=True, stable=True)[:cfg.top_nodes]
        conf = confusion_matrices(node_pred[top], y_test, k)
        fields = node_field_matrices(means, nodes.slope.T, top, nodes.intercept)
        best = [{"node": int(n), "accuracy": node_stats.accuracy[n].item(), "confusion": conf[i], "field": fields[i]}
                for i, n in enumerate(top)]

    return SiteAnalysis(family, readout, nodes, heads, num_heads, site_acc, node_stats.accuracy.view(num_heads, d),
                        head_acc, node_labels, head_labels, hull_labels, hull_all, bound, tightness, prior, order,
                        clusters, rows, best)


@dataclass
class SiteResults:
    """Every family's analysis of one site, and the null's: `real[family]`, `null[family]`."""

    real: dict[str, SiteAnalysis]
    null: dict[str, SiteAnalysis]

    def statistics(self) -> list[tuple[str, bool, str, str, float]]:
        """(family, is_null, granularity, statistic, value) rows: what the monitor logs as keys
        ``ssb/<site>/<family>[/null]/<granularity>/<statistic>`` (docs/RESULTS.md)."""
        out = []
        for is_null, part in ((False, self.real), (True, self.null)):
            for family, site in part.items():
                for g, stats in site.statistics().items():
                    if is_null and g == "site":
                        continue
                    out.extend((family, is_null, g, k, v) for k, v in stats.items())
        return out

    def arrays(self) -> dict[str, Tensor]:
        """Per-unit tensors under ``<family>[/null]/...`` names (docs/RESULTS.md, without the site)."""
        out: dict[str, Tensor] = {}
        for is_null, part in ((False, self.real), (True, self.null)):
            for family, a in part.items():
                p = f"{family}/null" if is_null else family
                out[f"{p}/node/labels"] = a.node_labels
                out[f"{p}/node/accuracy"] = a.node_accuracy.flatten()
                if a.head_labels is not None:
                    out[f"{p}/head/labels"] = a.head_labels
                    out[f"{p}/head/accuracy"] = a.head_accuracy
                if is_null:
                    continue
                out[f"{p}/node/hull_labels"] = a.hull_labels
                out[f"{p}/node/hull_bound"] = a.hull_bound
                if a.best_nodes:
                    out[f"{p}/best/nodes"] = torch.tensor([b["node"] for b in a.best_nodes])
                    out[f"{p}/best/accuracy"] = torch.tensor([b["accuracy"] for b in a.best_nodes])
                    out[f"{p}/best/confusion"] = torch.stack([b["confusion"] for b in a.best_nodes])
                    out[f"{p}/best/field"] = torch.stack([b["field"] for b in a.best_nodes])
        return out


def permuted(y: Tensor, gen: torch.Generator) -> Tensor:
    """y with its entries shuffled (class counts kept): the null's labels."""
    return y[torch.randperm(len(y), generator=gen)]


def analyze_all(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int,
                config: AnalysisConfig = AnalysisConfig(), null: bool | None = None) -> SiteResults:
    """Every family of `config.families()` on the real labels and, when `null` (default: unless
    config.null_mode is "off"), on labels permuted with a seeded draw in both splits (docs/method.md 5). The null
    skips the crossover and the best-node matrices: it is the level of the statistics, not a figure."""
    y_train, y_test = _check_snapshot(x_train, y_train, x_test, y_test, num_classes)
    from dataclasses import replace

    real, nul = {}, {}
    shared = None
    for family in sorted(config.families(), reverse=True):  # shared first: it warm-starts own's crossover
        real[family] = analyze_site(x_train, y_train, x_test, y_test, num_classes, replace(config, readout=family),
                                    readout=shared)
        shared = real[family].readout if family == "shared" else shared
    real = {f: real[f] for f in config.families()}
    if config.null_mode != "off" if null is None else null:
        gen = torch.Generator().manual_seed(config.seed + 104729)  # a stream apart from the other draws
        ytr, yte = permuted(y_train, gen), permuted(y_test, gen)
        quiet = replace(config, crossover_sizes=[], top_nodes=0)
        for family in config.families():
            nul[family] = analyze_site(x_train, ytr, x_test, yte, num_classes, replace(quiet, readout=family))
    return SiteResults(real, nul)
