"""One analysis of a site end to end: consistency with the parts, scalars, and input errors."""

import math

import pytest
import torch

from lightning_ssb.analysis import (AnalysisConfig, analyze_site, head_accuracies, node_accuracies,
                                    subset_accuracy)

H, D_HEAD, K = 3, 4, 5


def snapshot(n, seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    centres = torch.randn(K, H, D_HEAD, generator=torch.Generator().manual_seed(99))
    return centres[y] * 1.5 + torch.randn(n, H, D_HEAD, generator=gen), y


@pytest.fixture(scope="module")
def result():
    (xtr, ytr), (xte, yte) = snapshot(500, 0), snapshot(200, 1)
    cfg = AnalysisConfig(crossover_draws=2, top_nodes=3, max_iter=50)
    return analyze_site(xtr, ytr, xte, yte, K, cfg), xte, yte


def test_site_analysis_agrees_with_the_plain_functions(result):
    a, xte, yte = result
    x = xte.flatten(1)
    assert a.site_accuracy == subset_accuracy(x, yte, a.readout, range(H * D_HEAD))
    assert a.site_accuracy > 0.6
    assert torch.equal(a.node_accuracy.flatten(), node_accuracies(x, yte, a.readout))
    assert torch.equal(a.head_accuracy, head_accuracies(x, yte, a.readout, H))
    assert a.node_accuracy.shape == (H, D_HEAD) and a.node_labels.shape == (H * D_HEAD, K)
    assert a.hull_labels.shape == (H * D_HEAD, K) and a.head_labels.shape == (H, K)
    assert not (a.node_labels & ~a.hull_labels).any()
    assert (a.node_accuracy.flatten() <= a.hull_bound + 1e-12).all()
    assert torch.allclose(a.tightness, a.node_accuracy.flatten() / a.hull_bound)
    assert [r["m"] for r in a.crossover] == [1, 2, 4, 8, 12]
    assert [b["node"] for b in a.best_nodes] == a.node_accuracy.flatten().argsort(descending=True, stable=True)[:3].tolist()
    assert a.best_nodes[0]["confusion"].sum() == 200 and a.best_nodes[0]["field"].shape == (K, K)


def test_scalar_keys(result):
    s = result[0].scalars()
    order = ["phi", "overlap", "n_units", "mean_labels", "coverage", "acc_mean", "acc_max"]
    expected = {"site/acc", "hull/labels_mean", "hull/labels_all_mean", "hull/bound_mean", "hull/tightness_mean"}
    expected |= {f"{g}/{k}" for g in ("node", "head") for k in order}
    expected |= {f"cluster/{g}/{k}" for g in ("node", "head") for k in ("count_mean", "size_mean", "noise_mean")}
    assert set(s) == expected
    assert all(isinstance(v, float) for v in s.values())
    assert s["node/acc_max"] == result[0].node_accuracy.max().item()


def test_mean_ablation_and_options():
    (xtr, ytr), (xte, yte) = snapshot(300, 2), snapshot(100, 3)
    cfg = AnalysisConfig(ablation="mean", granularities=("node",), crossover_sizes=[], max_iter=20, top_nodes=0)
    a = analyze_site(xtr, ytr, xte, yte, K, cfg)
    assert a.head_accuracy is None and "head" not in a.order and a.crossover == [] and a.best_nodes == []
    assert torch.equal(a.node_accuracy.flatten(), node_accuracies(xte.flatten(1), yte, a.readout, "mean"))
    assert set(k.split("/")[0] for k in a.scalars()) == {"site", "node", "hull", "cluster"}


def test_bad_input_names_the_argument():
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
    with pytest.raises(ValueError, match="granularities"):
        AnalysisConfig(granularities=("layer",))
    with pytest.raises(ValueError, match="ablation"):
        AnalysisConfig(ablation="noise")
