"""The crossover sweep over subset sizes (docs/method.md 7)."""

import math

import pytest
import torch

from lightning_ssb.analysis import (
    CROSSOVER_COLUMNS,
    FitSettings,
    NodeLines,
    Readout,
    crossover,
    default_sizes,
    fit_groups,
    fit_node_lines,
    label_stats,
    learned_labels,
    reachable_labels,
    shared_units,
    subset_accuracy,
    subset_predictions,
)
from lightning_ssb.analysis.crossover import draw_subset
from tests.values import same


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


def problem(seed=1, n=400, d=8, k=5, bias=True):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = (torch.randn(n, d, generator=gen) + 2 * torch.randn(k, d, generator=gen)[y]).double()
    b = torch.randn(k, generator=gen) if bias else torch.zeros(k)
    r = Readout(torch.randn(k, d, generator=gen).double(), b.double(), x.mean(0))
    return x, y, r


def node_sets(x, y, r, subsets, k, q=0.05):
    """Brute force: each (draw, node) pair's learned set, tested together as one BH family."""
    members = torch.cat(subsets)
    pred = torch.stack([subset_predictions(x, r, [int(n)]) for n in members])
    return learned_labels(label_stats(pred, y, k), 0.5, q).sum()


def test_shared_rows_are_consistent_with_direct_computation():
    x, y, r = problem()
    d, k = x.shape[1], 5
    nodes, _ = shared_units(r, 2, "zero")
    rows = crossover(x, y, r, nodes, num_heads=2, sizes=[1, 2, 8], draws=3, seed=5).rows
    assert [row["m"] for row in rows] == [1, 2, 8] and set(rows[0]) == set(CROSSOVER_COLUMNS)
    assert rows[-1]["acc_mean"] == subset_accuracy(x, y, r, range(d)) and rows[-1]["acc_std"] == 0.0
    # replay the draws: the same generator, the same subsets
    gen = torch.Generator().manual_seed(5)
    for row in rows:
        subsets = [torch.sort(draw_subset(row["m"], d, 2, gen)).values for _ in range(3)]
        reach = [int(reachable_labels(r.weight[:, s], r.bias, x[:, s].min(0).values, x[:, s].max(0).values).sum())
                 for s in subsets]
        distinct = [len(subset_predictions(x, r, s).unique()) for s in subsets]
        accs = [subset_accuracy(x, y, r, s) for s in subsets]
        assert row["acc_mean"] == pytest.approx(sum(accs) / 3)
        assert row["reachable_mean"] == sum(reach) / 3 and row["distinct_mean"] == sum(distinct) / 3
        assert row["guess_level"] == pytest.approx(sum(1 / v for v in reach) / 3)
        assert row["distinct_mean"] <= row["reachable_mean"] <= row["reachable_all_mean"] <= k
        # cooperation: a ratio of sums over draws, the nodes of every draw tested as one family
        learned_s = learned_labels(label_stats(torch.stack([subset_predictions(x, r, s) for s in subsets]), y, k),
                                   0.5, 0.05).sum()
        denom = node_sets(x, y, r, subsets, k)
        expected = learned_s.item() / denom.item() if denom > 0 else math.nan
        assert row["cooperation"] == pytest.approx(expected, nan_ok=True)
    again = crossover(x, y, r, nodes, num_heads=2, sizes=[1, 2, 8], draws=3, seed=5).rows
    assert str(rows) == str(again)   # deterministic (NaN compares as text)
    assert [row["m"] for row in crossover(x, y, r, nodes, sizes=[4, 64], draws=1).rows] == [4]


def test_cooperation_is_exactly_one_for_single_nodes():
    """At m = 1 a subset is a node: the ratio compares a node's learned labels with themselves. Testing
    the subsets over draws x labels and the nodes over D x labels (two multiple-testing families) made
    it 3.0 in the shared family with 20 draws."""
    gen = torch.Generator().manual_seed(0)
    n, d, k = 1000, 16, 6
    y = torch.arange(n) % k
    x = (torch.randn(n, d, generator=gen) + 1.5 * torch.randn(k, d, generator=gen)[y]).double()
    r = Readout(torch.randn(k, d, generator=gen).double(), torch.zeros(k, dtype=torch.float64), x.mean(0))
    nodes, _ = shared_units(r, 1, "zero")
    row = crossover(x, y, r, nodes, sizes=[1], draws=20, seed=3).rows[0]
    assert row["learned_mean"] > 0 and row["cooperation"] == 1.0
    own_nodes = fit_node_lines(x, y, k, bins=None, settings=FitSettings(l2=1e-3))
    lines = NodeLines(own_nodes.slope, own_nodes.intercept)
    own = crossover(x, y, None, lines, sizes=[1], draws=20, seed=3, family="own", x_train=x, y_train=y).rows[0]
    assert own["learned_mean"] > 0 and own["cooperation"] == 1.0


def test_bias_free_single_nodes_reach_two_labels():
    """A bias-free node's K lines all cross at 0: only the labels of largest and smallest slope are ever
    strictly largest, so |R_S| = 2 and the random-guess level is 1/2 (the tie at 0 gave 3 and 1/3)."""
    x, y, r = problem(seed=4, bias=False)
    nodes, _ = shared_units(r, 1, "zero")
    row = crossover(x, y, r, nodes, sizes=[1], draws=8, seed=0).rows[0]
    assert row["reachable_all_mean"] == 2.0 and row["guess_level"] == 0.5


