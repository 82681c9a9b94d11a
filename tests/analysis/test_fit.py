"""Read-out fits (fit.py, optim.py): float64, each read-out at its own optimum with its own convergence
test, checked against an independent solver; scale-free; constant nodes; the convergence record."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from lightning_ssb.analysis import FitSettings, fit_groups, fit_node_lines
from lightning_ssb.analysis.fit import (
    CPU_BLOCK_ROWS,
    CurvaturePreconditioner,
    bin_nodes,
    block_rows,
    curvature_after,
    group_objective,
    prepare_groups,
    solve_groups,
    standardise,
)
from lightning_ssb.analysis.optim import lbfgs, newton, unconverged_why


def data(n=600, d=5, k=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = (torch.randn(k, d, generator=gen)[y] + torch.randn(n, d, generator=gen)) * torch.logspace(-2, 2, d) + 4.0
    return x.double(), y


def penalised_grad(x, y, weight, bias, l2, centre):
    """Gradient of the objective fit.py minimises, recomputed with autograd from the returned raw
    read-out: standardised weights w * scale, fields on standardised x (centred when there is a bias)."""
    mean = x.mean(0)
    scale = x.std(0, unbiased=False) if centre else (x * x).mean(0).sqrt()
    shift = mean if centre else torch.zeros_like(mean)
    w_std = (weight * scale).clone().requires_grad_(True)
    b_std = (bias + weight @ shift).clone().requires_grad_(True)
    xs = (x - shift) / scale
    loss = F.cross_entropy(xs @ w_std.T + b_std, y) + 0.5 * l2 * (w_std ** 2).sum()
    return torch.autograd.grad(loss, [w_std, b_std])


def scipy_optimum(x, y, k, l2, bias):
    """The same penalised problem solved independently: numpy objective, scipy's L-BFGS-B to 1e-12."""
    x, y = x.numpy(), y.numpy()
    mean, std = x.mean(0), x.std(0)
    shift = mean if bias else np.zeros_like(mean)
    scale = std if bias else np.sqrt((x * x).mean(0))
    xs = (x - shift) / scale
    n, m = xs.shape
    onehot = np.eye(k)[y]

    def f(theta):
        w = theta[:k * m].reshape(k, m)
        z = xs @ w.T + (theta[k * m:] if bias else 0.0)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -(onehot * np.log(p)).sum() / n + 0.5 * l2 * (w * w).sum()
        g = (p - onehot) / n
        grad = np.concatenate([(g.T @ xs + l2 * w).ravel()] + ([g.sum(0)] if bias else []))
        return loss, grad

    res = minimize(f, np.zeros(k * m + (k if bias else 0)), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 20000, "maxcor": 30})
    w_std = res.x[:k * m].reshape(k, m)
    weight = w_std / scale
    b = (res.x[k * m:] if bias else np.zeros(k)) - weight @ shift
    return torch.from_numpy(weight), torch.from_numpy(b)


