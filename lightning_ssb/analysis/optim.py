"""Batched minimisers for many independent convex problems, each with its own convergence test.

Every read-out fit of the package is G independent problems of the same size (G heads, G crossover
subsets, D single nodes, one site). They are solved together for speed (one batched evaluation per
step), but each problem keeps its own optimiser state: its own L-BFGS history and step length, its
own Newton step, and its own stopping test. A problem that has converged is frozen and no longer
evaluated, so its result is the same whether it is solved alone or among others.

Everything is torch on the tensors' device (CPU or GPU); the caller chooses the dtype (the fits
use float64). ``fun(theta, index)`` evaluates the problems ``index`` at ``theta`` `[g, P]` and
returns ``(loss [g], grad [g, P])``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Objective = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

_ARMIJO = 1e-4
_MAX_HALVINGS = 40
_FLOOR_ULPS = 4.0  # approximate Wolfe: the loss may rise by this many rounding units
_DELTA, _SIGMA = 0.1, 0.9  # approximate Wolfe's constants (Hager and Zhang's defaults)


@dataclass
class FitReport:
    """How each of G problems ended: converged `[G]` bool (largest gradient entry <= gtol),
    grad_max `[G]` (largest gradient entry at the returned point), iterations `[G]`, and stalled `[G]`
    bool: stopped above gtol because the line search accepted no step (`_backtrack`), not at the
    iteration cap (None: not recorded, read as all False). An unconverged problem that did not stall
    ran out of iterations: raising ``max_iter`` helps it; a stalled one no longer moves at this
    precision, and more iterations would not."""

    converged: Tensor
    grad_max: Tensor
    iterations: Tensor
    stalled: Tensor | None = None

    def stalled_mask(self) -> Tensor:
        return self.stalled if self.stalled is not None else torch.zeros_like(self.converged)

    def cpu(self) -> FitReport:
        return FitReport(self.converged.cpu(), self.grad_max.cpu(), self.iterations.cpu(), self.stalled_mask().cpu())

    @staticmethod
    def cat(reports: list[FitReport]) -> FitReport:
        return FitReport(torch.cat([r.converged for r in reports]), torch.cat([r.grad_max for r in reports]),
                         torch.cat([r.iterations for r in reports]), torch.cat([r.stalled_mask() for r in reports]))

    def summary(self) -> dict[str, float]:
        """``unconverged`` (count), ``stalled`` (of those, the ones the line search stopped; the others ran
        out of iterations) and ``grad_max`` (the largest over the problems)."""
        return {"unconverged": float((~self.converged).sum()),
                "stalled": float((~self.converged & self.stalled_mask()).sum()),
                "grad_max": float(self.grad_max.max()) if self.grad_max.numel() else 0.0}


def unconverged_why(summaries, max_iter: int | None = None) -> str:
    """What to do about unconverged fits, from `FitReport.summary` dicts (a missing ``stalled`` counts as 0):
    those that ran out of iterations want a larger ``analysis.max_iter``; those whose line search stalled
    no longer move at this precision, so more iterations would not help them."""
    summaries = list(summaries)
    stalled = int(sum(c.get("stalled", 0) for c in summaries))
    capped = int(sum(c.get("unconverged", 0) for c in summaries)) - stalled
    cap = "analysis.max_iter" + (f" ({max_iter})" if max_iter is not None else "")
    parts = [f"{capped} at {cap}: raise it"] if capped else []
    if stalled:
        parts.append(f"{stalled} stalled (no step lowered the loss in float64: an ill-conditioned read-out, which "
                     "more iterations would not help; a larger penalty or fewer, better-separated labels would)")
    return "; ".join(parts)


def _report(grad: Tensor, iters: Tensor, caps: Tensor, gtol: float) -> FitReport:
    """The solvers' report. A problem stops at gtol, at its cap, or when the line search accepts no step:
    one above gtol and below its cap stalled."""
    gmax = grad.abs().amax(1)
    above = gmax > gtol
    return FitReport(~above, gmax, iters, above & (iters < caps))


def lbfgs(fun: Objective, theta0: Tensor, max_iter: int | Tensor, gtol: float, history: int = 10,
          precond: Callable[[Tensor, Tensor], Tensor] | None = None) -> tuple[Tensor, FitReport]:
    """Minimise G smooth convex problems from theta0 `[G, P]` by L-BFGS with backtracking (`_backtrack`).

    Each problem has its own curvature pairs (a pair with s.y <= 0 is skipped, keeping the
    approximation positive definite), its own step length and its own stop: the largest entry of its
    gradient <= gtol (converged), ``max_iter`` steps, or no step the line search accepts (stalled; see
    `_backtrack`).
    ``precond(q, index)`` applies a fixed positive definite approximation of the inverse Hessian to
    q `[g, P]` (the L-BFGS initial matrix, scaled by s.y / y.My); without it the initial matrix is
    the usual scaled identity. ``max_iter`` may be a `[G]` tensor: a cap per problem."""
    theta = theta0.clone()
    g_all, p = theta.shape
    dev, dt = theta.device, theta.dtype
    caps = torch.as_tensor(max_iter, device=dev).expand(g_all)
    f, grad = fun(theta, torch.arange(g_all, device=dev))
    s_hist = torch.zeros(g_all, history, p, device=dev, dtype=dt)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(g_all, history, device=dev, dtype=dt)
    gamma = torch.zeros(g_all, device=dev, dtype=dt)  # 0: no curvature pair yet
    iters = torch.zeros(g_all, dtype=torch.long, device=dev)
    active = (grad.abs().amax(1) > gtol) & (caps > 0)
    apply = precond if precond is not None else (lambda q, idx: q)
    for it in range(int(caps.max()) if g_all else 0):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        full = idx.numel() == g_all
        g = grad if full else grad[idx]
        s_h, y_h, r_h = (s_hist, y_hist, rho) if full else (s_hist[idx], y_hist[idx], rho[idx])
        # two-loop recursion, newest pair first; empty slots have rho = 0 and change nothing
        order = [(it - 1 - j) % history for j in range(min(it, history))]
        q = g.clone()
        alphas = []
        for j in order:
            a = r_h[:, j] * (s_h[:, j] * q).sum(1)
            alphas.append(a)
            q -= a.unsqueeze(1) * y_h[:, j]
        gam = gamma if full else gamma[idx]
        if precond is None:  # first step: at most unit length
            gam = torch.where(gam == 0, 1.0 / g.abs().amax(1).clamp_min(1.0), gam)
        else:
            gam = torch.where(gam == 0, torch.ones_like(gam), gam)
        q = apply(q, idx) * gam.unsqueeze(1)
        for j, a in zip(reversed(order), reversed(alphas), strict=True):
            b = r_h[:, j] * (y_h[:, j] * q).sum(1)
            q += (a - b).unsqueeze(1) * s_h[:, j]
        d = q.neg_()
        slope = (g * d).sum(1)
        bad = slope >= 0  # numerical trouble: restart that problem from its gradient
        if bad.any():
            rho[idx[bad]] = 0
            gamma[idx[bad]] = 0
            d[bad] = -g[bad] / g[bad].abs().amax(1, keepdim=True).clamp_min(1.0)
            slope = (g * d).sum(1)
        new_theta, new_f, new_g, ok = _backtrack(fun, theta[idx], f[idx], slope, d, idx)
        s = new_theta - theta[idx]
        yv = new_g - g
        sy = (s * yv).sum(1)
        keep = ok & (sy > 1e-12 * (s.norm(dim=1) * yv.norm(dim=1)).clamp_min(1e-300))
        slot = it % history
        s_hist[idx, slot] = torch.where(keep.unsqueeze(1), s, torch.zeros_like(s))
        y_hist[idx, slot] = torch.where(keep.unsqueeze(1), yv, torch.zeros_like(yv))
        rho[idx, slot] = torch.where(keep, 1.0 / torch.where(keep, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        ymy = (yv * apply(yv, idx)).sum(1).clamp_min(1e-300)
        gamma[idx] = torch.where(keep, sy / ymy, gamma[idx])
        theta[idx[ok]], f[idx[ok]], grad[idx[ok]] = new_theta[ok], new_f[ok], new_g[ok]
        iters[idx] += 1
        done = (grad[idx].abs().amax(1) <= gtol) | ~ok | (iters[idx] >= caps[idx])
        active[idx[done]] = False
    return theta, _report(grad, iters, caps, gtol)


def _backtrack(fun: Objective, theta: Tensor, f: Tensor, slope: Tensor, d: Tensor, idx: Tensor):
    """Per-problem backtracking from step 1: (theta, loss, grad, accepted `[g]` bool).

    A step is taken when it lowers the loss by Armijo's rule, or, where the loss no longer falls
    visibly in this dtype, when it meets the approximate Wolfe conditions (Hager and Zhang, 2005): the
    loss at most `_FLOOR_ULPS` rounding units above, and the slope along the direction at the step
    within [sigma, 2 delta - 1] times the slope at 0. Near the optimum the Armijo bound rounds to the loss
    itself, so Armijo alone takes a step that leaves the loss unchanged however short it is: a problem
    then crept on by ever shorter steps, each after dozens of halvings, up to its iteration cap (test_fit
    has three such nodes). The slope test takes the step that the
    curvature model predicts (the gradient is computed more precisely than the loss) and refuses one
    that does nothing."""
    g = theta.shape[0]
    step = torch.ones(g, device=theta.device, dtype=theta.dtype)
    out_theta, out_f = theta.clone(), f.clone()
    out_g = torch.zeros_like(theta)
    ok = torch.zeros(g, dtype=torch.bool, device=theta.device)
    todo = torch.arange(g, device=theta.device)
    rounding = _FLOOR_ULPS * torch.finfo(theta.dtype).eps * f.abs()
    for _ in range(_MAX_HALVINGS):
        trial = theta[todo] + step[todo].unsqueeze(1) * d[todo]
        tf, tg = fun(trial, idx[todo])
        f0, s0 = f[todo], slope[todo]
        armijo = (tf <= f0 + _ARMIJO * step[todo] * s0) & (tf < f0)
        along = (tg * d[todo]).sum(1)  # the slope at the step
        wolfe = (tf <= f0 + rounding[todo]) & (along >= _SIGMA * s0) & (along <= (2 * _DELTA - 1) * s0)
        good = torch.isfinite(tf) & (armijo | wolfe)
        done = todo[good]
        out_theta[done], out_f[done], out_g[done] = trial[good], tf[good], tg[good]
        ok[done] = True
        todo = todo[~good]
        if todo.numel() == 0:
            break
        step[todo] *= 0.5
    return out_theta, out_f, out_g, ok


# Every problem's matrix and right-hand side in a Newton step start on a 64-byte boundary: a batched solve
# rounded the problems at odd batch positions differently from the same problem alone (in float32, for
# matrices of 50 and 130 rows, on this project's CPU), so that a node's Newton path moved with the nodes
# beside it (docs/method.md 3: a unit's read-out does not depend on the others fitted beside it).
ALIGN_BYTES = 64


def _spd_solve(h: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """(d, info) with h d = rhs for each problem (`[g, P, P]` symmetric positive definite, `[g, P]`) by Cholesky;
    info != 0 where the factorisation failed. The matrices are padded with an identity block to P' rows, P'
    the next multiple of 64 bytes' worth of entries, so that each problem's matrix and right-hand side start on a
    64-byte boundary in every batch (the padding's unknowns are 0 and leave the others' equations alone)."""
    g, p = rhs.shape
    per = max(1, ALIGN_BYTES // h.element_size())
    pp = -(-p // per) * per
    if pp != p:
        padded = h.new_zeros(g, pp, pp)
        padded[:, :p, :p] = h
        padded[:, p:, p:].diagonal(dim1=1, dim2=2).fill_(1.0)
        h = padded
    b = rhs.new_zeros(g, pp, 1)
    b[:, :p, 0] = rhs
    chol, info = torch.linalg.cholesky_ex(h)
    return torch.cholesky_solve(b, chol)[:, :p, 0], info


def newton(fun_hess: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]], fun: Objective, theta0: Tensor,
           max_iter: int | Tensor, gtol: float) -> tuple[Tensor, FitReport]:
    """Minimise G small strictly convex problems by damped Newton steps (batched Cholesky solves).

    ``fun_hess(theta, index)`` returns (loss [g], grad [g, P], hessian [g, P, P]); ``fun`` is the
    cheaper loss-and-gradient used by the line search. Each problem stops on its own: largest
    gradient entry <= gtol, ``max_iter`` steps (a `[G]` tensor: a cap per problem), or no step the line
    search accepts (`_backtrack`)."""
    theta = theta0.clone()
    g_all, p = theta.shape
    dev, dt = theta.device, theta.dtype
    caps = torch.as_tensor(max_iter, device=dev).expand(g_all)
    iters = torch.zeros(g_all, dtype=torch.long, device=dev)
    active = torch.ones(g_all, dtype=torch.bool, device=dev)
    if g_all == 0:
        return theta, FitReport(active, torch.zeros(0, device=dev, dtype=dt), iters, ~active)
    # the loss and gradient at each problem's point: from the start, then from the line search's accepted
    # step, so that a Hessian (the dear part: [g, P, P]) is built only for a problem that takes a step
    f, grad = fun(theta, torch.arange(g_all, device=dev))
    eye = torch.eye(p, device=dev, dtype=dt)
    while True:
        idx = active.nonzero().flatten()
        g = grad[idx]
        run = (g.abs().amax(1) > gtol) & (iters[idx] < caps[idx])
        active[idx[~run]] = False  # converged, or at its cap
        if not run.any():
            break
        idx, g = idx[run], g[run]
        h = fun_hess(theta[idx], idx)[2]
        # a tiny ridge, relative to the Hessian's scale, keeps the factorisation defined
        ridge = 1e-12 * h.diagonal(dim1=1, dim2=2).abs().amax(1).clamp_min(1e-300)
        d, info = _spd_solve(h + ridge.view(-1, 1, 1) * eye, g.neg())
        failed = info != 0
        if failed.any():  # not positive definite numerically: a scaled gradient step for that problem
            d[failed] = -g[failed] / g[failed].abs().amax(1, keepdim=True).clamp_min(1.0)
        d = torch.where(torch.isfinite(d), d, -g)
        slope = (g * d).sum(1)
        new_theta, new_f, new_g, ok = _backtrack(fun, theta[idx], f[idx], slope, d, idx)
        theta[idx[ok]], f[idx[ok]], grad[idx[ok]] = new_theta[ok], new_f[ok], new_g[ok]
        iters[idx] += 1
        active[idx[~ok]] = False  # no step the line search accepts: stalled
    return theta, _report(grad, iters, caps, gtol)
