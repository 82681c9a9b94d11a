"""The convex-hull bound and reachability of labels (METHOD.md 6)."""

import torch

from lightning_ssb.analysis import (Readout, hull_bound, label_stats, learned_labels, node_hull_labels,
                                    node_predictions, reachable_labels)


def test_bound_holds_on_random_sites():
    for seed, (n, d, k) in enumerate([(400, 16, 5), (300, 8, 30), (500, 4, 3)]):
        gen = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % k
        x = torch.randn(n, d, generator=gen) + torch.randn(k, d, generator=gen)[y]
        r = Readout(torch.randn(k, d, generator=gen), torch.randn(k, generator=gen), x.mean(0))
        for ablation in ("zero", "mean"):
            pred = node_predictions(x, r, ablation)
            stats = label_stats(pred, y, k)
            hull = node_hull_labels(r, x.min(0).values, x.max(0).values, ablation)
            every = node_hull_labels(r, None, None, ablation)
            predicted = torch.zeros(d, k, dtype=torch.bool).scatter_(1, pred, True)
            assert not (predicted & ~hull).any()                      # predictions stay on the envelope
            assert not (learned_labels(stats, 0.2) & ~hull).any()     # |L_n| <= |R_n|, as sets
            assert not (hull & ~every).any()
            prior = torch.bincount(y, minlength=k).double() / n
            assert (stats.accuracy <= hull_bound(hull, prior) + 1e-12).all()


def test_reachability_by_hand():
    w = torch.tensor([[0.0, 0], [1, 0], [0, 1], [-1, -1], [0, 0], [0.0, 0]])
    b = torch.tensor([1.0, 0, 0, 0, -5, 1])   # 4 lies below the hull; 5 duplicates 0 (0 wins ties)
    for method in ("auto", "qhull", "lp"):
        assert reachable_labels(w, b, method).tolist() == [True, True, True, True, False, False]


def test_qhull_and_lp_agree_and_contain_every_sampled_argmax():
    gen = torch.Generator().manual_seed(0)
    for m, k in [(2, 12), (3, 20), (2, 3), (4, 9)]:
        for _ in range(5):
            w, b = torch.randn(k, m, generator=gen), torch.randn(k, generator=gen)
            q, lp = reachable_labels(w, b, "qhull"), reachable_labels(w, b, "lp")
            assert torch.equal(q, lp)
            seen = (torch.randn(20000, m, generator=gen) * 5 @ w.T + b).argmax(1).unique()
            assert q[seen].all()


def test_degenerate_point_sets_fall_back_to_lp():
    # Collinear points in R^3 (m = 2): Qhull cannot build a hull; the envelope along the line decides.
    s = torch.tensor([-1.0, 0, 1, 2])
    w = torch.stack([s, 2 * s], 1)
    b = torch.tensor([0.0, 0.5, 0, -3])
    assert reachable_labels(w, b).tolist() == [True, True, True, True]
    assert reachable_labels(w, torch.tensor([0.0, -1, 0, -10])).tolist() == [True, False, True, True]
    # K = 1 and K <= m + 1.
    assert reachable_labels(torch.zeros(1, 3), torch.zeros(1)).tolist() == [True]
    assert reachable_labels(torch.eye(2), torch.zeros(2)).tolist() == [True, True]


def test_one_node_reachability_is_its_envelope():
    gen = torch.Generator().manual_seed(1)
    w, b = torch.randn(30, 1, generator=gen), torch.randn(30, generator=gen)
    r = Readout(w, b)
    assert torch.equal(reachable_labels(w, b), node_hull_labels(r)[0])
    assert torch.equal(reachable_labels(w, b, "lp"), node_hull_labels(r)[0])
