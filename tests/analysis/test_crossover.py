"""The crossover sweep over subset sizes (METHOD.md 7)."""

import math

import torch

from lightning_ssb.analysis import Readout, crossover, default_sizes, subset_accuracy
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


def test_rows_are_consistent_with_direct_computation():
    gen = torch.Generator().manual_seed(1)
    n, d, k = 400, 8, 5
    y = torch.arange(n) % k
    x = torch.randn(n, d, generator=gen) + 2 * torch.randn(k, d, generator=gen)[y]
    r = Readout(torch.randn(k, d, generator=gen), torch.randn(k, generator=gen), x.mean(0))
    node_labels = torch.zeros(d, k, dtype=torch.bool)
    node_labels[:, 0] = True                                       # |L_n| = 1 for every node
    rows = crossover(x, y, r, node_labels, num_heads=2, sizes=[1, 2, 8], draws=3, seed=5, exact_max_m=2)
    assert [row["m"] for row in rows] == [1, 2, 8]
    assert rows[-1]["acc_mean"] == subset_accuracy(x, y, r, range(d)) and rows[-1]["acc_std"] == 0.0
    assert [row["reach_exact"] for row in rows] == [True, True, False]
    for row in rows:
        assert 1 <= row["reachable_mean"] <= k and 1 / k <= row["guess_level"] <= 1
        assert row["cooperation_mean"] == row["learned_mean"] / row["m"]
    again = crossover(x, y, r, node_labels, num_heads=2, sizes=[1, 2, 8], draws=3, seed=5, exact_max_m=2)
    assert rows == again
    assert [row["m"] for row in crossover(x, y, r, node_labels, sizes=[4, 64], draws=1)] == [4]
    none = crossover(x, y, r, torch.zeros(d, k, dtype=torch.bool), sizes=[2], draws=2)
    assert math.isnan(none[0]["cooperation_mean"])
