"""One analysis of one site: docs/method.md sections 3 to 7 on a probe snapshot.

`choose_penalties` applies the penalty rule (k-fold cross-validation on probe-train); `analyze_site`
analyses one read-out family at given penalties; `analyze_all` runs every family the config asks
for and the nulls, which re-use one set of read-outs fitted on permuted probe-train labels:
- null "train": those read-outs scored on the real probe-test labels (read-outs fitted on noise:
  how often one lands on a label by chance when the activations are informative);
- null "both": the same read-outs scored on permuted probe-test labels (predictions independent of
  the test labels by construction: the calibration of the significance test).
`sensitivity` re-runs the unit statistics over a grid of penalties.

Fits run in float64 on the device of the activations (`fit.py`); predictions, envelopes, tests
and linear programs on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from lightning_ssb import statistics as registry
from lightning_ssb.parallel import fork_map

from ._checks import check_ablation, check_features, check_labels, check_readout
from .crossover import crossover
from .families import FAMILIES, HeadMaps, NodeLines, own_units, shared_units
from .fit import (
    DEFAULT_CONST_TOL,
    DEFAULT_GTOL,
    DEFAULT_MAX_ITER,
    DTYPE,
    FitSettings,
    binned_nodes,
    node_lines_from,
    prepare_groups,
    solve_groups,
    solve_nodes,
)
from .hull import hull_bound
from .optim import FitReport
from .order import order_parameters
from .penalty import DEFAULT_GRID, Penalties, argmin, cv_groups, cv_nodes
from .readout import Readout, fit_readout
from .sampling import seeded_rows
from .timing import timed
from .units import (
    centre_fields,
    class_means,
    cluster_stats,
    confusion_matrices,
    head_field_matrices,
    label_stats,
    learned_labels,
    node_field_matrices,
)

GRANULARITIES = ("node", "head")
READOUTS = ("both",) + FAMILIES
NULLS = ("both", "train")
NULL_MODES = ("all", "ends", "reference", "off")
SENSITIVITY_GRID = (1e-4, 1e-3, 1e-2, 0.1, 1.0)
Penalty = float | Literal["cv"]


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
    nulls: list[Literal["both", "train"]] = field(default_factory=lambda: list(NULLS))
    """The nulls, analysed on permuted probe labels (one seeded permutation per split): "train"
    (read-outs fitted on permuted probe-train, scored on the real probe-test labels: chance alignment
    of a read-out fitted on noise) and "both" (probe-test permuted too: calibration of the test)."""
    null_mode: Literal["all", "ends", "reference", "off"] = "ends"
    """When the monitor runs the nulls: at the reference states (the start, random init) and the last
    epoch ("ends"), at every analysed state ("all"), at the reference states only ("reference"), or
    never ("off"). (Not called `null`: YAML reads that key as None.)"""
    tau: float = 0.3
    """Threshold on the row-centred, max-normalised field matrix that makes the 0/1 cluster matrix B_u."""
    l2: Penalty = "cv"
    """L2 penalty of the shared read-out on standardised nodes, added to the mean cross-entropy;
    "cv": chosen by cross-validation on probe-train (`cv_folds`, `cv_grid`) at the first analysed state."""
    own_l2: Penalty = "cv"
    """L2 penalty of the own read-outs of single nodes (their K lines); "cv" as for `l2`."""
    own_group_l2: Penalty = "cv"
    """L2 penalty of the own read-outs of heads and crossover subsets; "cv" as for `l2`."""
    cv_folds: int = 4
    """Folds of the penalty's cross-validation (stratified by label, seeded by `seed`)."""
    cv_grid: list[float] = field(default_factory=lambda: list(DEFAULT_GRID))
    """Penalties the cross-validation compares (pooled held-out log-loss, lowest wins): one per decade
    from 1e-4 to 1, the grid of the sensitivity analysis."""
    cv_max_nodes: int | None = 128
    """Single nodes whose lines enter the cross-validation of `own_l2`, drawn (seeded) from every site
    (the pooled held-out loss is a mean over nodes); null uses every node."""
    cv_max_groups: int | None = 24
    """Heads whose read-outs enter the cross-validation of `own_group_l2`, drawn from every site; null: all."""
    cv_max_sites: int | None = 2
    """Sites whose shared read-outs enter the cross-validation of `l2`; null: all."""
    sensitivity_grid: list[float] = field(default_factory=lambda: list(SENSITIVITY_GRID))
    """Penalties of the sensitivity analysis (live units, labels per unit and Phi against the penalty)."""
    gtol: float = DEFAULT_GTOL
    """A read-out fit has converged when the largest entry of its gradient (mean cross-entropy plus
    penalty, standardised nodes) is at most this; fits that stop above it are counted and warned about."""
    max_iter: int = DEFAULT_MAX_ITER
    """Iteration cap of each read-out fit (L-BFGS or Newton steps)."""
    const_tol: float = DEFAULT_CONST_TOL
    """A node whose probe-train std is below const_tol x its root mean square is constant: weight 0."""
    own_bins: int | None = 128
    """Own read-out of single nodes: fitted on this many quantile bins of each node's activation
    (binned sufficient statistics); null fits on every example."""
    max_train: int | None = None
    """Fit the read-outs on at most this many probe-train examples (seeded draw); null uses all."""
    seed: int = 0
    """Seeds max_train's draw, the folds, the crossover draws and the nulls' permutations."""
    granularities: tuple[str, ...] = GRANULARITIES
    """Units to analyse: "node" and/or "head"."""
    crossover_sizes: list[int] | None = None
    """Subset sizes m of the crossover; null gives 1, 2, 4, ..., D; [] skips the crossover."""
    crossover_draws: int = 5
    """Random subsets drawn per size."""
    crossover_mode: Literal["all", "ends"] = "ends"
    """When the monitor runs the crossover: at the reference states and the last epoch ("ends"), or at
    every analysed state ("all")."""
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
        if self.crossover_mode not in ("all", "ends"):
            raise ValueError(f"crossover_mode must be 'all' or 'ends', got {self.crossover_mode!r}")
        self.nulls = list(self.nulls)
        if any(n not in NULLS for n in self.nulls) or len(set(self.nulls)) != len(self.nulls):
            raise ValueError(f"nulls must be distinct entries of {list(NULLS)}, got {self.nulls}")
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
        for name in ("own_bins", "max_train", "crossover_max_train", "cv_max_nodes"):
            value = getattr(self, name)
            if value is not None and int(value) < 2:
                raise ValueError(f"{name} must be null or an integer >= 2, got {value}")
        for name in ("cv_max_groups", "cv_max_sites"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be null or an integer >= 1, got {value}")
        if self.top_nodes < 0:
            raise ValueError(f"top_nodes must be >= 0, got {self.top_nodes}")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds must be >= 2, got {self.cv_folds}")
        for name in ("cv_grid", "sensitivity_grid"):
            grid = getattr(self, name)
            if not grid or any(not (float(v) > 0 and math.isfinite(float(v))) for v in grid):
                raise ValueError(f"{name} must be a non-empty list of positive numbers, got {grid}")
        for name in ("l2", "own_l2", "own_group_l2"):
            value = getattr(self, name)
            if value != "cv":
                FitSettings(l2=value)  # a number: finite and >= 0
        FitSettings(max_iter=self.max_iter, const_tol=self.const_tol, gtol=self.gtol)

    def settings(self, l2: float) -> FitSettings:
        """Fit settings at penalty `l2`."""
        return FitSettings(float(l2), self.max_iter, self.const_tol, self.gtol)

    def families(self) -> tuple[str, ...]:
        return FAMILIES if self.readout == "both" else (self.readout,)

    def penalty_part(self, part: str) -> Penalty:
        """The config's value for a penalised part ("shared", "node", "group")."""
        return {"shared": self.l2, "node": self.own_l2, "group": self.own_group_l2}[part]


def choose_penalties(x_train: Tensor | dict[str, Tensor], y_train: Tensor, num_classes: int,
                     config: AnalysisConfig | None = None, name: str = "site", workers: int = 1) -> Penalties:
    config = AnalysisConfig() if config is None else config
    with timed("penalties (cross-validation)"):
        return _choose_penalties(x_train, y_train, num_classes, config, name, workers)


def _choose_penalties(x_train, y_train, num_classes, config, name, workers: int = 1) -> Penalties:
    """The L2 penalty of every part the config analyses (docs/method.md 3): a number from the config,
    or "cv": k-fold cross-validation of held-out log-loss on probe-train, pooled over the part's units.

    x_train is one site `[N, H, d]` or ``{site: [N, H, d]}``: several sites of one snapshot share one
    set of penalties, chosen on their units pooled (a seeded subset of at most `cv_max_nodes` nodes,
    `cv_max_groups` heads and `cv_max_sites` site read-outs keeps it cheap). ``workers`` > 1 runs the
    parts' cross-validations in that many forked processes (`parallel.fork_map`; CPU tensors only)."""
    sites = {name: x_train} if isinstance(x_train, Tensor) else dict(x_train)
    if not sites:
        raise ValueError("choose_penalties needs at least one site")
    for site, x in sites.items():
        check_features(f"{site}: x_train" if site != "site" else "x_train", x, 3)
    first = next(iter(sites.values()))
    y_train = check_labels("y_train", y_train, first.shape[0], num_classes)
    cfg = config
    rows = None
    if cfg.max_train is not None and first.shape[0] > cfg.max_train:
        rows = seeded_rows(first.shape[0], cfg.max_train, cfg.seed)
        y_train = y_train[rows.to(y_train.device)]
    flat = {s: (x if rows is None else x[rows.to(x.device)]) for s, x in sites.items()}
    families = cfg.families()
    parts = (["shared"] if "shared" in families else []) + (["node", "group"] if "own" in families else [])
    out = Penalties()
    for part in parts:
        value = cfg.penalty_part(part)
        if value != "cv":
            setattr(out, part, float(value))
            out.source[part] = "config"
    # the heads' cross-validation is the longest (about twice either other at both quick starts): first, so
    # that with two workers the other two run beside it (as in longest-processing-time-first scheduling)
    todo = sorted((part for part in parts if cfg.penalty_part(part) == "cv"), key=("group", "shared", "node").index)
    curves = fork_map(lambda i: _cv_curve(todo[i], flat, y_train, num_classes, cfg), len(todo), workers)
    for part, curve in zip(todo, curves, strict=True):
        setattr(out, part, argmin(curve))
        out.source[part] = "cv"
        out.curves[part] = curve
    return out


def _cv_curve(part: str, flat: dict[str, Tensor], y_train: Tensor, num_classes: int, cfg: AnalysisConfig) -> list:
    """The pooled held-out log-loss over ``cfg.cv_grid`` of one part (``shared``, ``node`` or ``group``)."""
    base = cfg.settings(0.0)
    if part == "node":
        nodes = torch.cat([x.flatten(1) for x in flat.values()], 1)
        cols = seeded_rows(nodes.shape[1], cfg.cv_max_nodes, cfg.seed + 7).to(nodes.device)
        return cv_nodes(nodes[:, cols], y_train, num_classes, cfg.own_bins, cfg.cv_grid, cfg.cv_folds, cfg.seed, base)
    # read-outs of the same width are fitted as one batch: every head (group), or every site (shared)
    units = [(x.flatten(1).unsqueeze(0) if part == "shared" else x.transpose(0, 1)) for x in flat.values()]
    units = [u for x in units for u in x.unbind(0)]  # [N, m] each
    cap = cfg.cv_max_sites if part == "shared" else cfg.cv_max_groups
    pick = seeded_rows(len(units), cap, cfg.seed + 11).tolist()
    by_width: dict[int, list[Tensor]] = {}
    for i in pick:
        by_width.setdefault(units[i].shape[1], []).append(units[i])
    pooled: dict[float, float] = {}
    for group in by_width.values():
        c = cv_groups(torch.stack(group), y_train, num_classes, cfg.shared_bias if part == "shared" else True,
                      cfg.cv_grid, cfg.cv_folds, cfg.seed, base)
        for l2, v in c:
            pooled[l2] = pooled.get(l2, 0.0) + v * len(group) / len(pick)
    return sorted(pooled.items())


@dataclass
class FamilyFit:
    """The read-outs of one family fitted on probe-train: the site's shared read-out (shared family;
    for own, the one that warm-starts the crossover, or None), every node's lines and head's map, the
    penalties used per part and how each part's fit ended."""

    family: str
    readout: Readout | None
    nodes: NodeLines
    heads: HeadMaps | None
    penalties: dict[str, float]
    reports: dict[str, FitReport]


def fit_family(family: str, xtr: Tensor, ytr: Tensor, num_classes: int, num_heads: int, cfg: AnalysisConfig,
               penalties: Penalties, readout: Readout | None = None, want_heads: bool = True,
               name: str = "site") -> FamilyFit:
    """Fit one family's read-outs on probe-train xtr `[N, D]`, ytr `[N]` at the given penalties.
    For the shared family a given `readout` is used as it is (fitted elsewhere)."""
    k = num_classes
    if family == "shared":
        l2 = penalties.get("shared")
        if readout is None:
            readout = fit_readout(xtr, ytr, k, l2, cfg.max_iter, bias=cfg.shared_bias, const_tol=cfg.const_tol,
                                  gtol=cfg.gtol, what=f"{name}: shared read-out")
        reports = {"site": readout.report} if readout.report is not None else {}
        readout = readout.cpu()
        nodes, heads = shared_units(readout, num_heads, cfg.ablation)
        return FamilyFit("shared", readout, nodes, heads, {"shared": l2}, reports)
    node_l2, group_l2 = penalties.get("node"), penalties.get("group") if want_heads else 0.0
    nodes, heads, reports = own_units(xtr, ytr, k, num_heads, cfg.settings(node_l2), cfg.settings(group_l2),
                                      cfg.own_bins, heads=want_heads, what=name)
    used = {"node": node_l2} | ({"group": group_l2} if want_heads else {})
    return FamilyFit("own", readout, nodes, heads, used, reports)


@dataclass
class SiteAnalysis:
    """The analysis of one site (H heads of d nodes, D = H*d, K labels) for one read-out family.

    Accuracies are on the probe-test split. node_labels `[D, K]` / head_labels `[H, K]` are the learned
    sets L_u; hull_labels `[D, K]` is R_n (strict winners) over each node's probe-test range and
    hull_labels_all `[D, K]` over all x; hull_bound and tightness `[D]` (the bound sums the labels the
    node can output in its range, ties included). `order` and `clusters` map a granularity to its
    statistics; `crossover` has one row per subset size; `best_nodes` holds, for the top nodes,
    {"node", "accuracy", "confusion" [K, K], "field" [K, K] (rows centred)}. `readout` is the site's
    shared read-out (for the own family: the one that warm-starts the crossover, or None); `nodes` /
    `heads` are the units' fields in either family; `penalties` the L2 penalty of each fitted part;
    `fits` how each part's fits ended ("site", "node", "head", "subset").
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
    penalties: dict[str, float] = field(default_factory=dict)
    fits: dict[str, FitReport] = field(default_factory=dict)

    def convergence(self) -> dict[str, float]:
        """``fit_unconverged`` (read-outs whose fit stopped above gtol) and ``fit_grad_max`` over every fit
        of this family at this site."""
        reports = [r for r in self.fits.values() if r is not None]
        if not reports:
            return {}
        summary = FitReport.cat([r.cpu() for r in reports]).summary()
        return {f"fit_{k}": summary[k] for k in ("unconverged", "grad_max")}

    def statistics(self) -> dict[str, dict[str, float]]:
        """{granularity: {statistic: value}} as docs/RESULTS.md names them ("site": site-level values)."""
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
        site: dict[str, float] = {}
        if self.family == "shared":
            site["acc"] = float(self.site_accuracy)
            site["l2"] = float(self.penalties.get("shared", math.nan))
        else:
            if "node" in out:
                out["node"]["l2"] = float(self.penalties.get("node", math.nan))
            if "head" in out:
                out["head"]["l2"] = float(self.penalties.get("group", math.nan))
        site.update(self.convergence())
        if site:
            out["site"] = site
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


def _check_snapshot(x_train, y_train, x_test, y_test, num_classes, name: str = "site"):
    check_features(f"{name}: x_train" if name != "site" else "x_train", x_train, 3)
    check_features(f"{name}: x_test" if name != "site" else "x_test", x_test, 3)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"x_train and x_test must share [H, d], got {tuple(x_train.shape[1:])} "
                         f"and {tuple(x_test.shape[1:])}")
    return (check_labels("y_train", y_train, x_train.shape[0], num_classes),
            check_labels("y_test", y_test, x_test.shape[0], num_classes))


def _train_rows(xtr: Tensor, ytr: Tensor, cfg: AnalysisConfig) -> tuple[Tensor, Tensor]:
    if cfg.max_train is not None and xtr.shape[0] > cfg.max_train:
        keep = seeded_rows(xtr.shape[0], cfg.max_train, cfg.seed)
        return xtr[keep.to(xtr.device)], ytr[keep.to(ytr.device)]
    return xtr, ytr


def _learned(pred: Tensor, yte: Tensor, k: int, cfg: AnalysisConfig, level: str):
    """(label statistics, learned label sets, ``{level: unit statistics}``, empty when ``level`` is not
    one of ``cfg.granularities``) of one granularity's predictions `[U, N]` on probe-test."""
    stats = label_stats(pred, yte, k)
    labels = learned_labels(stats, cfg.theta, cfg.q)
    order = {level: order_parameters(labels, stats.accuracy, level)} if level in cfg.granularities else {}
    return stats, labels, order


def unit_orders(ff: FamilyFit, xte: Tensor, yte: Tensor, num_classes: int, cfg: AnalysisConfig) -> dict:
    """``{granularity: unit statistics}`` of one family's fitted units on probe-test: the ``order`` of
    ``score_family``, without its cluster, hull and best-node statistics (the sensitivity's rows need
    the learned label sets alone)."""
    order = _learned(ff.nodes.predict(xte), yte, num_classes, cfg, "node")[2] if "node" in cfg.granularities else {}
    if ff.heads is not None and "head" in cfg.granularities:
        order.update(_learned(ff.heads.predict(xte), yte, num_classes, cfg, "head")[2])
    return order


def score_family(ff: FamilyFit, xte: Tensor, yte: Tensor, num_classes: int, cfg: AnalysisConfig,
                 best: bool = True) -> SiteAnalysis:
    """Everything docs/method.md 4-6 measures of one family's fitted units on probe-test xte `[N, D]`
    (CPU, float64), yte `[N]` (no crossover: `analyze_site` adds it)."""
    k = num_classes
    num_heads = ff.heads.weight.shape[0] if ff.heads is not None else None
    prior = torch.bincount(yte, minlength=k).double() / len(yte)
    means = class_means(xte, yte, k)
    matrices = k <= cfg.max_matrix_classes
    nodes = ff.nodes
    node_pred = nodes.predict(xte)
    node_stats, node_labels, order = _learned(node_pred, yte, k, cfg, "node")
    clusters = {}
    if "node" in cfg.granularities:
        clusters["node"] = _cluster_means(
            node_field_matrices(means, nodes.slope.T, intercept=nodes.intercept) if matrices else None, cfg.tau)
    head_acc = head_labels = None
    if ff.heads is not None and "head" in cfg.granularities:
        head_stats, head_labels, head_order = _learned(ff.heads.predict(xte), yte, k, cfg, "head")
        head_acc = head_stats.accuracy
        order.update(head_order)
        clusters["head"] = _cluster_means(
            head_field_matrices(means, ff.heads.weight.cpu(), num_heads, ff.heads.bias.cpu()) if matrices else None,
            cfg.tau)
    lo, hi = xte.min(0).values, xte.max(0).values
    hull_labels = nodes.hull(lo, hi)
    hull_all = nodes.hull(None, None)
    bound = hull_bound(nodes.hull(lo, hi, strict=False), prior)   # every label the node can output here
    tightness = node_stats.accuracy / bound
    site_acc = math.nan
    if ff.family == "shared":
        site_acc = (ff.readout.fields(xte).argmax(1) == yte).double().mean().item()
    best_nodes = []
    if best and matrices and cfg.top_nodes > 0:
        top = torch.argsort(node_stats.accuracy, descending=True, stable=True)[:cfg.top_nodes]
        conf = confusion_matrices(node_pred[top], yte, k)
        fields = centre_fields(node_field_matrices(means, nodes.slope.T, top, nodes.intercept))
        best_nodes = [{"node": int(n), "accuracy": node_stats.accuracy[n].item(), "confusion": conf[i],
                       "field": fields[i]} for i, n in enumerate(top)]
    h = num_heads or 1
    out = SiteAnalysis(ff.family, ff.readout, nodes, ff.heads, h, site_acc, node_stats.accuracy.view(h, -1),
                       head_acc, node_labels, head_labels, hull_labels, hull_all, bound, tightness, prior, order,
                       clusters, [], best_nodes, dict(ff.penalties), dict(ff.reports))
    out._node_pred = node_pred  # kept for the crossover's cooperation ratio (not part of the results)
    return out


def analyze_site(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int,
                 config: AnalysisConfig | None = None, readout: Readout | None = None,
                 penalties: Penalties | None = None, name: str = "site", workers: int = 1) -> SiteAnalysis:
    """Analyse a site from its probe snapshots x_* `[N, H, d]` (H = 1 for a hidden state), y_* `[N]`,
    for the read-out family `config.readout` ("own" or "shared").

    Fits the read-outs on probe-train (the shared one unless `readout` is given) at `penalties`
    (default: `choose_penalties` on this snapshot) and measures everything else on probe-test. Every
    class 0..K-1 must occur in both splits. For the own family a given shared `readout` only starts
    the crossover's subset fits (same optimum, fewer steps). `name` names the site in errors. ``workers``
    > 1 solves the crossover's reachability programs in that many forked processes (`crossover`; where
    this process is not one of them already: the monitor passes it on a GPU run, whose sites are
    analysed one after another here).
    """
    config = AnalysisConfig(readout="own") if config is None else config
    y_train, y_test = _check_snapshot(x_train, y_train, x_test, y_test, num_classes, name)
    cfg = config
    if cfg.readout not in FAMILIES:
        raise ValueError(f"AnalysisConfig.readout={cfg.readout!r}: analyze_site analyses one read-out family, "
                         f"'own' or 'shared' (analyze_all runs both)")
    family, k = cfg.readout, num_classes
    num_heads = x_train.shape[1]
    if penalties is None:
        penalties = choose_penalties(x_train, y_train, k, cfg, name)
    xtr, ytr = _train_rows(x_train.flatten(1), y_train, cfg)
    xte = x_test.flatten(1).detach().to(DTYPE).cpu()
    yte = y_test.cpu()
    if readout is not None:
        check_readout(readout, xtr.shape[1])
        if readout.num_classes != k:
            raise ValueError(f"readout has {readout.num_classes} outputs but num_classes={k}")
        if family == "shared" and cfg.ablation == "mean" and readout.mean is None:
            readout = Readout(readout.weight, readout.bias, xtr.to(DTYPE).mean(0), readout.report)
    want_heads = "head" in cfg.granularities
    ff = fit_family(family, xtr, ytr, k, num_heads, cfg, penalties, readout, want_heads, name)
    site = score_family(ff, xte, yte, k, cfg)
    if cfg.crossover_sizes != []:
        group = cfg.settings(penalties.get("group")) if family == "own" else cfg.settings(0.0)
        with timed("crossover"):
                res = crossover(xte, yte, ff.readout, ff.nodes, num_heads, cfg.crossover_sizes, cfg.crossover_draws,
                            cfg.seed, cfg.ablation, cfg.theta, cfg.q, family, xtr, ytr, group,
                            cfg.crossover_max_train, node_pred=site._node_pred, workers=workers)
        site.crossover = res.rows
        if res.report is not None:
            site.fits["subset"] = res.report
    return site


@dataclass
class SiteResults:
    """Every family's analysis of one site and the nulls': `real[family]`, `null[kind][family]`
    (kind "train" or "both"); the penalties used; the sensitivity rows when they were computed."""

    real: dict[str, SiteAnalysis]
    null: dict[str, dict[str, SiteAnalysis]]
    penalties: Penalties | None = None
    sensitivity: list[dict] = field(default_factory=list)

    def statistics(self) -> list[tuple[str, str | None, str, str, float]]:
        """(family, null kind or None, granularity, statistic, value) rows: what the monitor logs as keys
        ``ssb/<site>/<family>[/null_<kind>]/<granularity>/<statistic>`` (docs/RESULTS.md). The nulls
        carry the unit statistics only (their site-level fit record is the real one's business)."""
        out = []
        parts = [(None, self.real)] + [(kind, fams) for kind, fams in self.null.items()]
        for kind, fams in parts:
            for family, site in fams.items():
                for g, stats in site.statistics().items():
                    if kind is not None and g == "site":
                        continue
                    out.extend((family, kind, g, s, v) for s, v in stats.items()
                               if kind is None or registry.carried_by_nulls(s))
        return out

    def convergence(self) -> dict[str, float]:
        """Unconverged read-outs (of them, those whose line search stalled), and the largest final gradient
        over every fit here, nulls included (`FitReport.summary`)."""
        reports = [r for fams in [self.real, *self.null.values()] for a in fams.values()
                   for r in a.fits.values() if r is not None]
        if not reports:
            return {"unconverged": 0.0, "stalled": 0.0, "grad_max": 0.0}
        return FitReport.cat([r.cpu() for r in reports]).summary()

    def arrays(self) -> dict[str, Tensor]:
        """Per-unit tensors under ``<family>[/null_<kind>]/...`` names (docs/RESULTS.md, without the site)."""
        out: dict[str, Tensor] = {}
        parts = [(None, self.real)] + [(kind, fams) for kind, fams in self.null.items()]
        for kind, fams in parts:
            for family, a in fams.items():
                p = f"{family}/null_{kind}" if kind else family
                out[f"{p}/node/labels"] = a.node_labels
                out[f"{p}/node/accuracy"] = a.node_accuracy.flatten()
                if a.head_labels is not None:
                    out[f"{p}/head/labels"] = a.head_labels
                    out[f"{p}/head/accuracy"] = a.head_accuracy
                if kind is not None:
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
    """y with its entries shuffled (class counts kept): the nulls' labels."""
    return y[torch.randperm(len(y), generator=gen).to(y.device)]


def null_labels(y_train: Tensor, y_test: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """The nulls' permuted probe-train and probe-test labels (one seeded stream apart from the others)."""
    gen = torch.Generator().manual_seed(seed + 104729)
    return permuted(y_train, gen), permuted(y_test, gen)


def analyze_all(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int,
                config: AnalysisConfig | None = None, nulls: list[str] | None = None,
                penalties: Penalties | None = None, name: str = "site", workers: int = 1) -> SiteResults:
    """Every family of `config.families()` on the real labels, and the nulls `nulls` (default:
    `config.nulls` unless config.null_mode is "off"). The nulls' read-outs are fitted once on permuted
    probe-train labels and scored twice: against the real probe-test labels ("train") and against
    permuted ones ("both"); they skip the crossover and the best-node matrices (they are the level of
    the statistics, not a figure). `penalties` default to `choose_penalties` on this snapshot; ``workers``
    as in `analyze_site`."""
    config = AnalysisConfig() if config is None else config
    y_train, y_test = _check_snapshot(x_train, y_train, x_test, y_test, num_classes, name)
    cfg = config
    if nulls is None:
        nulls = [] if cfg.null_mode == "off" else list(cfg.nulls)
    if penalties is None:
        penalties = choose_penalties(x_train, y_train, num_classes, cfg, name)
    real: dict[str, SiteAnalysis] = {}
    shared = None
    for family in sorted(cfg.families(), reverse=True):  # shared first: it warm-starts own's crossover
        with timed(f"{family} family"):
            real[family] = analyze_site(x_train, y_train, x_test, y_test, num_classes, replace(cfg, readout=family),
                                        readout=shared, penalties=penalties, name=name, workers=workers)
        shared = real[family].readout if family == "shared" else shared
    real = {f: real[f] for f in cfg.families()}
    null: dict[str, dict[str, SiteAnalysis]] = {}
    if nulls:
        ytr_p, yte_p = null_labels(y_train, y_test, cfg.seed)
        xtr, ytr_p = _train_rows(x_train.flatten(1), ytr_p, cfg)
        xte = x_test.flatten(1).detach().to(DTYPE).cpu()
        quiet = replace(cfg, top_nodes=0)
        for family in cfg.families():
            with timed("nulls"):
                ff = fit_family(family, xtr, ytr_p, num_classes, x_train.shape[1], quiet, penalties,
                                want_heads="head" in cfg.granularities, name=f"{name} (null)")
                for kind in nulls:
                    labels = y_test.cpu() if kind == "train" else yte_p.cpu()
                    null.setdefault(kind, {})[family] = score_family(ff, xte, labels, num_classes, quiet, best=False)
    return SiteResults(real, null, penalties)


def sensitivity(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int,
                config: AnalysisConfig | None = None, grid: list[float] | None = None,
                name: str = "site") -> list[dict]:
    """Live units, labels per unit, coverage and Phi of every family and granularity against the L2
    penalty over `grid` (default `config.sensitivity_grid`): each family's read-outs refitted at each
    penalty (nodes and heads of the own family at the same value). One row per family, granularity and
    penalty: {"family", "granularity", "l2", <every registered statistic with ``sensitivity``: "live",
    "live_fraction", "phi", "mean_labels", "coverage" built in>}."""
    config = AnalysisConfig() if config is None else config
    with timed("sensitivity"):
        return _sensitivity(x_train, y_train, x_test, y_test, num_classes, config, grid, name)


def _sensitivity(x_train, y_train, x_test, y_test, num_classes, config, grid, name) -> list[dict]:
    y_train, y_test = _check_snapshot(x_train, y_train, x_test, y_test, num_classes)
    cfg = config
    k = num_classes
    grid = sorted({float(v) for v in (grid or cfg.sensitivity_grid)}, reverse=True)  # warm starts: strong first
    num_heads = x_train.shape[1]
    xtr, ytr = _train_rows(x_train.flatten(1), y_train, cfg)
    xte = x_test.flatten(1).detach().to(DTYPE).cpu()
    yte = y_test.cpu()
    want_heads = "head" in cfg.granularities
    rows = []
    readout = None
    data = theta = head_init = None
    # every penalty refits the same activations: each part is standardised once (`prepare_groups`)
    shared_data = heads_data = mean = None
    for l2 in grid:
        fams: list[FamilyFit] = []
        if "shared" in cfg.families():
            if shared_data is None:
                shared_data = prepare_groups(xtr, cfg.shared_bias, cfg.const_tol, f"{name}: shared read-out")
                mean = xtr.to(DTYPE).mean(0)
            start = None if readout is None else (readout.weight, readout.bias)
            fit = solve_groups(shared_data, ytr, k, cfg.settings(l2), init=start)
            readout = Readout(fit.weight[0], fit.bias[0], mean, fit.report)
            fams.append(fit_family("shared", xtr, ytr, k, num_heads, cfg, Penalties(shared=l2), readout, want_heads,
                                   name))
        if "own" in cfg.families():
            if data is None:
                data = binned_nodes(xtr, ytr, k, cfg.own_bins, cfg.const_tol, f"{name}: own node read-outs")
            theta, _ = solve_nodes(data, k, cfg.settings(l2), init=theta)
            slope, intercept = node_lines_from(theta, data, k)
            heads = None
            if want_heads:
                if heads_data is None:
                    groups = xtr.view(xtr.shape[0], num_heads, -1).transpose(0, 1)
                    heads_data = prepare_groups(groups, True, cfg.const_tol, f"{name}: own head read-outs")
                fit = solve_groups(heads_data, ytr, k, cfg.settings(l2), init=head_init)
                head_init = (fit.weight, fit.bias)
                heads = HeadMaps(fit.weight, fit.bias)
            fams.append(FamilyFit("own", None, NodeLines(slope.cpu(), intercept.cpu()), heads, {}, {}))
        for ff in fams:
            for g, stats in unit_orders(ff, xte, yte, k, cfg).items():
                rows.append({"family": ff.family, "granularity": g, "l2": l2,
                             **{s.name: float(stats[s.name]) for s in registry.in_sensitivity() if s.name in stats}})
    return sorted(rows, key=lambda r: (r["family"], r["granularity"], r["l2"]))
