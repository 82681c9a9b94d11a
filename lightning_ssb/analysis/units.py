"""What a unit (node or head) has learned (docs/method.md section 4): per-label statistics, confusion and
field matrices, learned label sets and the cluster statistics of the field matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._checks import check_ablation, check_features, check_labels, check_readout
from .envelope import node_predictions
from .readout import Readout
from .silencing import _check_heads, head_predictions


@dataclass
class LabelStats:
    """Per-unit, per-label statistics of predictions: all `[U, K]` except accuracy `[U]`.

    recall[u, i] = P(p_u = i | y = i); precision[u, i] = P(y = i | p_u = i), 0 where u never predicts i
    (as sklearn's zero_division=0); pred_freq[u, i] = P(p_u = i); hits[u, i] = #{s : y_s = i = p_u(s)};
    class_count `[K]` = #{s : y_s = i}.
    """

    accuracy: Tensor
    recall: Tensor
    precision: Tensor
    pred_freq: Tensor
    hits: Tensor
    class_count: Tensor


def label_stats(pred: Tensor, y: Tensor, num_classes: int) -> LabelStats:
    """Statistics of predictions pred `[U, N]` against labels y `[N]`, in O(U N) (no K x K matrices)."""
    u, n = pred.shape
    k = num_classes
    correct = pred == y
    offs = torch.arange(u).unsqueeze(1) * k
    hits = torch.bincount((offs + pred)[correct], minlength=u * k).view(u, k).double()
    predicted = torch.bincount((offs + pred).flatten(), minlength=u * k).view(u, k).double()
    class_count = torch.bincount(y, minlength=k).double()
    recall = hits / class_count.clamp_min(1)
    precision = torch.where(predicted > 0, hits / predicted.clamp_min(1), torch.zeros_like(hits))
    return LabelStats(correct.double().mean(1), recall, precision, predicted / n, hits, class_count)


def binomial_pvalues(stats: LabelStats) -> Tensor:
    """One-sided p-values `[U, K]`: P(X >= hits[u, i]) for X ~ Binomial(n_i, P(p_u = i)), i.e. against a
    unit whose predictions are independent of the label (docs/method.md 4). A unit that predicts i for every
    example has P(p_u = i) = 1 and p-value 1: predicting one label always is no association."""
    from scipy.stats import binom

    n = stats.class_count.unsqueeze(0).expand_as(stats.hits).numpy()
    p = binom.sf(stats.hits.numpy() - 1, n, stats.pred_freq.clamp(0, 1).numpy())
    return torch.from_numpy(np.asarray(p, dtype=np.float64)).clamp_(0, 1)


def benjamini_hochberg(pvalues: Tensor, q: float) -> Tensor:
    """Discoveries (bool, same shape) of the Benjamini-Hochberg procedure at false discovery rate q over
    all entries of `pvalues`: reject every p <= p_(k*), k* the largest k with p_(k) <= k q / m."""
    flat = pvalues.flatten().double()
    m = flat.numel()
    if m == 0:
        return torch.zeros_like(pvalues, dtype=torch.bool)
    ordered = torch.sort(flat).values
    below = ordered <= q * torch.arange(1, m + 1, dtype=torch.float64) / m
    if not below.any():
        return torch.zeros_like(pvalues, dtype=torch.bool)
    cutoff = ordered[int(below.nonzero().max())]
    return (flat <= cutoff).view(pvalues.shape)


def learned_labels(stats: LabelStats, theta: float = 0.5, q: float | None = 0.05) -> Tensor:
    """Learned label sets L_u `[U, K]` bool (docs/method.md 4): recall >= theta, and the hits of the label
    are significant against the unit's own prediction rate (one-sided binomial test) with the
    Benjamini-Hochberg false discovery rate q over all (unit, label) pairs passed in. q None drops the
    test (then noise passes: a unit splitting the data between two labels reaches recall 0.5 by chance)."""
    recall_ok = stats.recall >= theta
    if q is None:
        return recall_ok
    return recall_ok & benjamini_hochberg(binomial_pvalues(stats), q)


def confusion_matrices(pred: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Confusion matrices `[U, K, K]`: C[u, i, j] = #{s : y_s = i, p_u(s) = j}."""
    u, k = pred.shape[0], num_classes
    idx = torch.arange(u).unsqueeze(1) * k * k + y.unsqueeze(0) * k + pred
    return torch.bincount(idx.flatten(), minlength=u * k * k).view(u, k, k)


def class_means(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean activation `[K, D]` of each class of x `[N, D]` (0 for an empty class)."""
    sums = torch.zeros(num_classes, x.shape[1], dtype=x.dtype).index_add_(0, y, x)
    return sums / torch.bincount(y, minlength=num_classes).clamp_min(1).unsqueeze(1).to(x.dtype)


def node_field_matrices(means: Tensor, weight: Tensor, nodes: Tensor | None = None,
                        intercept: Tensor | None = None) -> Tensor:
    """Field matrices `[U, K, K]` of single nodes: F[n, i, k] = W[k, n] * mean_{y=i} x_n + c[n, k].

    The field of a node alone (docs/method.md 4) is linear in its activation, so its class mean is the
    field of the class mean: F needs only the class means `[K, D]`. intercept `[D, K]` is the node's
    constant part where its read-out has one (own lines, a shared bias, a mean-ablation constant).
    """
    if nodes is not None:
        means, weight = means[:, nodes], weight[:, nodes]
        intercept = None if intercept is None else intercept[nodes]
    out = means.T.unsqueeze(2) * weight.T.unsqueeze(1)
    return out if intercept is None else out + intercept.unsqueeze(1)


def head_field_matrices(means: Tensor, weight: Tensor, num_heads: int, bias: Tensor | None = None) -> Tensor:
    """Field matrices `[H, K, K]` of heads: F[h, i, k] = sum over nodes n of h of W[k, n] mean_{y=i} x_n
    (+ bias[h, k], `[H, K]`, where the head's read-out has a constant part). weight is `[K, D]` (one
    read-out, heads as column blocks) or `[H, K, d]` (one read-out per head)."""
    if weight.dim() == 3:
        h, k, d = weight.shape
        out = torch.einsum("ihd,hkd->hik", means.view(-1, h, d), weight)
    else:
        k, dim = weight.shape
        d = _check_heads(num_heads, dim)
        out = torch.einsum("ihd,khd->hik", means.view(-1, num_heads, d), weight.view(k, num_heads, d))
    return out if bias is None else out + bias.unsqueeze(1)


def _bitmasks(b: np.ndarray) -> list[int]:
    packed = np.packbits(b, axis=-1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _greedy_clusters(b: np.ndarray) -> list[int]:
    """Cluster sizes of a 0/1 matrix `[K, K]`: labels with a 1 on the diagonal, in index order, each
    seeding a cluster that a later label joins when the cluster plus the label is still an all-ones
    square block. Rows and columns are python-int bitmasks, so each test is two AND operations."""
    rows, cols = _bitmasks(b), _bitmasks(np.ascontiguousarray(b.T))
    free = [i for i in range(b.shape[0]) if b[i, i]]
    sizes = []
    while free:
        members = 1 << free[0]
        size, rest = 1, []
        for j in free[1:]:
            if rows[j] & members == members and cols[j] & members == members:
                members |= 1 << j
                size += 1
            else:
                rest.append(j)
        sizes.append(size)
        free = rest
    return sizes


@dataclass
class ClusterStats:
    """Per-unit cluster statistics `[U]`: count, mean size (0 with no cluster) and noise =
    ones in B_u minus the sum over clusters of size^2 (ones outside the cluster blocks)."""

    count: Tensor
    mean_size: Tensor
    noise: Tensor


def cluster_stats(fields: Tensor, tau: float = 0.3) -> ClusterStats:
    """Cluster statistics of field matrices `[U, K, K]` (docs/method.md 4): F_u / max(F_u) >= tau gives B_u.

    A unit whose largest field is not positive has no ones (B_u = 0): normalising by a negative
    maximum would flip the order of the fields.
    """
    top = fields.flatten(1).max(1).values.view(-1, 1, 1)
    ones = ((fields >= tau * top) & (top > 0)).numpy()
    count, size, noise = [], [], []
    for b in ones:
        sizes = _greedy_clusters(b)
        count.append(len(sizes))
        size.append(float(np.mean(sizes)) if sizes else 0.0)
        noise.append(int(b.sum()) - sum(s * s for s in sizes))
    return ClusterStats(torch.tensor(count, dtype=torch.long), torch.tensor(size, dtype=torch.float64),
                        torch.tensor(noise, dtype=torch.long))


@dataclass
class UnitReport:
    """Everything docs/method.md 4 defines for a set of U units: predictions `[U, N]`, accuracy `[U]`,
    recall / precision / pred_freq `[U, K]`, learned `[U, K]` bool, confusion and field `[U, K, K]`,
    and their cluster statistics."""

    units: Tensor
    predictions: Tensor
    accuracy: Tensor
    recall: Tensor
    precision: Tensor
    pred_freq: Tensor
    learned: Tensor
    confusion: Tensor
    field: Tensor
    clusters: ClusterStats


def unit_report(x: Tensor, y: Tensor, readout: Readout, granularity: str = "node", num_heads: int = 1,
                units=None, ablation: str = "zero", theta: float = 0.5, tau: float = 0.3,
                field_x: Tensor | None = None, field_y: Tensor | None = None, q: float | None = 0.05) -> UnitReport:
    """Per-unit predictions, recall, precision, learned sets, confusion and field matrices on x `[N, D]`.

    The shared read-out family (docs/method.md 3): each unit's contribution to `readout`, its bias included.
    granularity "node" (U = D) or "head" (U = num_heads); `units` selects some of them (the K x K
    matrices cost U K^2 memory); the significance test of the learned sets runs over the selected
    units. Field matrices use the class means of (field_x, field_y) when given, else of (x, y).
    """
    check_features("x", x, 2)
    check_readout(readout, x.shape[1])
    check_ablation(ablation)
    k = readout.num_classes
    y = check_labels("y", y, x.shape[0], k, require_all=False)
    if granularity == "node":
        pred = node_predictions(x, readout, ablation)
    elif granularity == "head":
        pred = head_predictions(x, readout, num_heads, ablation)
    else:
        raise ValueError(f"granularity must be 'node' or 'head', got {granularity!r}")
    units = torch.arange(pred.shape[0]) if units is None else torch.as_tensor(units, dtype=torch.long)
    pred = pred[units]
    stats = label_stats(pred, y, k)
    fx, fy = (x, y) if field_x is None else (field_x, field_y)
    means = class_means(fx, fy, k)
    if granularity == "node":
        field = node_field_matrices(means, readout.weight, units, readout.node_bias(ablation))
    else:
        field = head_field_matrices(means, readout.weight, num_heads, readout.head_bias(num_heads, ablation))[units]
    return UnitReport(units, pred, stats.accuracy, stats.recall, stats.precision, stats.pred_freq,
                      learned_labels(stats, theta, q), confusion_matrices(pred, y, k), field,
                      cluster_stats(field, tau))
