"""The crossover in the number of nodes (METHOD.md section 7): random node subsets of growing size."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .hull import reachable_labels
from .readout import Readout
from .units import label_stats, learned_labels


def default_sizes(num_nodes: int) -> list[int]:
    """1, 2, 4, ... below D, then D itself."""
    sizes = [1 << i for i in range(max(num_nodes.bit_length(), 1)) if (1 << i) < num_nodes]
    return sizes + [num_nodes]


def draw_subset(m: int, num_nodes: int, num_heads: int, gen: torch.Generator) -> Tensor:
    """m distinct nodes: within one random head while m <= d (METHOD.md 7), across heads beyond."""
    d = num_nodes // num_heads
    if num_heads > 1 and m <= d:
        h = int(torch.randint(num_heads, (1,), generator=gen))
        return h * d + torch.randperm(d, generator=gen)[:m]
    return torch.randperm(num_nodes, generator=gen)[:m]


def crossover(x: Tensor, y: Tensor, readout: Readout, node_labels: Tensor, num_heads: int = 1,
              sizes: list[int] | None = None, draws: int = 5, seed: int = 0, ablation: str = "zero",
              theta: float = 0.5, exact_max_m: int = 3) -> list[dict]:
    """One row per subset size m over `draws` seeded subsets, on x `[N, D]`, y `[N]`.

    Sizes larger than D are dropped. Row keys: m, acc_mean, acc_std (over draws), reachable_mean (|R_S|: exact via the hull for
    m <= exact_max_m, else the count of distinct predictions on x, a lower bound), reach_exact,
    guess_level (mean of 1/|R_S|), learned_mean (|L_S|), cooperation_mean (|L_S| / sum_n |L_n| over
    the draws where the denominator is non-zero; NaN if none). node_labels `[D, K]` are the L_n.
    """
    num_nodes, k = x.shape[1], readout.num_classes
    if sizes is None:
        sizes = default_sizes(num_nodes)
    else:  # sizes above D are dropped, so that one list serves sites of different widths
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"crossover sizes must be >= 1, got {sizes}")
        sizes = sorted(set(int(s) for s in sizes if int(s) <= num_nodes))
    if draws < 1:
        raise ValueError(f"crossover draws must be >= 1, got {draws}")
    gen = torch.Generator().manual_seed(seed)
    node_sizes = node_labels.sum(1).double()
    rows = []
    for m in sizes:
        acc, reach, learned, coop = [], [], [], []
        exact = m <= exact_max_m
        for _ in range(draws):
            nodes = draw_subset(m, num_nodes, num_heads, gen)
            pred = readout.fields(x, nodes, ablation).argmax(1)
            stats = label_stats(pred.unsqueeze(0), y, k)
            n_learned = float(learned_labels(stats, theta).sum())
            if exact:
                r = int(reachable_labels(readout.weight[:, nodes], readout.subset_bias(nodes, ablation)).sum())
            else:
                r = int(torch.unique(pred).numel())
            denom = float(node_sizes[nodes].sum())
            acc.append(stats.accuracy.item())
            reach.append(r)
            learned.append(n_learned)
            coop.append(n_learned / denom if denom > 0 else math.nan)
        acc_t = torch.tensor(acc, dtype=torch.float64)
        coop_t = torch.tensor(coop, dtype=torch.float64)
        rows.append({
            "m": m, "acc_mean": acc_t.mean().item(), "acc_std": acc_t.std(unbiased=False).item(),
            "reachable_mean": sum(reach) / draws, "reach_exact": exact,
            "guess_level": sum(1.0 / r for r in reach) / draws, "learned_mean": sum(learned) / draws,
            "cooperation_mean": coop_t.nanmean().item(),
        })
    return rows