@pytest.mark.parametrize("bias", [True, False])
def test_groups_reach_the_float64_optimum_of_an_independent_solver(bias):
    x, y = data()
    groups = torch.stack([x[:, :3], x[:, 2:]])  # two groups of 3 nodes sharing one node
    for l2 in (1e-2, 0.384):  # a strong penalty too: its optimum is flat, a float32 stop missed it
        fit = fit_groups(groups, y, 4, bias, FitSettings(l2=l2, gtol=1e-9))
        assert fit.weight.dtype == torch.float64 and fit.weight.shape == (2, 4, 3) and fit.bias.shape == (2, 4)
        assert fit.report.converged.all() and (fit.report.grad_max <= 1e-9).all()
        if not bias:
            assert torch.all(fit.bias == 0)
        for g in range(2):
            gw, gb = penalised_grad(groups[g], y, fit.weight[g], fit.bias[g], l2, bias)
            assert gw.abs().max() < 1e-8 and (not bias or gb.abs().max() < 1e-8)
            ref_w, ref_b = scipy_optimum(groups[g], y, 4, l2, bias)
            fields, ref = groups[g] @ fit.weight[g].T + fit.bias[g], groups[g] @ ref_w.T + ref_b
            # the fields up to the constant softmax ignores
            assert torch.allclose(fields - fields.mean(1, keepdim=True), ref - ref.mean(1, keepdim=True), atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_the_objective_in_row_blocks_equals_autograd_over_all_rows(bias):
    """group_objective sums its loss and gradient over blocks of rows (float64 on a CPU: 512); every block size,
    one that does not divide N, and a subset of the read-outs give autograd's values over all rows at once."""
    gen = torch.Generator().manual_seed(3)
    g, n, m, k, l2 = 3, 1201, 5, 7, 0.03
    xs = torch.randn(g, n, m, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    theta = torch.randn(g, k * m + (k if bias else 0), generator=gen, dtype=torch.float64)
    assert block_rows(n, torch.float64, "cpu") == CPU_BLOCK_ROWS < n  # the default path is in blocks
    assert block_rows(n, torch.float32, "cpu") == n

    def autograd(h):
        w = theta[h, : k * m].view(k, m).clone().requires_grad_(True)
        b = theta[h, k * m:].clone().requires_grad_(True) if bias else torch.zeros(k, dtype=torch.float64)
        loss = F.cross_entropy(xs[h] @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        grads = torch.autograd.grad(loss, [w, b] if bias else [w])
        return loss.detach(), torch.cat([t.flatten() for t in grads])

    for rows in (None, 1, 100, 512, n, 5000):
        objective = group_objective(xs, y, k, bias, l2, rows=rows)
        for idx in (torch.arange(g), torch.tensor([2, 0])):
            loss, grad = objective(theta[idx], idx)
            for j, h in enumerate(idx.tolist()):
                ref_loss, ref_grad = autograd(h)
                assert torch.allclose(loss[j], ref_loss, rtol=1e-13, atol=0)
                assert torch.allclose(grad[j], ref_grad, rtol=1e-11, atol=1e-15)


def test_a_fit_in_row_blocks_is_identical_on_one_and_two_threads():
    x, y = data(n=1500, d=8, seed=5)
    heads = x.view(len(x), 4, 2).transpose(0, 1).contiguous()
    threads = torch.get_num_threads()
    try:
        fits = []
        for t in (1, 2):
            torch.set_num_threads(t)
            fits.append(fit_groups(heads, y, 4, True, FitSettings(l2=1e-3)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fits[0].weight, fits[1].weight) and torch.equal(fits[0].bias, fits[1].bias)


def test_group_fits_switch_to_float64_at_1e5_and_unpolished_fits_stop_at_1e4(monkeypatch):
    """The float32 phase of a polished group fit runs to GROUP_SWITCH_GTOL (1e-5), of an unpolished one (the
    penalty rule) to FLOAT32_GTOL (1e-4); the float64 phase takes it to gtol either way."""
    import lightning_ssb.analysis.fit as fit_module

    calls = []
    real = fit_module.lbfgs

    def recording(fun, theta0, max_iter, gtol, **kwargs):
        theta, report = real(fun, theta0, max_iter, gtol, **kwargs)
        calls.append((theta0.dtype, gtol, report))
        return theta, report

    monkeypatch.setattr(fit_module, "lbfgs", recording)
    x, y = data(n=900, d=6, seed=2)
    heads = x.view(len(x), 2, 3).transpose(0, 1).contiguous()
    fit = fit_groups(heads, y, 4, True, FitSettings(l2=1e-3))
    assert [(dt, gtol) for dt, gtol, _ in calls] == [(torch.float32, 1e-5), (torch.float64, 1e-6)]
    assert (calls[0][2].grad_max <= 1e-5).all() and fit.report.converged.all()
    calls.clear()
    fit_groups(heads, y, 4, True, FitSettings(l2=1e-3), polish=False)
    assert [(dt, gtol) for dt, gtol, _ in calls] == [(torch.float32, 1e-4)]


def test_a_units_fit_is_identical_alone_and_among_others():
    x, y = data(d=8, seed=4)
    heads = x.view(len(x), 4, 2).transpose(0, 1).contiguous()  # 4 read-outs of 2 nodes
    together = fit_groups(heads, y, 4, True, FitSettings(l2=1e-3))
    for h in range(4):
        alone = fit_groups(heads[h], y, 4, True, FitSettings(l2=1e-3))
        assert torch.equal(alone.weight, together.weight[h]) and torch.equal(alone.bias, together.bias[h])
        assert alone.report.iterations.item() == together.report.iterations[h].item()
    # single nodes: the first three nodes with or without the other five, and one replaced by a constant
    lines = fit_node_lines(x, y, 4, bins=64, settings=FitSettings(l2=1e-3))
    few = fit_node_lines(x[:, :3], y, 4, bins=64, settings=FitSettings(l2=1e-3))
    assert torch.equal(lines.slope[:3], few.slope) and torch.equal(lines.intercept[:3], few.intercept)
    flat = x.clone()
    flat[:, 5] = 2.0
    other = fit_node_lines(flat, y, 4, bins=64, settings=FitSettings(l2=1e-3))
    keep = [0, 1, 2, 3, 4, 6, 7]
    assert torch.equal(other.slope[keep], lines.slope[keep]) and torch.all(other.slope[5] == 0)


def test_scale_of_a_node_is_folded_back_and_constant_nodes_get_zero_weight():
    x, y = data(seed=1)
    w, b, _ = fit_groups(x, y, 4, True, FitSettings(gtol=1e-10))
    scaled = x.clone()
    scaled[:, 1] *= 1e-3
    w2, b2, _ = fit_groups(scaled, y, 4, True, FitSettings(gtol=1e-10))
    assert torch.allclose(w2[:, 1] * 1e-3, w[:, 1], rtol=1e-6)          # same fields, raw weight x 1000
    # A near-constant node (spread 1e-7 of its scale) gets weight exactly 0 and leaves the rest unchanged.
    gen = torch.Generator().manual_seed(5)
    extra = torch.cat([x, 3.0 + 1e-7 * torch.randn(len(x), 1, generator=gen, dtype=x.dtype)], 1)
    for bias in (True, False):
        w3, b3, _ = fit_groups(extra, y, 4, bias, FitSettings())
        ref_w, ref_b, _ = fit_groups(x, y, 4, bias, FitSettings())
        assert torch.all(w3[:, -1] == 0)
        assert torch.allclose(w3[:, :-1], ref_w) and torch.allclose(b3, ref_b)


@pytest.mark.parametrize("factor", [1e20, 1e-30])
def test_fits_are_scale_free_from_tiny_to_huge_activations(factor):
    """x * 1e20 or x * 1e-30 (float32 overflows or underflows their squares) gives the same fields."""
    x, y = data(seed=6)
    x32 = x.float()
    big = x32 * factor
    tight = FitSettings(l2=1e-2, gtol=1e-11)  # both at the optimum, not merely within 1e-6 of it
    ref_w, ref_b, _ = fit_groups(x32, y, 4, True, tight)
    w, b, rep = fit_groups(big, y, 4, True, tight)
    assert torch.isfinite(w).all() and rep.converged.all()
    fields, ref_fields = big.double() @ w.T + b, x32.double() @ ref_w.T + ref_b
    # the same predictions and probabilities (x * factor rounds to float32 again: 1e-7 relative)
    assert torch.equal(fields.argmax(1), ref_fields.argmax(1))
    assert torch.allclose(fields.softmax(1), ref_fields.softmax(1), atol=1e-5)
    lines = fit_node_lines(big, y, 4, bins=32, settings=tight)
    ref = fit_node_lines(x32, y, 4, bins=32, settings=tight)
    assert torch.isfinite(lines.slope).all()
    assert torch.allclose(lines.slope * factor, ref.slope, rtol=1e-4, atol=1e-6)
    assert torch.allclose(lines.intercept, ref.intercept, rtol=1e-4, atol=1e-6)


def test_standardise_keeps_a_small_spread_on_a_large_offset():
    """E[x^2] - E[x]^2 in float32 turned a node at offset 3,000 with std 0.563 into std 1.0."""
    gen = torch.Generator().manual_seed(0)
    x = (3000.0 + 0.563 * torch.randn(5000, 1, generator=gen)).float()
    shift, scale, constant = standardise(x, True, 1e-4)
    exact = x.double().std(0, unbiased=False)
    assert not constant.any() and torch.allclose(scale, exact, rtol=1e-9)
    assert abs(scale.item() - 0.563) < 0.02


@pytest.mark.parametrize("centre", [True, False])
def test_standardise_against_numpy(centre):
    """shift, scale and the constant mask of `[G, N, m]` groups against numpy's float64 mean and std
    (or root mean square without centring), computed column by column; the input is left unchanged."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 500, 4, generator=gen) * torch.tensor([1e-3, 1.0, 50.0, 1.0]) + torch.tensor([0., 5., -7., 0.])
    x[1, :, 3] = 2.5                                      # a constant node
    before = x.clone()
    shift, scale, constant = standardise(x, centre, 1e-4)
    assert torch.equal(x, before)
    a = x.double().numpy()
    for g in range(3):
        for j in range(4):
            col = a[g, :, j]
            want = col.std() if centre else np.sqrt((col * col).mean())
            if g == 1 and j == 3:
                assert constant[g, j] and scale[g, j] == 1.0
                continue
            assert not constant[g, j]
            assert scale[g, j].item() == pytest.approx(want, rel=1e-12)
            assert shift[g, j].item() == pytest.approx(col.mean() if centre else 0.0, rel=1e-12, abs=1e-15)


def test_groups_prepared_once_fit_exactly_like_fresh_fits_at_every_penalty():
    """`prepare_groups` + `solve_groups` at several penalties (warm-started along the path, as the
    cross-validation and the sensitivity use them) give bit for bit what `fit_groups` gives from
    scratch with the same start; a transposed (non-contiguous) view of the groups gives the same."""
    x, y = data(n=500, d=6, seed=4)
    groups = x.view(500, 2, 3).transpose(0, 1)           # [2, N, 3], not contiguous
    prepared = prepare_groups(groups, True)
    init = None
    for l2 in (1.0, 1e-2, 1e-4):
        settings = FitSettings(l2=l2)
        shared = solve_groups(prepared, y, 4, settings, init=init)
        fresh = fit_groups(groups.contiguous(), y, 4, True, settings, init=init)
        assert torch.equal(shared.weight, fresh.weight) and torch.equal(shared.bias, fresh.bias)
        assert torch.equal(shared.report.iterations, fresh.report.iterations)
        assert shared.report.converged.all()
        init = (shared.weight, shared.bias)


def test_fits_leave_their_inputs_unchanged():
    """The fits overwrite their own float64 copies in place; a float64 input (one node, whose transpose is
    already contiguous, or groups) must come back untouched."""
    x, y = data(n=300, d=4, seed=6)
    one = x[:, :1].contiguous()
    cases = [(one, lambda t: fit_node_lines(t, y, 4, bins=16)), (x, lambda t: fit_node_lines(t, y, 4)),
             (x, lambda t: fit_groups(t, y, 4, True)), (x.T.unsqueeze(2), lambda t: fit_groups(t, y, 4, False))]
    for inp, fit in cases:
        before = inp.clone()
        fit(inp)
        assert torch.equal(inp, before)


def test_unconverged_fits_are_reported_per_unit():
    x, y = data(seed=7)
    fit = fit_groups(torch.stack([x[:, :2], x[:, 2:4]]), y, 4, True, FitSettings(l2=1e-4, max_iter=3))
    assert not fit.report.converged.any() and (fit.report.iterations == 3).all()
    assert (fit.report.grad_max > 1e-6).all()
    # both ran out of iterations (3 steps), none stalled: raising max_iter is what helps them
    assert fit.report.summary() == {"unconverged": 2.0, "stalled": 0.0, "grad_max": float(fit.report.grad_max.max())}
    assert unconverged_why([fit.report.summary()], 3) == "2 at analysis.max_iter (3): raise it"
    done = fit_groups(x[:, :2], y, 4, True, FitSettings(l2=1e-4))
    assert done.report.converged.all() and done.report.grad_max.item() <= 1e-6


def test_node_lines_exact_equal_one_node_groups_and_bins_barely_move_them():
    x, y = data(n=2000, seed=3)
    settings = FitSettings(l2=1e-3, gtol=1e-10)
    slope, intercept, rep = fit_node_lines(x, y, 4, bins=None, settings=settings)
    assert rep.converged.all()
    for n in range(x.shape[1]):
        gw, gb = penalised_grad(x[:, n:n + 1], y, slope[n].unsqueeze(1), intercept[n], settings.l2, True)
        assert gw.abs().max() < 1e-8 and gb.abs().max() < 1e-8
        ref_w, ref_b = scipy_optimum(x[:, n:n + 1], y, 4, settings.l2, True)
        assert torch.allclose(slope[n], ref_w[:, 0], rtol=1e-5)
    s2, i2, _ = fit_node_lines(x, y, 4, bins=128, settings=settings)

    def pred(s, i):
        return (x.T.unsqueeze(2) * s.unsqueeze(1) + i.unsqueeze(1)).argmax(2)

    assert (pred(slope, intercept) == pred(s2, i2)).double().mean() > 0.99


def test_binned_statistics_by_hand():
    x = torch.tensor([[3.0], [1.0], [2.0], [4.0]])
    y = torch.tensor([0, 1, 1, 0])
    centres, counts = bin_nodes(x, y, 2, bins=2)
    assert centres.tolist() == [[1.5, 3.5]]                           # sorted: (1, 2) and (3, 4)
    assert counts.tolist() == [[[0.0, 2.0], [2.0, 0.0]]]
    whole, ones = bin_nodes(x, y, 2, bins=None)
    assert whole.tolist() == [[3.0, 1.0, 2.0, 4.0]] and ones[0].argmax(1).tolist() == y.tolist()


def test_settings_are_checked():
    for bad in (dict(l2=-1.0), dict(max_iter=0), dict(const_tol=1.5), dict(gtol=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FitSettings(**bad)


def test_node_fits_at_float32s_rounding_floor_converge_in_a_few_steps():
    """Three of 2,048 noise nodes (50 labels, the MLM probe's size) whose float32 phase reaches a Newton
    step that lowers the loss by less than float32's rounding of it: Armijo alone then took ever shorter
    steps that left the loss unchanged, for 172 iterations at one node and for all 1,000 at the other
    two (reported unconverged at a gradient of 1e-4). Checked against the gradient of the binned
    objective, rebuilt here by hand."""
    gen = torch.Generator().manual_seed(0)
    n, k, l2 = 813, 50, 0.1
    y = torch.multinomial(1.0 / torch.arange(1, k + 1) ** 0.7, n, replacement=True, generator=gen)
    x = torch.randn(n, 2048, dtype=torch.float64, generator=gen)[:, [65, 1052, 1435]]
    fit = fit_node_lines(x, y, k, bins=128, settings=FitSettings(l2=l2))
    assert fit.report.converged.all() and (fit.report.iterations <= 10).all(), fit.report
    centres, counts = bin_nodes(x, y, k, bins=128)
    for node in range(3):
        c, cnt = centres[node], counts[node]
        size = cnt.sum(1)
        shift = (size * c).sum() / n
        scale = ((size * (c - shift) ** 2).sum() / n).sqrt()
        a = (fit.slope[node] * scale).clone().requires_grad_(True)
        b = (fit.intercept[node] + fit.slope[node] * shift).clone().requires_grad_(True)
        z = ((c - shift) / scale).unsqueeze(1) * a + b  # [bins, K] fields on standardised centres
        loss = (size * torch.logsumexp(z, 1) - (cnt * z).sum(1)).sum() / n + 0.5 * l2 * (a * a).sum()
        ga, gb = torch.autograd.grad(loss, [a, b])
        assert max(ga.abs().max(), gb.abs().max()) <= 1e-6 * 1.01


def test_newton_builds_hessians_only_for_problems_that_take_a_step():
    """Quadratics 0.5 (t - t*)' A (t - t*): one starts at its optimum, one beside it. Newton solves the
    second in one step (its optimum by hand), and the first, converged from the start, never has its
    Hessian built (the dear part of a node fit, [g, 2K, 2K])."""
    from lightning_ssb.analysis.optim import newton

    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, -2.0], [3.0, 4.0]], dtype=torch.float64)
    built = []

    def fun(theta, idx):
        r = theta - target[idx]
        return 0.5 * ((r @ a) * r).sum(1), r @ a

    def fun_hess(theta, idx):
        built.extend(idx.tolist())
        loss, grad = fun(theta, idx)
        return loss, grad, a.expand(len(idx), 2, 2)

    start = torch.stack([target[0], target[1] + torch.tensor([0.5, -1.0], dtype=torch.float64)])
    theta, rep = newton(fun_hess, fun, start, 10, 1e-10)
    assert rep.converged.all() and rep.iterations.tolist() == [0, 1]
    assert torch.allclose(theta, target, atol=1e-12) and built == [1]


def _uphill(theta, idx):
    """f = |theta|^2 with the gradient's sign flipped: every search direction climbs, so no step is ever
    accepted (a stand-in for a fit that can no longer lower its loss at its precision)."""
    return (theta ** 2).sum(1), -2 * theta


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_a_fit_whose_line_search_accepts_nothing_is_reported_stalled_not_at_its_cap(solver):
    theta0 = torch.tensor([[1.0, -2.0], [0.0, 0.0], [3.0, 0.5]], dtype=torch.float64)  # the middle one: converged
    if solver == "lbfgs":
        _, report = lbfgs(_uphill, theta0, max_iter=50, gtol=1e-6)
    else:
        hess = torch.eye(2, dtype=torch.float64).expand(3, 2, 2) * 2
        _, report = newton(lambda t, i: (*_uphill(t, i), hess[: t.shape[0]]), _uphill, theta0, max_iter=50, gtol=1e-6)
    assert report.converged.tolist() == [False, True, False]
    assert report.stalled.tolist() == [True, False, True]
    assert report.iterations.tolist()[0] == 1 and report.iterations.tolist()[2] == 1  # far from the cap of 50
    summary = report.summary()
    assert summary == {"unconverged": 2.0, "stalled": 2.0, "grad_max": 2 * 3.0}
    why = unconverged_why([summary, {"unconverged": 3.0, "grad_max": 1e-3}], 50)  # an old record: no "stalled"
    assert why.startswith("3 at analysis.max_iter (50): raise it; 2 stalled (")


def _hessian(xs, y, k, bias, l2, theta):
    """The full Hessian of group_objective's loss for each read-out, by autograd over all rows `[G, P, P]`."""
    out = []
    for h in range(xs.shape[0]):
        def loss(t, h=h):
            w = t[: k * xs.shape[2]].view(k, -1)
            z = xs[h] @ w.T + (t[k * xs.shape[2]:] if bias else 0.0)
            return F.cross_entropy(z, y) + 0.5 * l2 * (w * w).sum()
        out.append(torch.autograd.functional.hessian(loss, theta[h]))
    return torch.stack(out)


@pytest.mark.parametrize("bias", [True, False])
def test_the_curvature_matrix_inverts_the_hessians_class_blocks(bias):
    """curvature_preconditioner at theta: for each class the inverse of the Hessian's diagonal block of that
    class's weights (autograd over all rows, the penalty included), for each bias 1 / (its second derivative +
    l2); what it returns for a vector is those inverses applied to its pieces, for every read-out or a subset."""
    gen = torch.Generator().manual_seed(7)
    g, n, m, k, l2 = 3, 400, 4, 5, 1e-3
    xs = torch.randn(g, n, m, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    theta = 0.3 * torch.randn(g, k * m + (k if bias else 0), generator=gen, dtype=torch.float64)
    hess = _hessian(xs, y, k, bias, l2, theta)
    p = torch.softmax(torch.einsum("gnm,gkm->gnk", xs, theta[:, : k * m].view(g, k, m))
                      + (theta[:, k * m:].unsqueeze(1) if bias else 0.0), -1)
    assert (p * (1 - p)).min() > l2 / 100  # no row is left out here (the next test leaves some out)
    apply = CurvaturePreconditioner(g, m, k, bias, l2, "cpu")
    apply.build(xs, theta[[2, 0, 1]], torch.tensor([2, 0, 1]))  # each read-out's blocks at its own point
    q = torch.randn(g, theta.shape[1], generator=gen, dtype=torch.float64)
    out = apply(q, torch.arange(g))
    assert out.dtype == torch.float64
    for h in range(g):
        for c in range(k):
            sl = slice(c * m, (c + 1) * m)
            want = torch.linalg.solve(hess[h][sl, sl], q[h, sl])
            assert torch.allclose(out[h, sl], want, rtol=1e-4, atol=1e-6)
            if bias:
                b = k * m + c
                assert torch.allclose(out[h, b], q[h, b] / (hess[h][b, b] + l2), rtol=1e-4)
    sub = torch.tensor([2, 0])
    assert torch.allclose(apply(q[sub], sub), out[sub], rtol=1e-6, atol=1e-9)


def test_the_curvature_matrix_leaves_out_rows_below_a_hundredth_of_the_penalty():
    """Rows whose softmax curvature p (1 - p) for a class is below l2 / 100 add nothing to that class's block:
    the block is sum over the other rows of p (1 - p) x x^T / N, plus l2 (written out row by row here)."""
    gen = torch.Generator().manual_seed(8)
    n, m, k, l2 = 300, 3, 4, 1e-2
    xs = torch.randn(1, n, m, generator=gen, dtype=torch.float64)
    theta = 4.0 * torch.randn(1, k * m, generator=gen, dtype=torch.float64)  # confident: many rows below the cut
    z = xs[0] @ theta[0].view(k, m).T
    p = torch.softmax(z, -1)
    v = p * (1 - p)
    assert 0.2 < (v < l2 / 100).double().mean() < 0.8
    apply = CurvaturePreconditioner(1, m, k, False, l2, "cpu")
    apply.build(xs, theta, torch.tensor([0]))
    for c in range(k):
        block = l2 * torch.eye(m, dtype=torch.float64)
        for i in range(n):
            if v[i, c] >= l2 / 100:
                block += v[i, c] * torch.outer(xs[0, i], xs[0, i]) / n
        e = torch.zeros(1, k * m, dtype=torch.float64)
        for j in range(m):
            e.zero_()
            e[0, c * m + j] = 1.0
            col = apply(e, torch.arange(1))[0, c * m:(c + 1) * m]
            assert torch.allclose(col, torch.linalg.inv(block)[:, j], rtol=1e-4, atol=1e-6)


def _hard(n=800, g=3, m=6, k=5, seed=0):
    """Well separated classes seen through correlated nodes: at a weak penalty L-BFGS with the start's matrix
    needs more than `curvature_after(m)` steps."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centres = torch.randn(g, k, m, generator=gen) * 3.0
    x = (centres[:, y] + torch.randn(g, n, m, generator=gen)) @ torch.randn(g, m, m, generator=gen)
    return x.double(), y


@pytest.mark.parametrize("bias", [True, False])
def test_a_hard_fit_switches_to_the_curvature_matrix_and_reaches_the_same_optimum(monkeypatch, bias):
    """A fit still above its tolerance after curvature_after(m) steps goes on with the curvature matrix (built
    once, kept for float64); it converges to the optimum an independent solver finds, as the fit that keeps the
    start's matrix does; each read-out switches on its own."""
    import lightning_ssb.analysis.fit as fit_module

    assert curvature_after(6) == 30 and curvature_after(384) == 192
    built = []
    real = fit_module.CurvaturePreconditioner.build

    def recording(self, xs, theta, groups):
        built.append((theta.dtype, groups.tolist()))
        real(self, xs, theta, groups)

    monkeypatch.setattr(fit_module.CurvaturePreconditioner, "build", recording)
    x, y = _hard()
    l2 = 1e-4
    fit = fit_groups(x, y, 5, bias, FitSettings(l2=l2))
    assert built == [(torch.float32, [0, 1, 2])]  # once, in float32, and kept for the float64 phase
    assert fit.report.converged.all() and (fit.report.iterations > curvature_after(6)).all()
    monkeypatch.setattr(fit_module, "CURVATURE_AFTER", 10**6)
    plain = fit_groups(x, y, 5, bias, FitSettings(l2=l2))
    assert len(built) == 1 and plain.report.converged.all()
    monkeypatch.setattr(fit_module, "CURVATURE_AFTER", 30)
    for h in range(3):
        gw, gb = penalised_grad(x[h], y, fit.weight[h], fit.bias[h], l2, bias)
        assert gw.abs().max() <= 1.5e-6 and (not bias or gb.abs().max() <= 1.5e-6)
        ref_w, ref_b = scipy_optimum(x[h], y, 5, l2, bias)
        for got in (fit, plain):
            fields, ref = x[h] @ got.weight[h].T + got.bias[h], x[h] @ ref_w.T + ref_b
            # a gradient of 1e-6 per entry leaves the optimum within |g| / l2 in the (penalised) weights
            assert torch.allclose(fields - fields.mean(1, keepdim=True), ref - ref.mean(1, keepdim=True), atol=0.05)
            assert ((fields.argmax(1) == ref.argmax(1)).double().mean()) > 0.995
    # each read-out switches on its own: beside one that converges before switching, the others are fitted
    # exactly as beside one that switches
    easy = torch.cat([x[:2], torch.randn(1, *x.shape[1:], dtype=x.dtype, generator=torch.Generator().manual_seed(1))])
    built.clear()
    mixed = fit_groups(easy, y, 5, bias, FitSettings(l2=l2))
    assert built == [(torch.float32, [0, 1])] and mixed.report.iterations[2] < curvature_after(6)
    assert torch.equal(mixed.weight[:2], fit.weight[:2]) and torch.equal(mixed.bias[:2], fit.bias[:2])
    assert torch.equal(mixed.report.iterations[:2], fit.report.iterations[:2])


@pytest.mark.parametrize("g, m, k", [(4, 5, 3), (5, 1, 5), (3, 6, 5), (4, 7, 10)])
@pytest.mark.parametrize("bias", [True, False])
def test_a_group_fit_is_identical_alone_and_among_others_at_any_offset(g, m, k, bias):
    """METHOD 3: a unit's read-out does not depend on which others are fitted beside it. On this project's CPU a
    batched matrix product rounds a read-out at an odd batch position differently from the same product alone
    (its operands start 32 bytes off a 64-byte boundary), and for one node a batch of one takes another
    kernel: each of these shapes gave read-outs that differed from their fits alone before the products were
    made read-out by read-out on aligned slabs. Hard problems at a weak penalty, so that the float32 phase,
    the switch to the curvature matrix and the float64 phase all run."""
    x, y = _hard(g=g, m=m, k=k)
    together = fit_groups(x, y, k, bias, FitSettings(l2=1e-4))
    assert together.report.converged.all()
    for h in range(g):
        alone = fit_groups(x[h], y, k, bias, FitSettings(l2=1e-4))
        assert torch.equal(alone.weight, together.weight[h]) and torch.equal(alone.bias, together.bias[h]), h
        assert alone.report.iterations.item() == together.report.iterations[h].item()


@pytest.mark.parametrize("n, d, k", [(800, 7, 5), (2000, 6, 25)])
def test_a_single_nodes_fit_is_identical_alone_and_among_others_at_any_offset(n, d, k):
    """The same for single nodes (Newton steps): each node fitted alone equals the node fitted among all d. Before
    the Hessians' products were made node by node and the Newton systems padded to 64-byte slabs, nodes 1, 2, 3,
    5 and 6 of the first case and the odd nodes of the second (a batched solve of 50 unknowns) came out
    differently."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % k
    x = (torch.randn(k, d, generator=gen)[y] + torch.randn(n, d, generator=gen)).double()
    together = fit_node_lines(x, y, k, bins=128, settings=FitSettings(l2=1e-4))
    assert together.report.converged.all()
    for j in range(d):
        alone = fit_node_lines(x[:, j:j + 1], y, k, bins=128, settings=FitSettings(l2=1e-4))
        assert torch.equal(alone.slope[0], together.slope[j]) and torch.equal(alone.intercept[0], together.intercept[j])
        assert alone.report.iterations.item() == together.report.iterations[j].item()
