"""The crossover in the number of nodes (docs/method.md section 7): random node subsets of growing size."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .fit import FitSettings, fit_groups
from .hull import reachable_labels
from .readout import Readout
from .units import label_stats, learned_labels

CROSSOVER_COLUMNS = ("m", "draws", "acc_mean", "acc_std", "reachable_mean", "reachable_all_mean",
                     "distinct_mean", "guess_level", "learned_mean", "cooperation")


def default_sizes(num_nodes: int) -> list[int]:
    """1, 2, 4, ... below D, then D itself."""
    sizes = [1 << i for i in range(max(num_nodes.bit_length(), 1)) if (1 << i) < num_nodes]
    return sizes + [num_nodes]


def draw_subset(m: int, num_nodes: int, num_heads: int, gen: torch.Generator) -> Tensor:
    """m distinct nodes: within one random head while m <= d (docs/method.md 7), across heads beyond."""
    d = num_nodes // num_heads
    if num_heads > 1 and m <= d:
        h = int(torch.randint(num_heads, (1,), generator=gen))
        return h * d + torch.randperm(d, generator=gen)[:m]
    return torch.randperm(num_nodes, generator=gen)[:m]


def _check_sizes(sizes: list[int] | None, num_nodes: int) -> list[int]:
    if sizes is None:
        return default_sizes(num_nodes)
    if any(int(s) < 1 for s in sizes):
        raise ValueError(f"crossover sizes must be >= 1, got {sizes}")
    # sizes above D are dropped, so that one list serves sites of different widths
    return sorted(set(int(s) for s in sizes if int(s) <= num_nodes))


def crossover(x: Tensor, y: Tensor, readout: Readout | None, node_labels: Tensor, num_heads: int = 1,
              sizes: list[int] | None = None, draws: int = 5, seed: int = 0, ablation: str = "zero",
              theta: float = 0.5, q: float | None = 0.05, family: str = "shared",
              x_train: Tensor | None = None, y_train: Tensor | None = None,
              settings: FitSettings = FitSettings(), max_train: int | None = None) -> list[dict]:
    """One row per subset size m over `draws` seeded subsets S, scored on x `[N, D]`, y `[N]`.

    family "shared": S's contribution to `readout` (silenced nodes by `ablation`); "own": a read-out
    with a bias fitted on S alone on (x_train, y_train), at most `max_train` of its examples (a seeded
    draw), the draws of one size in one batched fit, started from S's part of `readout` when given. Row keys (`CROSSOVER_COLUMNS`):
    acc_mean, acc_std over draws; reachable_mean |R_S| over the probe box of S (its range on x) and
    reachable_all_mean over all x, both exact (one linear program per label, docs/method.md 6);
    distinct_mean, the labels the data actually produced; guess_level, the mean of 1/|R_S|;
    learned_mean, |L_S| (the significance test over the draws x labels of one size);
    cooperation = sum over draws of |L_S| / sum over draws of sum_{n in S} |L_n| (node_labels `[D, K]`
    of the same family), NaN when the nodes learned nothing.
    """
    if family not in ("own", "shared"):
        raise ValueError(f"family must be 'own' or 'shared', got {family!r}")
    if draws < 1:
        raise ValueError(f"crossover draws must be >= 1, got {draws}")
    if family == "shared" and readout is None:
        raise ValueError("the shared crossover needs the site's readout")
    if family == "own" and (x_train is None or y_train is None):
        raise ValueError("the own crossover needs x_train and y_train to fit each subset's read-out")
    num_nodes, k = x.shape[1], node_labels.shape[1]
    gen = torch.Generator().manual_seed(seed)
    if family == "own" and max_train is not None and x_train.shape[0] > max_train:
        keep = torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:max_train]
        x_train, y_train = x_train[keep], y_train[keep]
    node_sizes = node_labels.sum(1).double()
    lo_all, hi_all = x.min(0).values, x.max(0).values
    rows = []
    for m in _check_sizes(sizes, num_nodes):
        subsets = [torch.sort(draw_subset(m, num_nodes, num_heads, gen)).values for _ in range(draws)]
        if family == "own":
            init = None
            if readout is not None:  # start from S's part of the shared read-out: the same optimum, sooner
                init = (torch.stack([readout.weight[:, s] for s in subsets]),
                        torch.stack([readout.subset_bias(s, ablation) for s in subsets]))
            # equal subsets (every draw, when m = D) are fitted once
            keys = [tuple(s.tolist()) for s in subsets]
            first = {key: i for i, key in reversed(list(enumerate(keys)))}
            uniq = sorted(set(first.values()))
            if init is not None:
                init = (init[0][uniq], init[1][uniq])
            w, b = fit_groups(torch.stack([x_train[:, subsets[i]] for i in uniq]), y_train, k, True, settings, init)
            where = [uniq.index(first[key]) for key in keys]
            w, b = w[where], b[where]
        else:
            w = torch.stack([readout.weight[:, s] for s in subsets])
            b = torch.stack([readout.subset_bias(s, ablation) for s in subsets])
        x = x.to(w.dtype)
        preds = torch.stack([(x[:, s] @ w[i].T + b[i]).argmax(1) for i, s in enumerate(subsets)])
        stats = label_stats(preds, y, k)
        learned = learned_labels(stats, theta, q).sum(1).double()
        reach, reach_all, distinct = [], [], []
        for i, s in enumerate(subsets):
            seen = torch.zeros(k, dtype=torch.bool)
            seen[preds[i].unique()] = True
            r = reachable_labels(w[i], b[i], lo_all[s], hi_all[s], predicted=seen)
            reach.append(int(r.sum()))
            reach_all.append(int(reachable_labels(w[i], b[i], predicted=r).sum()))
            distinct.append(int(seen.sum()))
        denom = float(sum(node_sizes[s].sum() for s in subsets))
        acc = stats.accuracy
        rows.append({
            "m": m, "draws": draws, "acc_mean": acc.mean().item(), "acc_std": acc.std(unbiased=False).item(),
            "reachable_mean": sum(reach) / draws, "reachable_all_mean": sum(reach_all) / draws,
            "distinct_mean": sum(distinct) / draws, "guess_level": sum(1.0 / r for r in reach) / draws,
            "learned_mean": learned.mean().item(),
            "cooperation": learned.sum().item() / denom if denom > 0 else math.nan,
        })
    return rows
