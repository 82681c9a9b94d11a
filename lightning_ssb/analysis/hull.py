"""The convex-hull bound (METHOD.md section 6): labels a node, or a set of m nodes, can ever output.

A label k can be the argmax of the fields of a node set S only if the point (W[k, S], b_k) is a
vertex of the upper convex hull of the K points in R^{m+1}: one exposed by a direction (a, 1).
For one node this is the upper envelope of its K lines (`envelope.py`), exact with ties; for small m
it is Qhull (`scipy.spatial.ConvexHull`), and one linear program per label when Qhull cannot be used
(degenerate or too few points). For m >= 2 "reachable" means winning on an open set of directions:
a label that only ties for the maximum is not counted.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linprog
from scipy.spatial import ConvexHull, QhullError
from torch import Tensor

from ._checks import check_ablation, check_features
from .envelope import envelope_label_mask, node_envelopes, upper_envelope


def node_hull_labels(readout, lo: Tensor | None = None, hi: Tensor | None = None,
                     ablation: str = "zero") -> Tensor:
    """R_n `[D, K]` bool: labels on node n's envelope over [lo[n], hi[n]] (`[D]` each; all x when None)."""
    check_ablation(ablation)
    w = readout.weight.T.contiguous()
    b = readout.node_bias(ablation).contiguous()
    env = node_envelopes(w, b)
    lo = torch.full((w.shape[0],), -math.inf) if lo is None else lo
    hi = torch.full((w.shape[0],), math.inf) if hi is None else hi
    return envelope_label_mask(env, lo, hi, readout.num_classes)


def hull_bound(hull_labels: Tensor, prior: Tensor) -> Tensor:
    """Accuracy bound `[D]`: sum over k in R_n of P(y = k), for hull_labels `[D, K]` and prior `[K]`."""
    return hull_labels.double() @ prior.double()


def _reachable_lp(points: np.ndarray) -> np.ndarray:
    """Per label, is its point the unique maximiser of (a, 1) . p for some a?  max t subject to
    (p_k - p_j) . (a, 1) >= t for all j != k, t <= 1; reachable iff t > 0."""
    k, dims = points.shape
    m = dims - 1
    out = np.zeros(k, dtype=bool)
    for i in range(k):
        diff = np.delete(points[i] - points, i, axis=0)            # [K-1, m+1]
        a_ub = np.hstack([-diff[:, :m], np.ones((k - 1, 1))])       # -(dw . a) + t <= db
        res = linprog(np.r_[np.zeros(m), -1.0], A_ub=a_ub, b_ub=diff[:, m],
                      bounds=[(None, None)] * m + [(None, 1.0)], method="highs")
        out[i] = res.status == 0 and -res.fun > 1e-9
    return out


def reachable_labels(w: Tensor, b: Tensor, method: str = "auto") -> Tensor:
    """Labels `[K]` bool that the node set with read-out columns w `[K, m]` and biases b `[K]` can output
    for some activation vector. method: "auto" (envelope for m = 1, else Qhull, else LP), "qhull", "lp".
    Duplicate points count once, under the lowest label (the one argmax returns)."""
    check_features("w", w, 2)
    check_features("b", b, 1)
    if w.shape[0] != b.shape[0]:
        raise ValueError(f"w [K, m] and b [K] disagree on K: {tuple(w.shape)} and {tuple(b.shape)}")
    if method not in ("auto", "qhull", "lp"):
        raise ValueError(f"method must be 'auto', 'qhull' or 'lp', got {method!r}")
    k, m = w.shape
    out = torch.zeros(k, dtype=torch.bool)
    if method == "auto" and m == 1:
        env = upper_envelope(w[:, 0].double(), b.double())
        out[env.labels] = True
        out[env.tie_labels] = True
        return out
    points = torch.cat([w, b.unsqueeze(1)], 1).double().numpy()
    uniq, first = np.unique(points, axis=0, return_index=True)
    if len(uniq) == 1:
        out[int(first[0])] = True
        return out
    reach = None
    if method != "lp" and len(uniq) >= m + 2:
        try:
            hull = ConvexHull(uniq)
            upper = hull.equations[:, m] > 1e-12                   # outward normal points up in b
            reach = np.zeros(len(uniq), dtype=bool)
            reach[np.unique(hull.simplices[upper])] = True
        except QhullError:
            reach = None
    if reach is None:
        reach = _reachable_lp(uniq)
    out[torch.as_tensor(first[reach], dtype=torch.long)] = True
    return out
