"""Order parameters of symmetry breaking, and cross-seed matching of units (docs/method.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from lightning_ssb.statistics import jaccard_matrix, unit_statistics


def _check_sets(name: str, labels: Tensor) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.dtype != torch.bool:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a bool tensor [U, K] of learned label sets, got {shape}")
    return labels


def order_parameters(labels: Tensor, accuracy: Tensor | None = None, level: str | None = None) -> dict[str, float]:
    """The registered unit statistics (``lightning_ssb.statistics``) of the learned sets `[U, K]` of one
    site and granularity (``level``: only the statistics registered for it).

    The built-ins: live: units with a non-empty L_u, live_fraction = live / U; overlap: mean Jaccard index
    over pairs of live units; phi = 1 - overlap (both NaN, "undefined", with fewer than two live units);
    mean_labels: mean |L_u| over all U units; coverage: |union of L_u| / K; acc_mean, acc_max over all
    units when accuracy `[U]` is given.
    """
    _check_sets("labels", labels)
    return unit_statistics(labels, accuracy, level)


@dataclass
class UnitMatch:
    """Units of seed a against those of seed b (docs/method.md 5, across seeds).

    assignment `[U]`: unit assignment[u] of b is matched to unit u of a (Hungarian algorithm on the
    Jaccard similarity of the learned sets); jaccard `[U]` of each matched pair.
    identity_agreement: of the units live in either run, the fraction whose L_u is the same set in
    both (same index); matched_agreement: of the matched pairs with a live unit on either side, the
    fraction with the same set. Agreement needs equal *non-empty* sets, so pairs of empty sets
    (arbitrarily matched) and pairs that a tie in the Jaccard matrix made arbitrary but whose sets
    differ never count. NaN when no unit is live in either run.
    matched_jaccard_mean / identity_jaccard_mean: mean Jaccard over the same pairs;
    fixed_fraction: share of units matched to their own index;
    stats_a, stats_b: each seed's order parameters (spontaneous breaking: these agree while the
    identity agreement is low and the matched agreement high).
    """

    assignment: Tensor
    jaccard: Tensor
    identity_agreement: float
    matched_agreement: float
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
    live_a = labels_a.any(1)
    live_matched = live_a | labels_b[assignment].any(1)
    live_id = live_a | labels_b.any(1)
    same_matched = live_a & (labels_a == labels_b[assignment]).all(1)
    same_id = live_a & (labels_a == labels_b).all(1)

    def mean(v: Tensor, m: Tensor) -> float:
        return v[m].double().mean().item() if m.any() else float("nan")

    return UnitMatch(assignment, matched, mean(same_id, live_id), mean(same_matched, live_matched),
                     mean(matched, live_matched), mean(jac.diagonal(), live_id),
                     (assignment == u).double().mean().item(),
                     order_parameters(labels_a), order_parameters(labels_b))
