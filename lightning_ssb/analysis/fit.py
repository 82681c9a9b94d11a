"""Multinomial logistic regression for many independent read-outs at once (docs/method.md section 3).

Every read-out of the package is fitted here: the shared read-out of a whole site (one group of D
nodes, no bias by default), the own read-outs of heads and node subsets (G groups of m nodes, with a
bias), and the own lines of single nodes (D groups of one node, on binned sufficient statistics).

One objective is the sum of the G groups' penalised mean cross-entropies; the groups share no
parameter, so its minimum is every group's own minimum, and one L-BFGS run (steps in numpy, loss and
gradient in torch) fits them all with batched matmuls instead of G optimiser runs.

Choices (documented in the README, set through `AnalysisConfig`):
- Standardised nodes: with a bias, each node is centred and divided by its probe-train std; without
  a bias, only divided by its root mean square (centring would add a hidden bias). The L2 penalty
  `l2/2 * ||W_std||^2` acts on these standardised weights, so it does not depend on a node's scale;
  the result is folded back to raw activations.
- A node whose spread is below `const_tol` times its scale (root mean square) is constant: its
  standardised column is zeroed, so its weight stays exactly 0 (it cannot move any other result).
- Start: zero weights and, with a bias, the log prior (the exact optimum when the nodes carry no
  information); the fit is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

DEFAULT_L2 = 1e-3        # shared read-out of a whole site
DEFAULT_OWN_L2 = 0.15    # own read-outs of single units (see AnalysisConfig.own_l2)
DEFAULT_MAX_ITER = 100
DEFAULT_CONST_TOL = 1e-4


@dataclass
class FitSettings:
    """Settings every read-out fit shares (the `AnalysisConfig` fields of the same names)."""

    l2: float = DEFAULT_L2
    max_iter: int = DEFAULT_MAX_ITER
    const_tol: float = DEFAULT_CONST_TOL

    def __post_init__(self):
        if not (self.l2 >= 0 and np.isfinite(self.l2)):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if not 0 <= self.const_tol < 1:
            raise ValueError(f"const_tol must lie in [0, 1), got {self.const_tol}")


def standardise(x: Tensor, centre: bool, const_tol: float, weights: Tensor | None = None):
    """Scale statistics of x `[..., N, m]` over N: (shift, scale, constant mask), each `[..., m]`.

    shift is the mean when `centre`, else 0; scale the std (centred) or root mean square; a node with
    std <= const_tol * rms is constant (scale 1, and the caller zeroes its column). `weights` `[..., N]`
    weighs the rows (binned statistics)."""
    if weights is None:
        mean = x.mean(-2)
        sq = (x * x).mean(-2)
    else:
        w = weights / weights.sum(-1, keepdim=True)
        mean = (w.unsqueeze(-1) * x).sum(-2)
        sq = (w.unsqueeze(-1) * x * x).sum(-2)
    var = (sq - mean * mean).clamp_min(0)
    std, rms = var.sqrt(), sq.sqrt()
    constant = std <= const_tol * rms
    scale = torch.where(constant, torch.ones_like(rms), std if centre else rms)
    shift = mean if centre else torch.zeros_like(mean)
    return shift, scale, constant


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum's own loop, not BLAS: OpenBLAS's threaded ddot costs milliseconds per call at 10^4-10^5
    # entries when torch's threads hold the cores, which made the vector algebra dominate the fit.
    return float(np.einsum("i,i->", a, b))


def _lbfgs(loss_and_grad, theta0: np.ndarray, max_iter: int, history: int = 10, gtol: float = 1e-6,
           ftol: float = 1e-10) -> np.ndarray:
    """Minimise a smooth convex function by L-BFGS (two-loop recursion, Armijo backtracking) in numpy.

    scipy's L-BFGS-B spends tens of milliseconds per step on its bound machinery at 10^5 parameters,
    more than the batched fields cost; this loop spends a few vector operations. Stops after
    `max_iter` steps, when the largest gradient entry is below gtol, or when a step lowers the loss
    by less than ftol relative to it. Curvature pairs with s.y <= 0 are skipped (positive definite)."""
    theta = np.array(theta0, dtype=np.float64)
    f, g = loss_and_grad(theta)
    s_list: list[np.ndarray] = []
    y_list: list[np.ndarray] = []
    rho: list[float] = []
    for _ in range(int(max_iter)):
        if np.abs(g).max() <= gtol:
            break
        q = g.copy()
        alpha = []
        for s_i, y_i, r_i in zip(reversed(s_list), reversed(y_list), reversed(rho)):
            a = r_i * _dot(s_i, q)
            alpha.append(a)
            q -= a * y_i
        if s_list:
            q *= _dot(s_list[-1], y_list[-1]) / _dot(y_list[-1], y_list[-1])
        else:
            q /= max(np.abs(g).max(), 1.0)  # first step: at most a unit move along the gradient
        for s_i, y_i, r_i, a in zip(s_list, y_list, rho, reversed(alpha)):
            q += (a - r_i * _dot(y_i, q)) * s_i
        direction = -q
        slope = _dot(g, direction)
        if slope >= 0:  # not a descent direction (numerical trouble): restart from the gradient
            s_list, y_list, rho = [], [], []
            direction, slope = -g, -_dot(g, g)
        step = 1.0
        for _ in range(30):
            new = theta + step * direction
            f_new, g_new = loss_and_grad(new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break
        s_k, y_k = new - theta, g_new - g
        sy = _dot(s_k, y_k)
        if sy > 1e-12 * max(1.0, np.sqrt(_dot(s_k, s_k) * _dot(y_k, y_k))):
            s_list.append(s_k), y_list.append(y_k), rho.append(1.0 / sy)
            if len(s_list) > history:
                s_list.pop(0), y_list.pop(0), rho.pop(0)
        done = f - f_new <= ftol * max(abs(f_new), 1.0)
        theta, f, g = new, f_new, g_new
        if done:
            break
    return theta


def fit_groups(x: Tensor, y: Tensor, num_classes: int, bias: bool, settings: FitSettings = FitSettings(),
               init: tuple[Tensor, Tensor] | None = None):
    """Fit G independent read-outs from x `[G, N, m]` (or `[N, m]`, G = 1) to labels y `[N]`.

    Returns (weight `[G, K, m]`, bias `[G, K]`) on raw activations: fields z = x @ weight.T + bias
    (bias all zero when `bias` is False). `init` (weight, bias on raw activations, same shapes) starts
    the optimiser there instead of at zero: the problem is convex, so only the number of steps changes
    (a subset's own read-out starts from the site's shared read-out restricted to it).
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    x = x.detach().to(dtype)
    g, n, m = x.shape
    k = num_classes
    shift, scale, constant = standardise(x, bias, settings.const_tol)
    xs = ((x - shift.unsqueeze(1)) / scale.unsqueeze(1)).masked_fill_(constant.unsqueeze(1), 0.0)
    prior = torch.bincount(y, minlength=k).to(dtype).div(n).clamp_min(0.5 / n)
    nw = g * k * m
    theta0 = np.zeros(nw + (g * k if bias else 0))
    if bias:
        theta0[nw:] = np.tile(prior.log().double().numpy(), g)
    if init is not None:
        w0 = init[0].detach().to(dtype).reshape(g, k, m)
        b0 = init[1].detach().to(dtype).reshape(g, k)
        # the same fields on standardised nodes: w_std = w * scale, b_std = b + w . shift
        theta0[:nw] = (w0 * scale.unsqueeze(1)).masked_fill(constant.unsqueeze(1), 0.0).flatten().double().numpy()
        if bias:
            theta0[nw:] = (b0 + (w0 * shift.unsqueeze(1)).sum(2)).flatten().double().numpy()
    l2 = settings.l2

    index = y.view(1, n, 1).expand(g, n, 1)
    minus_one = torch.full((g, n, 1), -1.0, dtype=dtype)

    def loss_and_grad(theta: np.ndarray):
        t = torch.from_numpy(theta).to(dtype)
        w = t[:nw].view(g, k, m)
        z = torch.bmm(xs, w.transpose(1, 2))  # [G, N, K]
        if bias:
            z += t[nw:].view(g, 1, k)
        p = torch.softmax(z, 2)  # one pass; log p is needed only at the labels
        loss = -p.gather(2, index).clamp_min(1e-30).log().sum() / n + 0.5 * l2 * (w * w).sum()
        gz = p.scatter_add_(2, index, minus_one).div_(n)
        gw = torch.bmm(gz.transpose(1, 2), xs) + l2 * w
        grad = [gw.flatten()] + ([gz.sum(1).flatten()] if bias else [])
        return float(loss), torch.cat(grad).double().numpy()

    sol = torch.from_numpy(_lbfgs(loss_and_grad, theta0, settings.max_iter)).to(dtype)
    w_std = sol[:nw].view(g, k, m)
    weight = w_std / scale.unsqueeze(1)
    b = sol[nw:].view(g, k) if bias else torch.zeros(g, k, dtype=dtype)
    b = b - (weight * shift.unsqueeze(1)).sum(2)
    if squeeze:
        return weight[0], b[0]
    return weight, b


