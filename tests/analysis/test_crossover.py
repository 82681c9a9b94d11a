"""The crossover sweep over subset sizes (docs/method.md 7)."""

import math

import torch

import pytest

from lightning_ssb.analysis import (CROSSOVER_COLUMNS, FitSettings, Readout, crossover, default_sizes, fit_groups,
                                    reachable_labels, subset_accuracy, subset_predictions)
from lightning_ssb.analysis.crossover import draw_subset


def test_default_sizes():
    assert default_sizes(768) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768]
    assert default_sizes(8) == [1, 2, 4, 8]
    assert default_sizes(1) == [1]


def test_subsets_stay_in_one_head_up_to_d():
    gen = torch.Generator().manual_seed(0)
    for m in (1, 3, 4):
        for _ in range(20):
            s = draw_subset(m, 12, 3, gen)
            assert len(s.unique()) == m and len((s // 4).unique()) == 1
    s = draw_subset(9, 12, 3, gen)
    assert len(s.unique()) == 9


def problem(seed=1, n=400, d=8, k=5):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=gen) + 2 * torch.randn(k, d, generator=gen)[y]
    r = Readout(torch.randn(k, d, generator=gen), torch.randn(k, generator=gen), x.mean(0))
    return x, y, r


def test_shared_rows_are_consistent_with_direct_computation():
    x, y, r = problem()
    d, k = x.shape[1], 5
    node_labels = torch.zeros(d, k, dtype=torch.bool)
    node_labels[:, 0] = True                                       # |L_n| = 1 for every node
    rows = crossover(x, y, r, node_labels, num_heads=2, sizes=[1, 2, 8], draws=3, seed=5)
    assert [row["m"] for row in rows] == [1, 2, 8] and set(rows[0]) == set(CROSSOVER_COLUMNS)
    assert rows[-1]["acc_mean"] == subset_accuracy(x, y, r, range(d)) and rows[-1]["acc_std"] == 0.0
    # replay the draws: the same generator, the same subsets
    gen = torch.Generator().manual_seed(5)
    for row in rows:
        subsets = [draw_subset(row["m"], d, 2, gen) for _ in range(3)]
        reach = [int(reachable_labels(r.weight[:, s], r.bias, x[:, s].min(0).values, x[:, s].max(0).values).sum())
                 for s in subsets]
        distinct = [len(subset_predictions(x, r, s).unique()) for s in subsets]
        accs = [subset_accuracy(x, y, r, s) for s in subsets]
        assert row["acc_mean"] == pytest.approx(sum(accs) / 3)
        assert row["reachable_mean"] == sum(reach) / 3 and row["distinct_mean"] == sum(distinct) / 3
        assert row["guess_level"] == pytest.approx(sum(1 / v for v in reach) / 3)
        assert row["distinct_mean"] <= row["reachable_mean"] <= row["reachable_all_mean"] <= k
        # cooperation: a ratio of sums over draws, sum |L_S| / sum_S sum_{n in S} |L_n| = sum |L_S| / (3 m)
        assert row["cooperation"] == pytest.approx(row["learned_mean"] * 3 / (3 * row["m"]))
    assert rows == crossover(x, y, r, node_labels, num_heads=2, sizes=[1, 2, 8], draws=3, seed=5)
    assert [row["m"] for row in crossover(x, y, r, node_labels, sizes=[4, 64], draws=1)] == [4]
    none = crossover(x, y, r, torch.zeros(d, k, dtype=torch.bool), sizes=[2], draws=2)
    assert math.isnan(none[0]["cooperation"])


def test_own_rows_fit_a_readout_on_each_subset():
    x, y, r = problem(seed=2)
    d, k = x.shape[1], 5
    node_labels = torch.zeros(d, k, dtype=torch.bool)
    settings = FitSettings(max_iter=300)
    rows = crossover(x, y, r, node_labels, num_heads=2, sizes=[3, 8], draws=2, seed=1, family="own",
                     x_train=x, y_train=y, settings=settings)
    gen = torch.Generator().manual_seed(1)
    for row in rows:
        accs = []
        for _ in range(2):
            s = torch.sort(draw_subset(row["m"], d, 2, gen)).values
            w, b = fit_groups(x[:, s], y, k, True, settings)
            accs.append(((x[:, s] @ w.T + b).argmax(1) == y).double().mean().item())
        assert row["acc_mean"] == pytest.approx(sum(accs) / 2, abs=1 / len(y))
    # a fitted read-out beats the random one on the same subsets
    shared = crossover(x, y, r, node_labels, num_heads=2, sizes=[3, 8], draws=2, seed=1)
    assert all(o["acc_mean"] > s["acc_mean"] for o, s in zip(rows, shared))
    with pytest.raises(ValueError, match="needs x_train and y_train"):
        crossover(x, y, r, node_labels, family="own")
