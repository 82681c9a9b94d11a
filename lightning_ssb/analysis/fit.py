"""Multinomial logistic regression for many independent read-outs at once (docs/method.md section 3).

Every read-out of the package is fitted here: the shared read-out of a whole site (one group of D
nodes, no bias by default), the own read-outs of heads and node subsets (G groups of m nodes, with a
bias), and the own lines of single nodes (D groups of one node, on binned sufficient statistics).

How, and why:
- **float64, unit by unit.** Whatever the activations' dtype (float32, bf16, fp16), every fit runs
  in float64, and each read-out is its own optimisation problem with its own convergence test
  (``optim.py``): batched for speed, but a read-out's result does not depend on which others are
  fitted beside it. A joint float32 fit, whose stop was a test on the summed loss, could not see
  per-unit gains of 1e-7 and stopped early. Each fit reports per read-out whether it converged
  (largest gradient entry <= ``gtol``) and its final gradient (``FitReport``).
- **Standardised nodes.** With a bias, each node is centred and divided by its probe-train std;
  without a bias, only divided by its root mean square (centring would add a hidden bias). The
  L2 penalty ``l2/2 * ||W_std||^2`` acts on these standardised weights, so it does not depend on a
  node's scale; the result is folded back to raw activations. The statistics are computed on the
  node divided by its largest magnitude, in float64, two-pass: scale-free from 1e-300 to 1e300.
- **Constant nodes.** A node whose spread is below ``const_tol`` times its scale (root mean
  square) is constant: its standardised column is zeroed, so its weight stays exactly 0.
- **Start.** Zero weights and, with a bias, the log prior (the exact optimum when the nodes carry
  no information), or a given warm start; the fit is deterministic.
- **Single nodes** (K lines in one activation, 2K parameters) are solved by batched Newton steps
  when K is at most ``NEWTON_MAX_CLASSES`` (a [2K, 2K] Hessian per node), else by L-BFGS; heads,
  subsets and whole sites by L-BFGS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from .optim import ALIGN_BYTES, FitReport, lbfgs, newton

DEFAULT_MAX_ITER = 1000
DEFAULT_GTOL = 1e-6
DEFAULT_CONST_TOL = 1e-4
DEFAULT_L2 = 1e-3            # used only where no penalty was chosen (plain calls of the fit functions)
NEWTON_MAX_CLASSES = 128     # Newton for single nodes up to this K: a [2K, 2K] Hessian per node
DTYPE = torch.float64


@dataclass
class FitSettings:
    """Settings every read-out fit shares: penalty, iteration cap, convergence and constant tests."""

    l2: float = DEFAULT_L2
    max_iter: int = DEFAULT_MAX_ITER
    const_tol: float = DEFAULT_CONST_TOL
    gtol: float = DEFAULT_GTOL

    def __post_init__(self):
        if not (isinstance(self.l2, (int, float)) and self.l2 >= 0 and math.isfinite(self.l2)):
            raise ValueError(f"l2 must be a finite number >= 0, got {self.l2}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if not 0 <= self.const_tol < 1:
            raise ValueError(f"const_tol must lie in [0, 1), got {self.const_tol}")
        if not self.gtol > 0:
            raise ValueError(f"gtol must be > 0, got {self.gtol}")

    def with_l2(self, l2: float) -> FitSettings:
        return FitSettings(float(l2), self.max_iter, self.const_tol, self.gtol)


class GroupFit(NamedTuple):
    """G read-outs on raw activations: weight `[G, K, m]`, bias `[G, K]`, and how each fit ended."""

    weight: Tensor
    bias: Tensor
    report: FitReport


class NodeFit(NamedTuple):
    """Every node's K lines on raw activations: slope, intercept `[D, K]`, and how each fit ended."""

    slope: Tensor
    intercept: Tensor
    report: FitReport


def standardise(x: Tensor, centre: bool, const_tol: float, weights: Tensor | None = None):
    """Scale statistics of x `[..., N, m]` over N: (shift, scale, constant mask), each `[..., m]`, float64.

    shift is the mean when `centre`, else 0; scale the std (centred) or root mean square; a node with
    std <= const_tol * rms is constant (scale 1, and the caller zeroes its column). `weights` `[..., N]`
    weighs the rows (binned statistics). Computed on x / max|x| in two passes, so neither a huge offset
    nor a tiny or huge scale loses precision. At most two float64 copies of x exist at once (at the
    FewRel scale each is 250 MB, and every fresh one is paid again in page faults)."""
    top = torch.maximum(x.amax(-2), x.amin(-2).neg()).to(DTYPE)  # [..., m]: max |x|, exact in x's dtype
    unit = torch.where(top > 0, top, torch.ones_like(top))
    xu = _owned_float64(x).div_(unit.unsqueeze(-2))
    if weights is None:
        inv_n = 1.0 / x.shape[-2]  # every row weighs 1/N
        work = xu * inv_n
        mean = work.sum(-2)
        torch.sub(xu, mean.unsqueeze(-2), out=work)
        var = work.pow_(2).mul_(inv_n).sum(-2)
    else:
        w = weights.to(DTYPE)
        w = (w / w.sum(-1, keepdim=True)).unsqueeze(-1)
        mean = (w * xu).sum(-2)
        var = (w * (xu - mean.unsqueeze(-2)) ** 2).sum(-2)
    del xu
    sq = var + mean * mean
    std, rms = var.sqrt(), sq.sqrt()
    constant = (std <= const_tol * rms) | (top == 0)
    scale = torch.where(constant, torch.ones_like(rms), (std if centre else rms) * unit)
    shift = mean * unit if centre else torch.zeros_like(mean)
    return shift, scale, constant


