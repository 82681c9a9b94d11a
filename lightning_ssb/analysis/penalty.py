"""L2 penalties chosen by a rule fixed in advance: k-fold cross-validation on probe-train only.

A read-out's penalty decides how much of a unit's association with the labels survives, so it must
not be set by looking at the result. The rule (docs/method.md section 3): for each penalised part of
the read-out families (the shared read-out of a site, the own lines of single nodes, the own
read-outs of heads and node subsets), fit it on k - 1 folds of probe-train for every penalty of a
grid, score the held-out fold's mean cross-entropy, pool over the folds and over the part's units
(across the watched sites), and keep the penalty with the lowest pooled held-out log-loss. Probe-test
is never seen. The monitor applies the rule once per run at the first analysed state and keeps the
penalties for every later state, so that epochs compare like with like; a number in the config
overrides the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .fit import DTYPE, FitSettings, binned_nodes, prepare_groups, solve_groups, solve_nodes

PARTS = ("shared", "node", "group")   # shared read-out; own node lines; own heads and subsets
DEFAULT_GRID = (1e-4, 1e-3, 1e-2, 0.1, 1.0)


@dataclass
class Penalties:
    """The L2 penalty of each part (None: the part is not analysed), how each was set ("cv" or
    "config"), and the cross-validation curves: part -> [(l2, pooled held-out log-loss)]."""

    shared: float | None = None
    node: float | None = None
    group: float | None = None
    source: dict[str, str] = field(default_factory=dict)
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def get(self, part: str) -> float:
        value = getattr(self, part)
        if value is None:
            raise ValueError(f"no penalty for the {part!r} read-outs was chosen")
        return value

    def as_dict(self) -> dict:
        return {"shared": self.shared, "node": self.node, "group": self.group, "source": dict(self.source),
                "curves": {k: [list(p) for p in v] for k, v in self.curves.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Penalties:
        return cls(d.get("shared"), d.get("node"), d.get("group"), dict(d.get("source") or {}),
                   {k: [tuple(p) for p in v] for k, v in (d.get("curves") or {}).items()})


def stratified_folds(y: Tensor, folds: int, seed: int) -> Tensor:
    """Fold index `[N]` in 0..folds-1: each class's examples shuffled (seeded), then dealt in turn."""
    gen = torch.Generator().manual_seed(seed)
    y = y.cpu()
    out = torch.empty(len(y), dtype=torch.long)
    start = 0
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        out[idx] = (torch.arange(len(idx)) + start) % folds
        start += len(idx)  # the next class continues the deal, so fold sizes stay within one
    return out


def _check(grid, folds: int, y: Tensor) -> list[float]:
    grid = sorted({float(v) for v in grid}, reverse=True)  # strong to weak: each fit warm-starts the next
    if not grid or any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ValueError(f"the penalty grid must hold positive finite numbers, got {grid}")
    if folds < 2:
        raise ValueError(f"cv_folds must be >= 2, got {folds}")
    if len(y) < 2 * folds:
        raise ValueError(f"cross-validation needs at least {2 * folds} probe-train examples, got {len(y)}")
    return grid


_HELDOUT_ENTRIES = 2**21  # 16 MB of float64 fields per chunk of nodes (below glibc's largest mmap threshold)


def _heldout_ce(z: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy `[G]` of fields z `[G, N, K]` against y `[N]`."""
    return (torch.logsumexp(z, 2) - z.gather(2, y.view(1, -1, 1).expand(z.shape[0], -1, 1)).squeeze(2)).mean(1)


def cv_groups(x: Tensor, y: Tensor, num_classes: int, bias: bool, grid, folds: int, seed: int,
              settings: FitSettings) -> list[tuple[float, float]]:
    """Pooled held-out log-loss of G read-outs x `[G, N, m]` (`fit_groups`) for every penalty of `grid`."""
    grid = _check(grid, folds, y)
    fold = stratified_folds(y, folds, seed).to(x.device)
    y = y.to(x.device)
    total = {l2: 0.0 for l2 in grid}
    for f in range(folds):
        tr, te = fold != f, fold == f
        data = prepare_groups(x[:, tr], bias, settings.const_tol)  # once per fold, for every penalty
        xte, yte = x[:, te].to(DTYPE), y[te]
        init = None
        for l2 in grid:
            # ranking held-out losses needs no float64 polish: the float32 phase's optimum (gradient 1e-4)
            fit = solve_groups(data, y[tr], num_classes, settings.with_l2(l2), init=init, polish=False)
            init = (fit.weight, fit.bias)
            z = torch.bmm(xte, fit.weight.transpose(1, 2)) + fit.bias.unsqueeze(1)
            total[l2] += float(_heldout_ce(z, yte).mean()) * int(te.sum())
        del data
    n = len(y)
    return [(l2, total[l2] / n) for l2 in sorted(grid)]


def cv_nodes(x: Tensor, y: Tensor, num_classes: int, bins: int | None, grid, folds: int, seed: int,
             settings: FitSettings) -> list[tuple[float, float]]:
    """Pooled held-out log-loss of every node's own lines, x `[N, D]`, for every penalty of `grid`.
    The fits run on binned statistics, as the analysis fits them; the held-out loss is exact."""
    grid = _check(grid, folds, y)
    fold = stratified_folds(y, folds, seed).to(x.device)
    y = y.to(x.device)
    k = num_classes
    total = {l2: 0.0 for l2 in grid}
    for f in range(folds):
        tr, te = fold != f, fold == f
        data = binned_nodes(x[tr], y[tr], k, bins, settings.const_tol)
        xt = x[te].to(DTYPE)
        yt = y[te]
        # nodes per chunk: fields of at most _HELDOUT_ENTRIES entries, so that each temporary is reused
        # from the heap instead of being mapped (and page-faulted) afresh
        chunk = max(1, _HELDOUT_ENTRIES // (len(yt) * k))
        theta = None
        for l2 in grid:
            theta, _ = solve_nodes(data, k, settings.with_l2(l2), init=theta, polish=False)
            slope = theta[:, :k] / data.scale.unsqueeze(1)
            intercept = theta[:, k:] - slope * data.shift.unsqueeze(1)
            loss = 0.0
            for s in range(0, x.shape[1], chunk):  # [chunk, N_fold, K] fields at a time
                part = slice(s, s + chunk)
                z = xt[:, part].T.unsqueeze(2) * slope[part].unsqueeze(1) + intercept[part].unsqueeze(1)
                loss += float(_heldout_ce(z, yt).sum())
            total[l2] += loss / x.shape[1] * int(te.sum())
    n = len(y)
    return [(l2, total[l2] / n) for l2 in sorted(grid)]


def argmin(curve: list[tuple[float, float]]) -> float:
    """The penalty of the lowest pooled held-out log-loss (the larger penalty on an exact tie)."""
    best = min(v for _, v in curve)
    return max(l2 for l2, v in curve if v == best)