def test_own_rows_fit_a_readout_on_each_subset():
    x, y, r = problem(seed=2)
    d, k = x.shape[1], 5
    settings = FitSettings(l2=1e-3)
    lines = fit_node_lines(x, y, k, bins=None, settings=settings)
    nodes = NodeLines(lines.slope, lines.intercept)
    res = crossover(x, y, r, nodes, num_heads=2, sizes=[1, 3, 8], draws=2, seed=1, family="own",
                    x_train=x, y_train=y, settings=settings)
    # two fits at m = 3, one at m = 8 (= D: both draws are the whole site, fitted once), none at m = 1
    assert res.report is not None and res.report.converged.all() and len(res.report.converged) == 3
    gen = torch.Generator().manual_seed(1)
    for row in res.rows:
        accs = []
        for _ in range(2):
            s = torch.sort(draw_subset(row["m"], d, 2, gen)).values
            if row["m"] == 1:  # a single node's own read-out is its own lines
                z = x[:, s] * lines.slope[s] + lines.intercept[s]
            else:
                w, b, _ = fit_groups(x[:, s], y, k, True, settings)
                z = x[:, s] @ w.T + b
            accs.append((z.argmax(1) == y).double().mean().item())
        assert row["acc_mean"] == pytest.approx(sum(accs) / 2, abs=1 / len(y))
    # a fitted read-out beats the random one on the same subsets
    shared = crossover(x, y, r, shared_units(r, 2, "zero")[0], num_heads=2, sizes=[3, 8], draws=2, seed=1).rows
    assert all(o["acc_mean"] > s["acc_mean"] for o, s in zip(res.rows[1:], shared, strict=True))
    with pytest.raises(ValueError, match="needs x_train and y_train"):
        crossover(x, y, r, nodes, family="own")


def test_equal_subsets_share_their_reachability_programs(monkeypatch):
    """Draws of the same subset (every draw at m = D, whole heads drawn twice at m = d) have the same
    read-out: their programs are solved once and the answer counts for each draw."""
    import importlib

    module = importlib.import_module("lightning_ssb.analysis.crossover")
    x, y, r = problem()
    d = x.shape[1]
    nodes, _ = shared_units(r, 2, "zero")
    sets = []
    real = module.reachable_labels_many
    monkeypatch.setattr(module, "reachable_labels_many", lambda calls: sets.append(len(calls)) or real(calls))
    rows = crossover(x, y, r, nodes, num_heads=2, sizes=[4, 8], draws=5, seed=5).rows
    gen = torch.Generator().manual_seed(5)
    distinct, direct = [], []
    for m in (4, 8):
        subsets = [torch.sort(draw_subset(m, d, 2, gen)).values for _ in range(5)]
        distinct.append(len({tuple(s.tolist()) for s in subsets}))
        direct.append(sum(int(reachable_labels(r.weight[:, s], r.bias, x[:, s].min(0).values,
                                               x[:, s].max(0).values).sum()) for s in subsets) / 5)
    assert distinct[0] <= 2 and distinct[1] == 1  # two heads of 4 nodes; one site of 8
    assert sets == [1] * 2 * (distinct[0] + distinct[1])  # box, then all x, once per distinct subset
    assert [row["reachable_mean"] for row in rows] == direct


@pytest.mark.parametrize("family", ["shared", "own"])
def test_reachability_in_forked_processes_gives_the_same_rows(monkeypatch, tmp_path, family):
    """workers > 1 (a GPU run: the fits on the device, the programs in CPU processes) solves the programs
    in other processes, and the rows are those of one process exactly."""
    import importlib
    import os

    module = importlib.import_module("lightning_ssb.analysis.crossover")
    x, y, r = problem(seed=3)
    settings = FitSettings(l2=1e-3)
    lines = fit_node_lines(x, y, 5, bins=None, settings=settings)
    nodes = NodeLines(lines.slope, lines.intercept) if family == "own" else shared_units(r, 2, "zero")[0]
    kwargs = dict(num_heads=2, sizes=None, draws=3, seed=2, family=family, x_train=x, y_train=y, settings=settings)
    one = crossover(x, y, r, nodes, **kwargs).rows
    real = module.reachable_labels_many

    def recorded(calls):  # runs where the programs are solved: its pid tells which process that is
        (tmp_path / f"{os.getpid()}-{len(list(tmp_path.iterdir()))}").touch()
        return real(calls)

    monkeypatch.setattr(module, "reachable_labels_many", recorded)
    two = crossover(x, y, r, nodes, **kwargs, workers=2).rows
    pids = {int(f.name.split("-")[0]) for f in tmp_path.iterdir()}
    assert pids and os.getpid() not in pids  # every program was solved in a forked process
    assert [row["m"] for row in two] == default_sizes(x.shape[1]) and list(two[0]) == list(CROSSOVER_COLUMNS)
    assert same(one, two)  # cooperation and guess level can be NaN