def _owned_float64(x: Tensor) -> Tensor:
    """A contiguous float64 copy of x that the caller may overwrite (x itself is never changed)."""
    return x.to(DTYPE, memory_format=torch.contiguous_format, copy=True)


def _check_finite(name: str, t: Tensor) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: the activations are too large for float64 statistics "
                         f"({(~torch.isfinite(t)).sum().item()} non-finite values after standardising)")


def softmax_parts(z: Tensor) -> tuple[Tensor, Tensor]:
    """(log-sum-exp `[..., 1]`, softmax) of fields z `[..., K]` in one pass, overwriting z with the softmax
    (torch's logsumexp and a separate softmax cost twice the exponentials)."""
    top = z.amax(-1, keepdim=True)
    z.sub_(top).exp_()
    total = z.sum(-1, keepdim=True)
    z.div_(total)
    return top.add_(total.log_()), z


# Every read-out's operands of a matrix product start on a 64-byte boundary. MKL's products (torch's on a CPU)
# round differently with the operands' offset from such a boundary: a batched product runs each read-out at
# its own offset, and of four read-outs of 5 or 7 nodes the second and fourth came out differently from the
# same read-outs fitted alone (in float32 and float64; found 2026-12-04, docs/BENCHMARKS.md). So the group
# fits keep each read-out's nodes, fields, weights and matrices in slabs that start on such a boundary
# (`slabs`; the boundary is optim.py's `ALIGN_BYTES`, where the Newton solves are padded for the same reason),
# and multiply them read-out by read-out: a read-out's products, and so its fit, are the same alone or among
# others.