def bin_nodes(x: Tensor, y: Tensor, num_classes: int, bins: int | None):
    """Per-node sufficient statistics for 1-node fits: each node's N examples sorted by activation and
    cut at its quantiles into `bins` groups of nearly equal count; returns bin centres `[D, B]` (the mean activation of
    the bin) and label counts `[D, B, K]`. bins None (or >= N) keeps every example as its own bin."""
    n, d = x.shape
    k = num_classes
    if bins is None or bins >= n:
        return x.T.contiguous(), torch.nn.functional.one_hot(y, k).T.unsqueeze(0).expand(d, k, n) \
            .transpose(1, 2).to(x.dtype)
    # Quantile edges from at most 16 examples per bin (a strided subsample keeps it deterministic), then
    # every example is placed by binary search: O(N D log B) instead of sorting all N per node.
    xt = x.T.contiguous()  # [D, N]
    step = max(1, n // (16 * bins))
    sample = torch.sort(xt[:, ::step], dim=1).values
    cut = (torch.arange(1, bins) * sample.shape[1]) // bins
    edges = sample[:, cut].contiguous()  # [D, B-1]
    which = torch.searchsorted(edges, xt, right=True)  # [D, N] bin of each example
    counts = torch.zeros(d, bins * k, dtype=x.dtype)
    counts.scatter_add_(1, which * k + y.unsqueeze(0), torch.ones_like(xt))
    sums = torch.zeros(d, bins, dtype=x.dtype).scatter_add_(1, which, xt)
    size = counts.view(d, bins, k).sum(2)
    centres = torch.where(size > 0, sums / size.clamp_min(1), torch.zeros_like(sums))
    return centres, counts.view(d, bins, k)


def fit_node_lines(x: Tensor, y: Tensor, num_classes: int, bins: int | None = 256,
                   settings: FitSettings = FitSettings()):
    """Own read-out of every single node: K lines z_k = slope[n, k] x_n + intercept[n, k] per node.

    x `[N, D]`, y `[N]`; returns (slope `[D, K]`, intercept `[D, K]`) on raw activations. The D
    fits run as one problem on binned sufficient statistics (`bin_nodes`): O(D B K) per evaluation
    instead of O(D N K); with B = 256 bins each bin spans 1/256 of a node's examples, so replacing an
    example by its bin's mean activation moves the fitted lines by a negligible amount (bins=None is
    exact). A constant node gets slope 0 and the log prior as intercepts.
    """
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    x = x.detach().to(dtype)
    n = x.shape[0]
    k = num_classes
    centres, counts = bin_nodes(x, y, k, bins)  # [D, B], [D, B, K]
    weights = counts.sum(2)  # [D, B]
    shift, scale, constant = standardise(centres.unsqueeze(2), True, settings.const_tol, weights)
    shift, scale, constant = shift[:, 0], scale[:, 0], constant[:, 0]
    xs = ((centres - shift.unsqueeze(1)) / scale.unsqueeze(1)).masked_fill_(constant.unsqueeze(1), 0.0)
    d = x.shape[1]
    prior = torch.bincount(y, minlength=k).to(dtype).div(n).clamp_min(0.5 / n)
    theta0 = np.concatenate([np.zeros(d * k), np.tile(prior.log().double().numpy(), d)])
    l2 = settings.l2
    xb = xs.unsqueeze(2)  # [D, B, 1]

    def loss_and_grad(theta: np.ndarray):
        t = torch.from_numpy(theta).to(dtype)
        a, c = t[:d * k].view(d, 1, k), t[d * k:].view(d, 1, k)
        z = xb * a + c  # [D, B, K]
        lse = torch.logsumexp(z, 2, keepdim=True)
        loss = ((weights.unsqueeze(2) * lse).sum() - (counts * z).sum()) / n + 0.5 * l2 * (a * a).sum()
        gz = z.sub_(lse).exp_().mul_(weights.unsqueeze(2)).sub_(counts).div_(n)
        ga = (gz * xb).sum(1) + l2 * a[:, 0]
        return float(loss), torch.cat([ga.flatten(), gz.sum(1).flatten()]).double().numpy()

    sol = torch.from_numpy(_lbfgs(loss_and_grad, theta0, settings.max_iter)).to(dtype)
    a_std, c_std = sol[:d * k].view(d, k), sol[d * k:].view(d, k)
    slope = a_std / scale.unsqueeze(1)
    intercept = c_std - slope * shift.unsqueeze(1)
    return slope, intercept
