"""The read-out fit: optimality, determinism, folding of the standardisation, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_ssb.analysis import fit_readout


def data(n=600, d=6, k=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centres = torch.randn(k, d, generator=gen)
    scale = torch.logspace(-2, 2, d)  # very different node scales: standardisation must fold back
    x = (centres[y] + torch.randn(n, d, generator=gen)) * scale + 5.0
    return x.double(), y, scale.double()


def test_fit_is_the_penalised_optimum_on_raw_activations():
    x, y, _ = data()
    l2 = 1e-2
    r = fit_readout(x, y, 4, l2=l2, max_iter=500, bias=True)
    std = x.std(0, unbiased=False)
    w_std = (r.weight * std).clone().requires_grad_(True)  # the standardised weights that were penalised
    b = r.bias.clone().requires_grad_(True)
    xs = (x - x.mean(0)) / std
    bias_std = b + (r.weight @ x.mean(0))  # fields on raw x equal fields on standardised x
    loss = F.cross_entropy(xs @ w_std.T + bias_std, y) + 0.5 * l2 * (w_std ** 2).sum()
    gw, gb = torch.autograd.grad(loss, [w_std, b])
    assert gw.abs().max() < 1e-4 and gb.abs().max() < 1e-4
    raw = x @ r.weight.T + r.bias
    assert torch.allclose(raw, xs @ (r.weight * std).T + bias_std, atol=1e-8)
    assert (raw.argmax(1) == y).double().mean() > 0.7  # Bayes accuracy of this data is about 0.85
    assert torch.allclose(r.mean, x.mean(0))


def test_fit_is_deterministic_and_subsamples_by_seed():
    x, y, _ = data(seed=1)
    a, b = fit_readout(x, y, 4, max_iter=30), fit_readout(x, y, 4, max_iter=30)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    c = fit_readout(x, y, 4, max_iter=30, max_examples=100, seed=3)
    d = fit_readout(x, y, 4, max_iter=30, max_examples=100, seed=4)
    assert not torch.equal(c.weight, d.weight)


def test_constant_node_gets_zero_weight():
    x, y, _ = data(seed=2)
    x[:, 0] = 3.0
    r = fit_readout(x, y, 4, max_iter=50)
    assert torch.all(r.weight[:, 0] == 0)


def test_shared_readout_is_bias_free_by_default():
    x, y, _ = data(seed=3)
    r = fit_readout(x, y, 4, max_iter=200)
    assert torch.all(r.bias == 0)
    assert (x @ r.weight.T).argmax(1).eq(y).double().mean() > 0.6   # the nodes' own constant part serves


def test_a_readout_with_nan_or_inf_is_refused_naming_it():
    from lightning_ssb.analysis import node_accuracies

    x, y, _ = data()
    r = fit_readout(x, y, 4, max_iter=20)
    r.weight[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"readout.weight contains 1 NaN or inf"):
        node_accuracies(x, y, r)
    r.weight[1, 2] = 0.0
    r.bias[0] = math.inf
    with pytest.raises(ValueError, match=r"readout.bias contains 1 NaN or inf"):
        node_accuracies(x, y, r)


def test_fit_errors_name_the_argument():
    x, y, _ = data()
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        bad = x.clone()
        bad[0, 0] = math.nan
        fit_readout(bad, y, 4)
    with pytest.raises(ValueError, match=r"y must have shape \[600\]"):
        fit_readout(x, y[:-1], 4)
    with pytest.raises(ValueError, match="outside 0..2"):
        fit_readout(x, y, 3)
    with pytest.raises(TypeError, match="y must be an integer"):
        fit_readout(x, y.double(), 4)
