"""Batched read-out fits (fit.py): each group at its own penalised optimum, scale-free, constant nodes."""

import pytest
import torch
import torch.nn.functional as F

from lightning_ssb.analysis import FitSettings, fit_groups, fit_node_lines
from lightning_ssb.analysis.fit import bin_nodes


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


@pytest.mark.parametrize("bias", [True, False])
def test_groups_are_each_at_the_penalised_optimum(bias):
    x, y = data()
    groups = torch.stack([x[:, :3], x[:, 2:]])  # two groups of 3 nodes sharing one node
    w, b = fit_groups(groups, y, 4, bias, FitSettings(l2=1e-2, max_iter=1000))
    assert w.shape == (2, 4, 3) and b.shape == (2, 4)
    if not bias:
        assert torch.all(b == 0)
    for g in range(2):
        gw, gb = penalised_grad(groups[g], y, w[g], b[g], 1e-2, bias)
        assert gw.abs().max() < 1e-4
        if bias:
            assert gb.abs().max() < 1e-4
        alone = fit_groups(groups[g], y, 4, bias, FitSettings(l2=1e-2, max_iter=1000))
        assert torch.allclose(alone[0], w[g], rtol=1e-3, atol=1e-4 / groups[g].std(0).min())


def test_scale_of_a_node_is_folded_back_and_constant_nodes_get_zero_weight():
    x, y = data(seed=1)
    w, b = fit_groups(x, y, 4, True, FitSettings(max_iter=500))
    scaled = x.clone()
    scaled[:, 1] *= 1e-3
    w2, b2 = fit_groups(scaled, y, 4, True, FitSettings(max_iter=500))
    assert torch.allclose(w2[:, 1] * 1e-3, w[:, 1], rtol=1e-4)          # same fields, raw weight x 1000
    # A near-constant node (spread 1e-7 of its scale) gets weight exactly 0 and leaves the rest unchanged.
    gen = torch.Generator().manual_seed(5)
    extra = torch.cat([x, 3.0 + 1e-7 * torch.randn(len(x), 1, generator=gen, dtype=x.dtype)], 1)
    for bias in (True, False):
        w3, b3 = fit_groups(extra, y, 4, bias, FitSettings(max_iter=500))
        ref_w, ref_b = fit_groups(x, y, 4, bias, FitSettings(max_iter=500))
        assert torch.all(w3[:, -1] == 0)
        assert torch.allclose(w3[:, :-1], ref_w) and torch.allclose(b3, ref_b)


def test_warm_start_reaches_the_same_optimum():
    x, y = data(seed=2)
    cold = fit_groups(x, y, 4, True, FitSettings(l2=1e-2, max_iter=1000))
    gen = torch.Generator().manual_seed(0)
    start = (torch.randn(4, 5, generator=gen, dtype=x.dtype), torch.randn(4, generator=gen, dtype=x.dtype))
    warm = fit_groups(x, y, 4, True, FitSettings(l2=1e-2, max_iter=1000), init=start)
    fields = lambda wb: x @ wb[0].T + wb[1]
    assert torch.allclose(torch.softmax(fields(cold), 1), torch.softmax(fields(warm), 1), atol=1e-5)


def test_node_lines_exact_equal_one_node_groups_and_bins_barely_move_them():
    x, y = data(n=2000, seed=3)
    settings = FitSettings(max_iter=1000)
    slope, intercept = fit_node_lines(x, y, 4, bins=None, settings=settings)
    for n in range(x.shape[1]):
        gw, gb = penalised_grad(x[:, n:n + 1], y, slope[n].unsqueeze(1), intercept[n], settings.l2, True)
        assert gw.abs().max() < 1e-4 and gb.abs().max() < 1e-4
    s2, i2 = fit_node_lines(x, y, 4, bins=128, settings=settings)
    pred = lambda s, i: (x.T.unsqueeze(2) * s.unsqueeze(1) + i.unsqueeze(1)).argmax(2)
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
    for bad in (dict(l2=-1.0), dict(max_iter=0), dict(const_tol=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FitSettings(**bad)