def slabs(g: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """An uninitialised `[g, *shape]` tensor whose every slab `[i]` is contiguous and starts on a 64-byte
    boundary (the slabs padded to a multiple of 64 bytes)."""
    item = torch.empty(0, dtype=dtype).element_size()
    per = max(1, ALIGN_BYTES // item)
    inner = math.prod(shape)
    stride = -(-inner // per) * per
    flat = torch.empty(g * stride + per, dtype=dtype, device=device)
    skip = (-(flat.data_ptr() // item)) % per
    inner_strides = torch.empty(shape, device="meta").stride()
    return flat.as_strided((g, *shape), (stride, *inner_strides), skip)


def is_slabs(x: Tensor) -> bool:
    """Whether every slab `x[i]` is contiguous and starts on a 64-byte boundary."""
    item = x.element_size()
    return (x.dim() >= 1 and x[0].is_contiguous() and x.data_ptr() % ALIGN_BYTES == 0
            and (x.shape[0] < 2 or (x.stride(0) * item) % ALIGN_BYTES == 0))


def slabs_of(x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """x `[g, ...]` in `dtype` (default its own) as `slabs`: x itself when it already is."""
    dtype = x.dtype if dtype is None else dtype
    if x.dtype == dtype and is_slabs(x):
        return x
    out = slabs(x.shape[0], tuple(x.shape[1:]), dtype, x.device)
    return out.copy_(x)


def scratch_slabs(cache: dict, key: str, g: int, shape: tuple[int, ...], dtype: torch.dtype,
                  device: torch.device | str) -> Tensor:
    """`slabs(g, shape, dtype, device)` made at the first call with this key and dtype and returned again
    after (its first rows, `[:g']`, are slabs too): a preconditioner's buffers, once per fit, not per step."""
    buf = cache.get((key, dtype))
    if buf is None:
        buf = cache[(key, dtype)] = slabs(g, shape, dtype, device)
    return buf


# Rows of the fields that `group_objective` computes at once, in float64 on a CPU: a block `[G, 512, K]`
# stays in cache between the matrix product that writes it, the softmax and the product that reads it back.
# Over all N rows at once each of those passes went to memory, and a float64 evaluation took 1.15 to 1.35
# times as long on one thread (the forked processes of the analysis), at the quick starts' scale as at the
# FewRel scale. The same number for every fit, whatever the thread count, so that a read-out's sums, and so
# its result, do not depend on how many others are fitted beside it or on the threads. Not in float32 (the
# first phase of a fit: on two threads its blocks were slower than one pass) nor on an accelerator.
CPU_BLOCK_ROWS = 512


def block_rows(n: int, dtype: torch.dtype, device: torch.device | str) -> int:
    """Rows per block of `group_objective`: `CPU_BLOCK_ROWS` in float64 on a CPU, else all n."""
    return min(n, CPU_BLOCK_ROWS) if dtype == torch.float64 and torch.device(device).type == "cpu" else n


def group_objective(xs: Tensor, y: Tensor, num_classes: int, bias: bool, l2: float, rows: int | None = None):
    """loss-and-gradient of G read-outs on standardised xs `[G, N, m]` (mean cross-entropy plus
    l2/2 ||W||^2), theta = [W (K x m, row-major), b (K)] per read-out, in xs's dtype.

    The N rows are taken in blocks of `rows` (default `block_rows`: 512 in float64 on a CPU): each block's fields
    `[g, rows, K]` are computed, turned into softmax residuals and multiplied back into the gradient while
    they are in cache, and the loss and gradient are sums over the blocks. The fields of every block are
    written into one buffer made once (a fresh one each evaluation was mapped and page-faulted anew: a third
    of the penalty rule's time at the FewRel scale). The two matrix products are made read-out by read-out on
    operands that start on a 64-byte boundary (`slabs`), so that a read-out's sums are the same alone or
    among others."""
    xs = slabs_of(xs)  # no copy for prepared groups (`prepare_groups`, `GroupData.of`)
    g, n, m = xs.shape
    k = num_classes
    nw = k * m
    rows = block_rows(n, xs.dtype, xs.device) if rows is None else int(min(n, max(1, rows)))
    starts = range(0, n, rows)
    target = y.view(1, n, 1)
    minus_one = torch.full((1, 1, 1), -1.0, dtype=xs.dtype, device=xs.device)
    fields = slabs(g, (rows, k), xs.dtype, xs.device)  # reused by every block and evaluation
    weights, grads = slabs(g, (k, m), xs.dtype, xs.device), slabs(g, (k, m), xs.dtype, xs.device)
    # the views the products use, made once: read-out i's rows of block s, its fields there and their transpose
    spans = [(start, min(n, start + rows)) for start in starts]
    x_at = [[xs[i, a:e] for a, e in spans] for i in range(g)]
    z_at = [[fields[i, : e - a] for a, e in spans] for i in range(g)]
    p_at = [[z.T for z in zs] for zs in z_at]
    w_t = [weights[i].T for i in range(g)]
    gw_at = [grads[i] for i in range(g)]

    def objective(theta: Tensor, idx: Tensor):
        gg = idx.numel()
        groups = list(enumerate(range(g) if gg == g else idx.tolist()))
        w = weights[:gg]
        w.copy_(theta[:, :nw].view(gg, k, m))
        total = torch.zeros(gg, dtype=xs.dtype, device=xs.device)  # summed cross-entropy
        gw = grads[:gg]
        torch.mul(w, l2, out=gw)  # the penalty's gradient; every block adds its residuals' product
        gb = torch.zeros(gg, k, dtype=xs.dtype, device=xs.device) if bias else None
        b = theta[:, nw:].view(gg, 1, k) if bias else None
        for s, (start, stop) in enumerate(spans):
            r = stop - start
            z = fields[:gg, :r]  # [gg, r, k], each read-out's fields contiguous from a 64-byte boundary
            for j, gi in groups:
                torch.mm(x_at[gi][s], w_t[j], out=z_at[j][s])
            if b is not None:
                z.add_(b)
            tgt = target[:, start:stop].expand(gg, r, 1)
            zy = z.gather(2, tgt)
            lse, p = softmax_parts(z)
            total += (lse - zy).sum((1, 2))
            p.scatter_add_(2, tgt, minus_one.expand(gg, r, 1))  # softmax - onehot
            for j, gi in groups:
                gw_at[j].addmm_(p_at[j][s], x_at[gi][s], alpha=1.0 / n)
            if gb is not None:
                gb += p.sum(1)
        loss = total / n + 0.5 * l2 * (w * w).sum((1, 2))
        grad = (torch.cat([gw.flatten(1), gb / n], 1) if gb is not None
                else gw.flatten(1).clone(memory_format=torch.contiguous_format))
        return loss, grad

    return objective


def second_moments(xs: Tensor) -> Tensor:
    """xs^T xs / N of every read-out's nodes, `[G, m, m]` from xs `[G, N, m]`, read-out by read-out (`slabs`)."""
    xs = slabs_of(xs)
    g, n, m = xs.shape
    cov = slabs(g, (m, m), xs.dtype, xs.device)
    for i in range(g):
        torch.mm(xs[i].T, xs[i], out=cov[i])
    return cov.div_(n)


def group_preconditioner(xs: Tensor, num_classes: int, bias: bool, l2: float, cov: Tensor | None = None):
    """An approximate inverse Hessian of `group_objective` at the start (uniform softmax): for the
    weights of every class (C / K + l2 I)^-1 with C = xs^T xs / N the nodes' second moments (`cov`
    when given), for the biases K. Correlated nodes make the plain problem ill-conditioned; this is
    L-BFGS's initial matrix. Made and applied read-out by read-out (`slabs`)."""
    g, n, m = xs.shape
    k = num_classes
    nw = k * m
    if cov is None:
        cov = second_moments(xs)
    eye = torch.eye(m, dtype=xs.dtype, device=xs.device)
    inv = slabs(g, (m, m), xs.dtype, xs.device)
    for i in range(g):
        a = cov[i] / k + (l2 + 1e-8) * eye  # the small ridge keeps constant (zeroed) nodes invertible
        inv[i].copy_(torch.cholesky_inverse(torch.linalg.cholesky(a)))

    scratch: dict = {}

    def apply(q: Tensor, idx: Tensor) -> Tensor:
        gg = q.shape[0]
        groups = range(g) if gg == g else idx.tolist()
        qw = scratch_slabs(scratch, "q", g, (k, m), q.dtype, q.device)[:gg].copy_(q[:, :nw].view(gg, k, m))
        rw = scratch_slabs(scratch, "r", g, (k, m), q.dtype, q.device)[:gg]
        for j, gi in enumerate(groups):
            torch.mm(qw[j], inv[gi], out=rw[j])
        return torch.cat([rw.flatten(1), q[:, nw:] * k], 1) if bias else rw.flatten(1).clone(
            memory_format=torch.contiguous_format)

    return apply


class CurvaturePreconditioner:
    """An approximate inverse Hessian of `group_objective` where each read-out stands: for the weights of
    class c, (sum_n v_nc x_n x_n^T / N + l2 I)^-1 with v_nc = p_nc (1 - p_nc) the softmax's own curvature
    there (the Hessian's class-diagonal blocks; the couplings between classes, -p_nc p_nd, are left out);
    for the bias of class c, 1 / (mean_n v_nc + l2). Kept in float32 whatever the fit's dtype (it only
    shapes the steps; the gradient and the stop stay in the fit's dtype).

    `group_preconditioner` is this Hessian at the start (uniform softmax). Once a read-out fits its
    labels confidently, many of its examples have v_nc near 0 and its curvature in many directions is
    little more than l2: the start's matrix then overstates it by orders of magnitude, and L-BFGS needed
    hundreds of steps at a weak penalty. Rows with v_nc < l2 / 100 are left out of class c's block: what
    they add to it is below a hundredth of the penalty's curvature per unit second moment (the nodes are
    standardised). `build` fills the blocks of some read-outs (each from its own point: a read-out's blocks
    never depend on the others'); calling the object applies them, as `lbfgs`'s ``precond``."""

    def __init__(self, num_groups: int, num_nodes: int, num_classes: int, bias: bool, l2: float, device) -> None:
        self.g, self.k, self.m, self.bias, self.l2, self.device = num_groups, num_classes, num_nodes, bias, l2, device
        self.inv = self.bias_inv = torch.zeros(0)  # made at the first `build`: most fits never need them
        self.scratch: dict = {}  # `__call__`'s buffers, made once per fit (`scratch_slabs`)

    def build(self, xs: Tensor, theta: Tensor, groups: Tensor) -> None:
        """The blocks of read-outs `groups` from xs `[G, N, m]` (all read-outs) at theta `[len(groups), P]`."""
        k, m, l2 = self.k, self.m, self.l2
        nw = k * m
        n = xs.shape[1]
        cut = l2 / 100.0
        eye = torch.eye(m, dtype=torch.float32, device=xs.device)
        if not self.inv.numel():
            self.inv = slabs(self.g, (k, m, m), torch.float32, self.device).zero_()
            self.bias_inv = torch.zeros(self.g, k, dtype=torch.float32, device=self.device)
        for row, gi in enumerate(groups.tolist()):
            x = xs[gi].float()  # [n, m], from a 64-byte boundary (`slabs`) in either dtype
            z = x @ theta[row, :nw].view(k, m).float().clone().T  # a copy from a 64-byte boundary (`slabs`)
            if self.bias:
                z += theta[row, nw:].float()
            v = torch.softmax(z, -1)
            v.mul_(1.0 - v)  # [n, k]: p (1 - p)
            blocks = torch.empty(k, m, m, dtype=torch.float32, device=xs.device)
            for c in range(k):
                keep = (v[:, c] >= cut).nonzero().flatten()
                xw = x[keep] * v[keep, c].sqrt().unsqueeze(1)
                torch.mm(xw.T, xw, out=blocks[c])
            blocks.div_(n).add_((l2 + 1e-8) * eye)  # the small ridge keeps constant (zeroed) nodes invertible
            self.inv[gi] = torch.cholesky_inverse(torch.linalg.cholesky(blocks))
            self.bias_inv[gi] = 1.0 / (v.mean(0) + l2 + 1e-8)

    def __call__(self, q: Tensor, idx: Tensor) -> Tensor:
        k, m = self.k, self.m
        nw = k * m
        gg = q.shape[0]
        groups = range(gg) if gg == self.g else idx.tolist()
        qw = scratch_slabs(self.scratch, "q", self.g, (k, 1, m), torch.float32, q.device)[:gg]
        qw.copy_(q[:, :nw].view(gg, k, 1, m))
        res = scratch_slabs(self.scratch, "r", self.g, (k, 1, m), torch.float32, q.device)[:gg]
        # row vectors times the symmetric blocks (a faster kernel than the blocks times columns), read-out by
        # read-out (`slabs`)
        for j, gi in enumerate(groups):
            torch.bmm(qw[j], self.inv[gi], out=res[j])
        rw = res.flatten(1)
        if not self.bias:
            return rw.to(q.dtype, memory_format=torch.contiguous_format, copy=True)
        bi = self.bias_inv if idx.numel() == self.bias_inv.shape[0] else self.bias_inv[idx]
        return torch.cat([rw.to(q.dtype), q[:, nw:] * bi.to(q.dtype)], 1)


# A read-out of a polished group fit goes on with `CurvaturePreconditioner`, built where it stands, once it has
# taken `curvature_after(m)` L-BFGS steps with `group_preconditioner` without converging (a problem the
# start's curvature describes badly: a weak penalty at a trained state), and keeps that matrix for its float64
# phase. Building it costs about m / 4 evaluations of the objective (K blocks of m x m over the rows), and
# applying it, for m in the hundreds, about as much as an evaluation: a read-out switches only after it has
# spent about twice the build's cost with the start's matrix (the rent-or-buy rule), so that a fit that
# converges soon never pays for it. Each read-out switches on its own, whatever the others beside it do. The
# optimum is the same (a convex problem, the same stop): only the path to it changes. Measured in
# docs/BENCHMARKS.md (2026-12-04, evening).
CURVATURE_AFTER = 30


def curvature_after(m: int) -> int:
    """Steps with the start's matrix before a read-out of m nodes switches: max(30, m / 2)."""
    return max(CURVATURE_AFTER, m // 2)


# The curvature matrix is K blocks of m x m per read-out in float32: never more than this (an MLM probe of the
# whole vocabulary would need tens of GB); a fit whose matrix would be larger keeps the start's throughout.
CURVATURE_MAX_BYTES = 512 * 2**20


def _subset(fn, sel: Tensor):
    """`fn(t, idx)` (an objective or a preconditioner over all read-outs) for the read-outs `sel` alone."""
    return lambda t, idx: fn(t, sel[idx])


def _lbfgs_phase(objective, theta: Tensor, max_iter: int | Tensor, gtol: float, plain, xs: Tensor,
                 curvature: CurvaturePreconditioner | None, switched: Tensor) -> tuple[Tensor, FitReport]:
    """One dtype phase of a polished group fit. The read-outs that switched in an earlier phase (`switched`
    `[G]`) use `curvature` from the first step; the others `plain` for at most `curvature_after(m)` steps,
    then (those not converged) `curvature` built where they stand, and are marked in `switched`.
    `curvature` None: `plain` throughout. `max_iter` caps each read-out's steps in this phase."""
    g = theta.shape[0]
    if curvature is None:
        return lbfgs(objective, theta, max_iter, gtol, precond=plain)
    dev = theta.device
    caps = torch.as_tensor(max_iter, device=dev).expand(g)
    theta = theta.clone()
    converged = torch.zeros(g, dtype=torch.bool, device=dev)
    grad_max = torch.zeros(g, dtype=theta.dtype, device=dev)
    iters = torch.zeros(g, dtype=torch.long, device=dev)
    stalled = torch.zeros(g, dtype=torch.bool, device=dev)

    def run(sel: Tensor, precond, cap: Tensor) -> FitReport:
        out, rep = lbfgs(_subset(objective, sel), theta[sel], cap, gtol, precond=_subset(precond, sel))
        theta[sel] = out
        converged[sel], grad_max[sel] = rep.converged, rep.grad_max
        iters[sel] += rep.iterations
        stalled[sel] |= rep.stalled_mask()
        return rep

    first = (~switched).nonzero().flatten()
    if first.numel():
        rep = run(first, plain, caps[first].clamp(max=curvature_after(curvature.m)))
        go = first[~(rep.converged | rep.stalled_mask() | (rep.iterations >= caps[first]))]
        if go.numel():
            curvature.build(xs, theta[go], go)
            switched[go] = True
            run(go, curvature, caps[go] - iters[go])
    old = switched.clone()
    old[first] = False
    if old.any():
        sel = old.nonzero().flatten()
        run(sel, curvature, caps[sel])
    return theta, FitReport(converged, grad_max, iters, stalled & ~converged)


# The first phase of every fit runs in float32 (exponentials and matmuls several times faster on a CPU)
# down to this gradient; the second phase continues in float64 from there to `gtol`. The result is the
# float64 optimum either way (convex problems): only the number of float64 steps changes. A fit that is
# not polished (the penalty rule ranks held-out losses of float32 fits) stops at FLOAT32_GTOL.
FLOAT32_GTOL = 1e-4
# A polished group fit (L-BFGS: heads, subsets, the shared read-out) goes on in float32 to this gradient
# before it switches: its float64 steps cost 2 to 3 times a float32 step, and L-BFGS needs as many steps
# for each decade of the gradient in either dtype. From 1e-4 the 12 head fits of the FewRel-scale site
# took 22 float64 steps; from 1e-5, 13. Single nodes (Newton: one or two float64 steps) switch at
# FLOAT32_GTOL.
GROUP_SWITCH_GTOL = 1e-5


@dataclass
class GroupData:
    """G groups of m nodes standardised once for any number of fits (`prepare_groups`): the penalty's
    cross-validation and the sensitivity fit the same groups at several penalties, and standardising
    is a large part of a fit's cost at the FewRel scale. xs `[G, N, m]` float64 (constant columns
    zeroed), shift, scale, constant `[G, m]`; the float32 copy and the second moments of each dtype are
    made when first needed and kept."""

    xs: Tensor
    shift: Tensor
    scale: Tensor
    constant: Tensor
    bias: bool
    what: str = "read-out"
    _single: Tensor | None = None
    _cov: dict = field(default_factory=dict)

    def of(self, dtype: torch.dtype) -> Tensor:
        if dtype == DTYPE:
            return self.xs
        if self._single is None:
            self._single = slabs_of(self.xs, torch.float32)
        return self._single

    def cov(self, dtype: torch.dtype) -> Tensor:
        if dtype not in self._cov:
            self._cov[dtype] = second_moments(self.of(dtype))
        return self._cov[dtype]

    def drop_single(self) -> None:
        self._single = None
        self._cov.pop(torch.float32, None)


def prepare_groups(x: Tensor, bias: bool, const_tol: float = DEFAULT_CONST_TOL, what: str = "read-out") -> GroupData:
    """Standardise G groups x `[G, N, m]` (or `[N, m]`, G = 1) for `solve_groups` (see `fit_groups`)."""
    if x.dim() == 2:
        x = x.unsqueeze(0)
    x = x.detach()
    shift, scale, constant = standardise(x, bias, const_tol)
    xs = slabs(x.shape[0], tuple(x.shape[1:]), DTYPE, x.device).copy_(x)  # each group from a 64-byte boundary
    xs.sub_(shift.unsqueeze(1)).div_(scale.unsqueeze(1)).masked_fill_(constant.unsqueeze(1), 0.0)
    _check_finite(what, xs)
    return GroupData(xs, shift, scale, constant, bias, what)


def fit_groups(x: Tensor, y: Tensor, num_classes: int, bias: bool, settings: FitSettings | None = None,
               init: tuple[Tensor, Tensor] | None = None, what: str = "read-out", polish: bool = True) -> GroupFit:
    """Fit G independent read-outs from x `[G, N, m]` (or `[N, m]`, G = 1) to labels y `[N]`.

    Each minimises its own mean cross-entropy plus ``l2/2 ||W_std||^2`` on x's device: preconditioned
    L-BFGS, first in float32 down to a gradient of `GROUP_SWITCH_GTOL`, then in float64 until its largest
    gradient entry is at most ``gtol`` (the report says which did). Returns ``GroupFit(weight [G, K, m],
    bias [G, K], report)`` on raw activations: fields z = x @ weight.T + bias (bias all zero when `bias`
    is False). `init` (weight, bias on raw activations) starts the optimiser there instead of at zero:
    the problem is convex, so only the number of steps changes. `what` names the read-outs in errors.
    polish False stops after the float32 phase, at `FLOAT32_GTOL` (the penalty's cross-validation, which
    only ranks held-out losses, uses that; every read-out that makes a statistic is polished). Fitting the
    same x at several penalties: `prepare_groups` once, then `solve_groups` for each.
    """
    settings = FitSettings() if settings is None else settings
    data = prepare_groups(x, bias, settings.const_tol, what)
    fit = solve_groups(data, y, num_classes, settings, init, polish, keep_single=False)
    if x.dim() == 2:
        return GroupFit(fit.weight[0], fit.bias[0], fit.report)
    return fit


def solve_groups(data: GroupData, y: Tensor, num_classes: int, settings: FitSettings,
                 init: tuple[Tensor, Tensor] | None = None, polish: bool = True, keep_single: bool = True) -> GroupFit:
    """`fit_groups` on prepared groups: weight `[G, K, m]`, bias `[G, K]` on raw activations. keep_single
    False frees the float32 copy after the first phase (a single fit); True keeps it for the next."""
    xs, shift, scale, constant, bias = data.xs, data.shift, data.scale, data.constant, data.bias
    dev = xs.device
    y = y.to(dev)
    g, n, m = xs.shape
    k = num_classes
    nw = k * m
    theta0 = torch.zeros(g, nw + (k if bias else 0), dtype=DTYPE, device=dev)
    if bias:
        prior = torch.bincount(y, minlength=k).to(DTYPE).div(n).clamp_min(0.5 / n)
        theta0[:, nw:] = prior.log()
    if init is not None:
        w0 = init[0].detach().to(device=dev, dtype=DTYPE).reshape(g, k, m)
        b0 = init[1].detach().to(device=dev, dtype=DTYPE).reshape(g, k)
        # the same fields on standardised nodes: w_std = w * scale, b_std = b + w . shift
        theta0[:, :nw] = (w0 * scale.unsqueeze(1)).masked_fill(constant.unsqueeze(1), 0.0).flatten(1)
        if bias:
            theta0[:, nw:] = b0 + (w0 * shift.unsqueeze(1)).sum(2)
    l2 = settings.l2
    xs32 = data.of(torch.float32)
    switch = GROUP_SWITCH_GTOL if polish else FLOAT32_GTOL
    affordable = polish and g * k * m * m * 4 <= CURVATURE_MAX_BYTES
    curvature = CurvaturePreconditioner(g, m, k, bias, l2, dev) if affordable else None
    switched = torch.zeros(g, dtype=torch.bool, device=dev)
    # the penalty rule's unpolished fits, which only rank held-out losses, keep the start's matrix throughout
    first, rep1 = _lbfgs_phase(group_objective(xs32, y, k, bias, l2), theta0.float(), settings.max_iter,
                               max(settings.gtol, switch),
                               group_preconditioner(xs32, k, bias, l2, data.cov(torch.float32)), xs32, curvature,
                               switched)
    del xs32
    if not keep_single:
        data.drop_single()
    if polish:
        left = settings.max_iter - rep1.iterations  # max_iter caps both phases together
        # a read-out that switched in float32 keeps its matrix: rebuilt at the float32 optimum, it took as many
        # float64 steps
        theta, rep2 = _lbfgs_phase(group_objective(xs, y, k, bias, l2), first.to(DTYPE), left, settings.gtol,
                                   group_preconditioner(xs, k, bias, l2, data.cov(DTYPE)), xs, curvature, switched)
        report = FitReport(rep2.converged, rep2.grad_max, rep1.iterations + rep2.iterations, rep2.stalled)
    else:
        theta, report = first.to(DTYPE), rep1
    w_std = theta[:, :nw].view(g, k, m)
    weight = w_std / scale.unsqueeze(1)
    b = theta[:, nw:] if bias else torch.zeros(g, k, dtype=DTYPE, device=dev)
    b = b - (weight * shift.unsqueeze(1)).sum(2)
    _check_finite(data.what, weight)
    return GroupFit(weight, b, report)


def bin_nodes(x: Tensor, y: Tensor, num_classes: int, bins: int | None):
    """Per-node sufficient statistics for 1-node fits, float64: each node's N examples cut at its
    quantiles into `bins` groups of nearly equal count; returns bin centres `[D, B]` (the mean
    activation of the bin) and label counts `[D, B, K]`. bins None (or >= N) keeps every example as
    its own bin."""
    n, d = x.shape
    k = num_classes
    y = y.to(x.device)
    xt = x.T.to(DTYPE, memory_format=torch.contiguous_format, copy=True)  # [D, N], ours to overwrite
    if bins is None or bins >= n:
        counts = torch.nn.functional.one_hot(y, k).to(DTYPE)  # [N, K]
        return xt, counts.unsqueeze(0).expand(d, n, k)
    # Quantile edges from at most 16 examples per bin (a strided subsample keeps it deterministic), then
    # every example is placed by binary search: O(N D log B) instead of sorting all N per node.
    step = max(1, n // (16 * bins))
    sample = torch.sort(xt[:, ::step], dim=1).values
    cut = (torch.arange(1, bins, device=x.device) * sample.shape[1]) // bins
    edges = sample[:, cut].contiguous()  # [D, B-1]
    which = torch.searchsorted(edges, xt, right=True)  # [D, N] bin of each example
    sums = torch.zeros(d, bins, dtype=DTYPE, device=x.device).scatter_add_(1, which, xt)
    counts = torch.zeros(d, bins * k, dtype=DTYPE, device=x.device)
    counts.scatter_add_(1, which.mul_(k).add_(y.unsqueeze(0)), xt.fill_(1.0))  # which and xt reused in place
    del which, xt
    size = counts.view(d, bins, k).sum(2)
    centres = torch.where(size > 0, sums / size.clamp_min(1), torch.zeros_like(sums))
    return centres, counts.view(d, bins, k)


class BinnedNodes(NamedTuple):
    """Standardised binned statistics of D single-node problems (see `binned_nodes`)."""

    xb: Tensor        # [D, B] standardised bin centres (0 for constant nodes)
    weights: Tensor   # [D, B] examples per bin
    counts: Tensor    # [D, B, K] label counts per bin
    shift: Tensor     # [D]
    scale: Tensor     # [D]
    constant: Tensor  # [D] bool
    n: int


def binned_nodes(x: Tensor, y: Tensor, num_classes: int, bins: int | None, const_tol: float,
                 what: str = "node") -> BinnedNodes:
    """Bin every node of x `[N, D]` (`bin_nodes`) and standardise the bin centres (weighted)."""
    centres, counts = bin_nodes(x, y, num_classes, bins)
    weights = counts.sum(2)
    shift, scale, constant = standardise(centres.unsqueeze(2), True, const_tol, weights)
    shift, scale, constant = shift[:, 0], scale[:, 0], constant[:, 0]
    xb = ((centres - shift.unsqueeze(1)) / scale.unsqueeze(1)).masked_fill_(constant.unsqueeze(1), 0.0)
    _check_finite(what, xb)
    return BinnedNodes(xb, weights, counts, shift, scale, constant, x.shape[0])


def node_objectives(data: BinnedNodes, num_classes: int, l2: float):
    """(loss-and-gradient, loss-gradient-Hessian) of the D single-node problems, parameters
    theta = [a (K slopes), c (K intercepts)] per node on standardised activations. The `[D, B, K]`
    intermediates of every evaluation live in two buffers made once (fresh ones each time were mapped
    and page-faulted anew: at the FewRel scale most of a node fit's time), and the statistics of the
    nodes still being fitted are gathered once per change of that set, not at every evaluation."""
    k, n = num_classes, data.n
    xb_all, wt_all, cnt_all = data.xb, data.weights, data.counts
    d_all = xb_all.shape[0]
    fields = torch.empty_like(cnt_all)
    work = torch.empty_like(cnt_all)
    subset: list = [None, None]  # (index, (xb, wt, cnt)) of the last subset of nodes evaluated

    def rows(idx: Tensor):
        if idx.numel() == d_all:
            return xb_all, wt_all, cnt_all
        if subset[0] is None or not torch.equal(subset[0], idx):
            subset[1] = None
            subset[0], subset[1] = idx.clone(), (xb_all[idx], wt_all[idx], cnt_all[idx])
        return subset[1]

    def parts(theta: Tensor, idx: Tensor):
        xb, wt, cnt = rows(idx)
        g = xb.shape[0]
        xb = xb.unsqueeze(2)  # [g, B, 1]
        a, c = theta[:, :k].unsqueeze(1), theta[:, k:].unsqueeze(1)  # [g, 1, K]
        z = torch.mul(xb, a, out=fields[:g]).add_(c)  # [g, B, K]
        zc = torch.mul(cnt, z, out=work[:g]).sum((1, 2))
        lse, p = softmax_parts(z)  # p overwrites z: [g, B, K]
        loss = ((wt * lse.squeeze(2)).sum(1) - zc) / n + 0.5 * l2 * (a * a).sum((1, 2))
        r = torch.mul(p, wt.unsqueeze(2), out=work[:g]).sub_(cnt).div_(n)
        ga = (r * xb).sum(1) + l2 * a[:, 0]
        grad = torch.cat([ga, r.sum(1)], 1)
        return loss, grad, p, xb, wt

    def fun(theta, idx):
        loss, grad, *_ = parts(theta, idx)
        return loss, grad

    def fun_hess(theta, idx):
        loss, grad, p, xb, wt = parts(theta, idx)
        g = theta.shape[0]
        # the Hessian only steers the steps (the gradient decides convergence): float32 is enough
        p32, xb32 = slabs_of(p, torch.float32), xb.float()  # [g, B, K], [g, B, 1]
        b = p32.shape[1]
        wp = p32 * (wt.unsqueeze(2).float() / n)
        # per node [B, 3K]: wp, wp x, wp x^2, multiplied by the node's p in one product read-out by read-out
        # (`slabs`: a batched product rounded a node at some batch positions differently from the node alone)
        w3 = slabs(g, (b, 3, k), torch.float32, theta.device)
        torch.mul(wp, xb32, out=w3[:, :, 1])
        torch.mul(w3[:, :, 1], xb32, out=w3[:, :, 2])
        w3[:, :, 0] = wp
        cross = slabs(g, (3 * k, k), torch.float32, theta.device)
        for j in range(g):
            torch.mm(w3[j].view(b, 3 * k).T, p32[j], out=cross[j])
        blocks = torch.diag_embed(w3.sum(1)) - cross.view(g, 3, k, k)  # [g, 3, K, K]: cc, ac, aa
        # the blocks [[aa, ac], [ca, cc]] written into one [g, 2K, 2K] tensor
        hess = torch.empty(g, 2 * k, 2 * k, dtype=theta.dtype, device=theta.device)
        h_aa, h_ac, h_ca, h_cc = hess[:, :k, :k], hess[:, :k, k:], hess[:, k:, :k], hess[:, k:, k:]
        h_aa.copy_(blocks[:, 2])
        h_ac.copy_(blocks[:, 1])
        h_cc.copy_(blocks[:, 0])
        h_ca.copy_(h_ac.transpose(1, 2))
        h_aa.diagonal(dim1=1, dim2=2).add_(l2)
        # softmax is unchanged when every intercept moves by the same amount: fix that flat direction
        flat = h_cc.diagonal(dim1=1, dim2=2).sum(1).clamp_min(1e-300) / k
        h_cc.add_(flat.view(g, 1, 1) / k)
        return loss, grad, hess

    return fun, fun_hess


def solve_nodes(data: BinnedNodes, num_classes: int, settings: FitSettings,
                init: Tensor | None = None, polish: bool = True) -> tuple[Tensor, FitReport]:
    """Solve the D single-node problems of `data`; theta `[D, 2K]` on standardised activations, float64.
    Newton steps (L-BFGS above `NEWTON_MAX_CLASSES`), first in float32 down to a gradient of
    `FLOAT32_GTOL`, then in float64 down to ``gtol`` (polish False: the float32 phase only)."""
    k = num_classes
    d = data.xb.shape[0]
    dev = data.xb.device
    if init is None:
        prior = data.counts.sum((0, 1)).div(data.weights.sum()).clamp_min(0.5 / data.n)
        init = torch.cat([torch.zeros(d, k, dtype=DTYPE, device=dev), prior.log().expand(d, k)], 1)
    data32 = BinnedNodes(*(t.float() if isinstance(t, Tensor) and t.is_floating_point() else t for t in data))
    phases = [(data32, max(settings.gtol, FLOAT32_GTOL))] + ([(data, settings.gtol)] if polish else [])
    theta, iters, report = init, None, None
    for part, gtol in phases:
        fun, fun_hess = node_objectives(part, k, settings.l2)
        left = settings.max_iter if iters is None else (settings.max_iter - iters).clamp_min(0)  # per node
        start = theta.to(part.xb.dtype)
        if k <= NEWTON_MAX_CLASSES:
            theta, report = newton(fun_hess, fun, start, left, gtol)
        else:
            theta, report = lbfgs(fun, start, left, gtol)
        iters = report.iterations if iters is None else iters + report.iterations
    return theta.to(DTYPE), FitReport(report.converged, report.grad_max, iters, report.stalled)


def node_lines_from(theta: Tensor, data: BinnedNodes, num_classes: int) -> tuple[Tensor, Tensor]:
    """Slopes and intercepts `[D, K]` on raw activations from standardised node parameters."""
    k = num_classes
    slope = theta[:, :k] / data.scale.unsqueeze(1)
    intercept = theta[:, k:] - slope * data.shift.unsqueeze(1)
    return slope, intercept


def fit_node_lines(x: Tensor, y: Tensor, num_classes: int, bins: int | None = 256,
                   settings: FitSettings | None = None, what: str = "node") -> NodeFit:
    """Own read-out of every single node: K lines z_k = slope[n, k] x_n + intercept[n, k] per node.

    x `[N, D]`, y `[N]`; returns ``NodeFit(slope [D, K], intercept [D, K], report)`` on raw
    activations, float64 on x's device. Each node's fit runs on its binned sufficient statistics
    (`bin_nodes`): O(B K) per evaluation instead of O(N K); with B = 128 bins each bin spans 1/128 of
    a node's examples, so replacing an example by its bin's mean activation moves the fitted lines
    by a negligible amount (bins=None is exact). A constant node gets slope 0 and the log prior as
    intercepts.
    """
    settings = FitSettings() if settings is None else settings
    data = binned_nodes(x.detach(), y, num_classes, bins, settings.const_tol, what)
    theta, report = solve_nodes(data, num_classes, settings)
    slope, intercept = node_lines_from(theta, data, num_classes)
    _check_finite(what, slope)
    return NodeFit(slope, intercept, report)
