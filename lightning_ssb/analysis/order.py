"""Order parameters of symmetry breaking, and cross-seed matching of units (METHOD.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def _check_sets(name: str, labels: Tensor) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.dtype != torch.bool:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a bool tensor [U, K] of learned label sets, got {shape}")
    return labels


def jaccard_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Jaccard index `[U, V]` between the label sets a `[U, K]` and b `[V, K]` (0 when both are empty)."""
    af, bf = a.double(), b.double()
    inter = af @ bf.T
    union = af.sum(1, keepdim=True) + bf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def order_parameters(labels: Tensor, accuracy: Tensor | None = None) -> dict[str, float]:
    """Order parameters of the learned sets `[U, K]` of one site and granularity.

    overlap: mean Jaccard index over pairs of units with non-empty L_u; phi = 1 - overlap;
    n_units: how many units that was computed on (overlap and phi are NaN, "undefined", below two);
    mean_labels: mean |L_u| over all U units; coverage: |union of L_u| / K;
    acc_mean, acc_max over all units when accuracy `[U]` is given.
    """
    _check_sets("labels", labels)
    sizes = labels.sum(1)
    live = labels[sizes > 0]
    n = live.shape[0]
    if n >= 2:
        jac = jaccard_matrix(live, live)
        overlap = ((jac.sum() - jac.diagonal().sum()) / (n * (n - 1))).item()
    else:
        overlap = float("nan")
    out = {"overlap": overlap, "phi": 1.0 - overlap, "n_units": float(n),
           "mean_labels": sizes.double().mean().item(),
           "coverage": labels.any(0).double().mean().item()}
    if accuracy is not None:
        out["acc_mean"] = accuracy.double().mean().item()
        out["acc_max"] = accuracy.double().max().item()
    return out


@dataclass
class UnitMatch:
    """Optimal matching of the units of seed a to those of seed b by Jaccard similarity.

    assignment `[U]`: unit assignment[u] of b is matched to unit u of a; jaccard `[U]` of each pair.
    matched_jaccard_mean: mean over matched pairs in which at least one set is non-empty;
    identity_jaccard_mean: the same for the unpermuted pairing u <-> u (the baseline);
    fixed_fraction: share of units matched to their own index (~1/U when the assignment is arbitrary);
    stats_a, stats_b: each seed's order parameters (spontaneous breaking: these agree while the
    assignment does not).
    """

    assignment: Tensor
    jaccard: Tensor
    matched_jaccard_mean: float
    identity_jaccard_mean: float
    fixed_fraction: float
    stats_a: dict
    stats_b: dict


def match_units(labels_a: Tensor, labels_b: Tensor) -> UnitMatch:
    """Match the units of two seeds (learned sets `[U, K]` each) by the Hungarian algorithm on Jaccard."""
    _check_sets("labels_a", labels_a)
    _check_sets("labels_b", labels_b)
    if labels_a.shape != labels_b.shape:
        raise ValueError(f"labels_a and labels_b must have the same shape [U, K], "
                         f"got {tuple(labels_a.shape)} and {tuple(labels_b.shape)}")
    jac = jaccard_matrix(labels_a, labels_b)
    rows, cols = linear_sum_assignment(jac.numpy(), maximize=True)
    assignment = torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long)
    u = torch.arange(len(assignment))
    matched = jac[u, assignment]
    live = labels_a.any(1) | labels_b[assignment].any(1)
    live_id = labels_a.any(1) | labels_b.any(1)

    def mean(v: Tensor, m: Tensor) -> float:
        return v[m].mean().item() if m.any() else float("nan")

    return UnitMatch(assignment, matched, mean(matched, live), mean(jac.diagonal(), live_id),
                     (assignment == u).double().mean().item(),
                     order_parameters(labels_a), order_parameters(labels_b))
