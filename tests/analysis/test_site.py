"""One analysis of a site end to end: both read-out families, the null, planted structure, errors."""

import math
from dataclasses import replace

import pytest
import torch

from lightning_ssb.analysis import (AnalysisConfig, analyze_all, analyze_site, fit_groups, fit_node_lines,
                                    head_accuracies, node_accuracies, subset_accuracy)

H, D_HEAD, K = 3, 4, 5


def snapshot(n, seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    centres = torch.randn(K, H, D_HEAD, generator=torch.Generator().manual_seed(99))
    return centres[y] * 1.5 + torch.randn(n, H, D_HEAD, generator=gen), y


@pytest.fixture(scope="module")
def results():
    (xtr, ytr), (xte, yte) = snapshot(500, 0), snapshot(200, 1)
    cfg = AnalysisConfig(crossover_draws=2, top_nodes=3, max_iter=200)
    return analyze_all(xtr, ytr, xte, yte, K, cfg), (xtr, ytr, xte, yte), cfg


def test_shared_family_agrees_with_the_plain_functions(results):
    res, (_, _, xte, yte), _ = results
    a = res.real["shared"]
    x = xte.flatten(1)
    assert torch.all(a.readout.bias == 0)                       # bias-free by default
    assert a.site_accuracy == subset_accuracy(x, yte, a.readout, range(H * D_HEAD)) and a.site_accuracy > 0.6
    assert torch.equal(a.node_accuracy.flatten(), node_accuracies(x, yte, a.readout))
    assert torch.equal(a.head_accuracy, head_accuracies(x, yte, a.readout, H))
    assert not (a.node_labels & ~a.hull_labels).any()
    assert (a.node_accuracy.flatten() <= a.hull_bound + 1e-12).all()
    assert [r["m"] for r in a.crossover] == [1, 2, 4, 8, 12]


def test_own_family_is_each_units_own_fit(results):
    res, (xtr, ytr, xte, yte), cfg = results
    a = res.real["own"]
    x, xt = xte.flatten(1), xtr.flatten(1)
    slope, intercept = fit_node_lines(xt, ytr, K, cfg.own_bins, cfg.fit_settings(own=True))
    brute = (x.T.unsqueeze(2) * slope.unsqueeze(1) + intercept.unsqueeze(1)).argmax(2)   # [D, N] argmax of K lines
    assert torch.equal(a.node_accuracy.flatten(), (brute == yte).double().mean(1))
    for h in range(H):
        w, b = fit_groups(xt[:, h * D_HEAD:(h + 1) * D_HEAD], ytr, K, True, cfg.fit_settings(own=True))
        acc = ((x[:, h * D_HEAD:(h + 1) * D_HEAD] @ w.T + b).argmax(1) == yte).double().mean()
        assert a.head_accuracy[h].item() == pytest.approx(acc.item(), abs=1.5 / len(yte))
    assert math.isnan(a.site_accuracy)
    assert (a.node_accuracy.flatten() <= a.hull_bound + 1e-12).all() and not (a.node_labels & ~a.hull_labels).any()
    assert [b["node"] for b in a.best_nodes] == a.node_accuracy.flatten().argsort(descending=True, stable=True)[:3].tolist()
    assert a.best_nodes[0]["confusion"].sum() == 200 and a.best_nodes[0]["field"].shape == (K, K)


def test_statistic_names_and_the_null(results):
    res, _, _ = results
    stats = {(f, n, g, s) for f, n, g, s, _ in res.statistics()}
    per_unit = {"live", "live_fraction", "phi", "overlap", "mean_labels", "coverage", "acc_mean", "acc_max",
                "cluster_count", "cluster_size", "cluster_noise"}
    hull = {"hull_labels", "hull_labels_all", "hull_bound", "hull_tightness", "hull_violations"}
    expected = {(f, n, g, s) for f in ("own", "shared") for n in (False, True) for g in ("node", "head")
                for s in per_unit | (hull if g == "node" else set())}
    expected |= {("shared", False, "site", "acc")}
    assert stats == expected
    values = {(f, n, g, s): v for f, n, g, s, v in res.statistics()}
    for f in ("own", "shared"):
        assert values[(f, False, "node", "hull_violations")] == 0.0
        assert values[(f, True, "node", "live")] <= 1               # permuted labels: nothing learned
        assert values[(f, False, "head", "live")] == H               # every head learned something
    arrays = res.arrays()
    assert arrays["own/node/labels"].shape == (H * D_HEAD, K) and arrays["shared/null/head/labels"].shape == (H, K)
    assert "own/null/best/field" not in arrays and arrays["own/best/field"].shape == (3, K, K)


def planted(n_per, k, h, d, seed, sigma=2.5):
    """Label c planted on nodes c, c+K, c+2K, ... (not centred: every node sits at 3 + noise)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(k).repeat_interleave(n_per)
    x = torch.randn(len(y), h * d, generator=gen) + 3.0
    owner = torch.arange(h * d) % k
    x += sigma * (owner.unsqueeze(0) == y.unsqueeze(1))
    return x.view(-1, h, d), y


def test_planted_structure_is_recovered_and_permuted_labels_show_nothing():
    k, h, d = 8, 4, 6
    (xtr, ytr), (xte, yte) = planted(150, k, h, d, 0), planted(60, k, h, d, 1)
    res = analyze_all(xtr, ytr, xte, yte, k, AnalysisConfig(crossover_sizes=[]))   # the defaults, null on
    a = res.real["own"]
    truth = torch.zeros(h * d, k, dtype=torch.bool)
    truth[torch.arange(h * d), torch.arange(h * d) % k] = True
    assert (a.node_labels == truth).all(1).double().mean() >= 0.95
    # planted Phi: 24 nodes, each label on 3 of them: overlap = (8 * 3 * 2) / (24 * 23)
    assert a.order["node"]["phi"] == pytest.approx(1 - 48 / (24 * 23), abs=0.02)
    assert res.null["own"].order["node"]["live"] <= 1 and res.null["shared"].order["node"]["live"] <= 1
    gen = torch.Generator().manual_seed(7)
    cfg = AnalysisConfig(readout="own", crossover_sizes=[])
    null = analyze_site(xtr, ytr[torch.randperm(len(ytr), generator=gen)], xte,
                        yte[torch.randperm(len(yte), generator=gen)], k, cfg)
    assert null.order["node"]["live"] <= 1
    loose = analyze_site(xtr, ytr[torch.randperm(len(ytr), generator=gen)], xte,
                         yte[torch.randperm(len(yte), generator=gen)], k, replace(cfg, q=None, theta=0.3))
    assert loose.order["node"]["live"] > null.order["node"]["live"]   # without the test, noise passes


def test_shared_bias_and_mean_ablation_options():
    (xtr, ytr), (xte, yte) = snapshot(300, 2), snapshot(100, 3)
    cfg = AnalysisConfig(readout="shared", shared_bias=True, ablation="mean", granularities=("node",),
                         crossover_sizes=[], max_iter=50, top_nodes=0)
    a = analyze_site(xtr, ytr, xte, yte, K, cfg)
    assert a.head_accuracy is None and "head" not in a.order and a.crossover == [] and a.best_nodes == []
    assert not torch.all(a.readout.bias == 0)
    assert torch.equal(a.node_accuracy.flatten(), node_accuracies(xte.flatten(1), yte, a.readout, "mean"))
    assert set(a.statistics()) == {"site", "node"}


def test_bad_input_and_config_name_the_argument():
    (xtr, ytr), (xte, yte) = snapshot(100, 4), snapshot(50, 5)
    nan = xte.clone()
    nan[3, 1, 2] = math.nan
    cases = [
        ((xtr, ytr, nan, yte, K), "x_test contains 1 NaN"),
        ((xtr.flatten(1), ytr, xte, yte, K), "x_train must have 3 dims"),
        ((xtr, ytr, xte[:, :2], yte, K), "x_train and x_test must share"),
        ((xtr, ytr[:-1], xte, yte, K), r"y_train must have shape \[100\]"),
        ((xtr, ytr, xte, yte + 1, K), "y_test has labels in"),
        ((xtr, ytr, xte, yte % 4, K), r"y_test has no example of class \[4\]"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            analyze_site(*args)
    with pytest.raises(ValueError, match="analyze_site analyses one read-out family"):
        analyze_site(xtr, ytr, xte, yte, K, AnalysisConfig())
    for bad, key in [(dict(granularities=("layer",)), "granularities"), (dict(ablation="noise"), "ablation"),
                     (dict(readout="all"), "readout"), (dict(q=1.5), "q must"), (dict(null_mode="some"), "null_mode"),
                     (dict(own_bins=1), "own_bins"), (dict(l2=-1.0), "l2"), (dict(crossover_sizes=[0]), "crossover")]:
        with pytest.raises(ValueError, match=key):
            AnalysisConfig(**bad)
