"""The convex-hull bound and reachability of labels (docs/method.md 6)."""

import numpy as np
import pytest
import torch

from lightning_ssb.analysis import (
    Readout,
    hull_bound,
    label_stats,
    learned_labels,
    node_hull_labels,
    node_predictions,
    reachable_labels,
)


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
    w = torch.tensor([[0.0, 0], [1, 0], [0, 1], [-1, -1], [0, 0]])
    b = torch.tensor([1.0, 0, 0, 0, -5])   # 4 lies below the hull
    for method in ("qhull", "lp"):
        assert reachable_labels(w, b, method=method).tolist() == [True, True, True, True, False]
    # In the box [0, 0.5]^2 label 0 (field 1) beats labels 1 and 2 (at most 0.5) and 3 everywhere.
    box = reachable_labels(w, b, torch.zeros(2), torch.full((2,), 0.5))
    assert box.tolist() == [True, False, False, False, False]
    # In [0, 3]^2, labels 1 and 2 win near the far corners, 3 (falling) never.
    assert reachable_labels(w, b, torch.zeros(2), torch.full((2,), 3.0)).tolist() == \
        [True, True, True, False, False]
    # A label whose point another label duplicates ties with it everywhere: neither is ever the strict argmax
    # (argmax would output the lower one by the tie rule, which does not make it reachable).
    w2, b2 = torch.cat([w, w[:1]]), torch.cat([b, b[:1]])
    for method in ("qhull", "lp"):
        assert reachable_labels(w2, b2, method=method).tolist() == [False, True, True, True, False, False]


def dense_winners(w, b, lo, hi, gen, n=60000):
    """Brute force: argmax labels at random points of the box and at all its corners."""
    m = w.shape[1]
    u = torch.rand(n, m, generator=gen, dtype=torch.float64)
    corners = torch.tensor([[(c >> j) & 1 for j in range(m)] for c in range(2 ** m)], dtype=torch.float64)
    pts = lo + (hi - lo) * torch.cat([u, corners])
    z = pts @ w.double().T + b.double()
    strict = (z == z.max(1, keepdim=True).values).sum(1) == 1
    out = torch.zeros(w.shape[0], dtype=torch.bool)
    out[z.argmax(1)[strict]] = True
    return out


def witness_wins(w, b, lo, hi, label):
    """Maximise the smallest margin of `label` over the others in the box; check the argmax there."""
    from scipy.optimize import linprog

    m = w.shape[1]
    others = [j for j in range(w.shape[0]) if j != label]
    a_ub = torch.cat([-(w[label] - w[others]), torch.ones(len(others), 1, dtype=w.dtype)], 1).numpy()
    res = linprog([0.0] * m + [-1.0], A_ub=a_ub, b_ub=(b[label] - b[others]).numpy(),
                  bounds=list(zip(lo.tolist(), hi.tolist(), strict=True)) + [(None, None)])
    x = torch.tensor(res.x[:m], dtype=w.dtype)
    return res.status == 0 and -res.fun > 0 and int((w @ x + b).argmax()) == label


def test_lp_agrees_with_qhull_and_with_dense_sampling_of_the_box():
    gen = torch.Generator().manual_seed(0)
    for m, k in [(2, 12), (3, 20), (2, 3), (3, 9)]:
        for _ in range(4):
            w, b = torch.randn(k, m, generator=gen), torch.randn(k, generator=gen)
            assert torch.equal(reachable_labels(w, b, method="qhull"), reachable_labels(w, b))
            lo, hi = -torch.rand(m, generator=gen), torch.rand(m, generator=gen)
            box = reachable_labels(w, b, lo, hi)
            seen = dense_winners(w, b, lo.double(), hi.double(), gen)
            assert not (seen & ~box).any()          # everything sampled is reachable
            # what the samples missed wins only in a sliver: find a witness point independently
            for i in (box & ~seen).nonzero().flatten().tolist():
                assert witness_wins(w.double(), b.double(), lo.double(), hi.double(), i)
            assert not (box & ~reachable_labels(w, b)).any()   # box reachability implies all-x


def test_dense_directions_in_higher_dimensions():
    gen = torch.Generator().manual_seed(2)
    for m in (5, 12):
        w, b = torch.randn(30, m, generator=gen), torch.randn(30, generator=gen)
        lo, hi = -torch.ones(m), torch.ones(m)
        assert not (dense_winners(w, b, lo.double(), hi.double(), gen, 200000) & ~reachable_labels(w, b, lo, hi)).any()


def test_reachability_is_scale_invariant_and_predicted_labels_skip_the_program():
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(16, 3, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)
    lo, hi = -torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ref_all, ref_box = reachable_labels(w, b), reachable_labels(w, b, lo, hi)
    for s in (1e-9, 1e9):
        assert torch.equal(reachable_labels(w * s, b * s), ref_all)
        assert torch.equal(reachable_labels(w * s, b * s, lo, hi), ref_box)
        assert torch.equal(reachable_labels(w * s, b), ref_all)        # all x: slopes scale freely
    given = torch.zeros(16, dtype=torch.bool)
    given[ref_box.nonzero()[0]] = True
    assert torch.equal(reachable_labels(w, b, lo, hi, predicted=given), ref_box)


def test_degenerate_point_sets():
    # Collinear points in R^3 (m = 2): Qhull cannot build a hull; the envelope along the line decides.
    s = torch.tensor([-1.0, 0, 1, 2])
    w = torch.stack([s, 2 * s], 1)
    b = torch.tensor([0.0, 0.5, 0, -3])
    for method in ("lp", "qhull"):
        assert reachable_labels(w, b, method=method).tolist() == [True, True, True, True]
        assert reachable_labels(w, torch.tensor([0.0, -1, 0, -10]), method=method).tolist() == [True, False, True, True]
    # K = 1 (the one label, unopposed), equal fields (never a strict winner), and K <= m + 1.
    assert reachable_labels(torch.zeros(1, 3), torch.zeros(1)).tolist() == [True]
    assert reachable_labels(torch.zeros(2, 3), torch.zeros(2)).tolist() == [False, False]
    assert reachable_labels(torch.eye(2), torch.zeros(2)).tolist() == [True, True]
    with pytest.raises(ValueError, match="lo and hi must be given together"):
        reachable_labels(torch.eye(2), torch.zeros(2), lo=torch.zeros(2))


def test_one_node_reachability_is_its_envelope():
    gen = torch.Generator().manual_seed(1)
    w, b = torch.randn(30, 1, generator=gen), torch.randn(30, generator=gen)
    r = Readout(w, b)
    assert torch.equal(reachable_labels(w, b), node_hull_labels(r)[0])
    lo, hi = torch.tensor([-0.5]), torch.tensor([0.7])
    assert torch.equal(reachable_labels(w, b, lo, hi), node_hull_labels(r, lo, hi)[0])


def margin_by_program(w, b, lo, hi, label):
    """The largest margin min_j (f_label - f_j) over the box (all x when lo is None), capped at 1: one
    linear program written here, independently of hull.py, on w, b scaled to a largest entry of 1."""
    from scipy.optimize import linprog

    k, m = w.shape
    others = [j for j in range(k) if j != label]
    rows, consts = (w[label] - w[others]).double(), (b[label] - b[others]).double()
    scale = max(rows.abs().max().item(), consts.abs().max().item())
    bounds = [(None, None)] * m if lo is None else list(zip(lo.tolist(), hi.tolist(), strict=True))
    a_ub = torch.cat([-rows / scale, torch.ones(k - 1, 1, dtype=torch.float64)], 1).numpy()
    res = linprog([0.0] * m + [-1.0], A_ub=a_ub, b_ub=(consts / scale).numpy(), bounds=bounds + [(None, 1.0)],
                  method="highs")
    return -res.fun


def test_certificates_and_directions_agree_with_a_program_per_label(monkeypatch):
    """Before any program, reachable_labels proves labels unreachable in a box by a mixture of the others
    (weak duality) and reachable over all x by a direction that beats every other label. The answers
    equal one program per label (written in this test), and the programs it still runs are few in a box,
    and none over all x once m >= K - 1, where the differences of K generic labels are independent."""
    import lightning_ssb.analysis.hull as hull

    calls = []  # the labels sent to programs
    real = hull._lp_wins_many
    monkeypatch.setattr(hull, "_lp_wins_many", lambda problems, box: calls.extend([box] * len(problems))
                        or real(problems, box))
    gen = torch.Generator().manual_seed(5)
    # (K, m, slopes' spread per node, constants' spread): in a box, many labels beaten only by a mixture of
    # others (the sampled points and the one-label test leave them all to programs); over all x, slopes
    # whose spread falls by 100 from the first node to the last, as in fitted read-outs (random
    # directions miss the labels that win only along the small ones)
    for k, m, decay, spread in [(40, 4, 0, 1.0), (40, 8, 0, 3.0), (30, 40, 2, 10.0), (40, 6, 2, 10.0)]:
        w = torch.randn(k, m, generator=gen, dtype=torch.float64) * torch.logspace(0, -decay, m, dtype=torch.float64)
        b = spread * torch.randn(k, generator=gen, dtype=torch.float64)
        lo, hi = -torch.ones(m, dtype=torch.float64), torch.ones(m, dtype=torch.float64)
        for box in (True, False):
            calls.clear()
            got = reachable_labels(w, b, lo, hi) if box else reachable_labels(w, b)
            margins = torch.tensor([margin_by_program(w, b, lo if box else None, hi, i) for i in range(k)])
            assert not ((margins > -1e-7) & (margins < 1e-7)).any()    # no label on the fence: a clear answer
            assert torch.equal(got, margins > 0), (k, m, box)
            assert 0 < int(got.sum()) < k or not box                  # both answers occur
            if box or m >= k - 1:   # over all x with m < K - 1, unreachable labels still need their programs
                assert len(calls) <= (k // 8 if box else 0), (k, m, box, len(calls))


def test_programs_solved_together_equal_one_program_each():
    """The labels left to programs are solved as one block-diagonal program: the same answers as one
    program each, also when the joint program is cut into batches."""
    import lightning_ssb.analysis.hull as hull

    gen = torch.Generator().manual_seed(9)
    for k, m, box in [(25, 3, True), (25, 3, False), (20, 6, True), (30, 12, False)]:
        a = torch.randn(k, m, generator=gen, dtype=torch.float64).numpy()
        c = torch.randn(k, generator=gen, dtype=torch.float64).numpy()
        problems = [hull._normalise(np.delete(a[i] - a, i, axis=0), np.delete(c[i] - c, i, axis=0), box)
                    for i in range(k)]
        alone = [hull._lp_wins(rows, consts, box) for rows, consts in problems]
        assert 0 < sum(alone) < k or not box                     # both answers occur
        assert hull._lp_wins_many(problems, box) == alone
        assert hull._lp_block(problems[:1], box) == alone[:1]
        old = hull._LP_BATCH_ENTRIES
        try:
            hull._LP_BATCH_ENTRIES = 3 * problems[0][0].size     # batches of three labels
            assert hull._lp_wins_many(problems, box) == alone
        finally:
            hull._LP_BATCH_ENTRIES = old


def test_cutting_planes_answer_many_labels_as_a_program_per_label(monkeypatch):
    """With many more labels than nodes (an MLM probe of hundreds of tokens), a label's program is solved
    from a few of its rows, adding the rows its optimum violates (cutting planes). The answers equal one
    program per label on all rows (written in this test), in a box and over all x; the programs really
    are solved on fewer rows; and with one round or none, the programs left unanswered fall back to all
    their rows with the same answers."""
    import lightning_ssb.analysis.hull as hull

    heights = []
    real = hull._margin_programs
    monkeypatch.setattr(hull, "_margin_programs",
                        lambda problems, box: heights.extend(p[0].shape[0] for p in problems) or real(problems, box))
    gen = torch.Generator().manual_seed(31)
    for k, m, spread in [(200, 3, 1.0), (200, 12, 3.0)]:
        w = torch.randn(k, m, generator=gen, dtype=torch.float64) * torch.logspace(0, -1, m, dtype=torch.float64)
        b = spread * torch.randn(k, generator=gen, dtype=torch.float64)
        lo, hi = -torch.ones(m, dtype=torch.float64), torch.ones(m, dtype=torch.float64)
        a, c = w.numpy(), b.numpy()
        for box in (True, False):
            margins = torch.tensor([margin_by_program(w, b, lo if box else None, hi, i) for i in range(k)])
            assert not ((margins > -1e-7) & (margins < 1e-7)).any()    # no label on the fence: a clear answer
            expected = (margins > 0).tolist()
            assert 0 < sum(expected) < k                               # both answers occur
            # the programs of reachable_labels (here in u = (x - lo) / (hi - lo) in [0, 1]^m for the box)
            a_u, c_u = (a * 2.0, c - a.sum(1)) if box else (a, c)
            problems = [hull._normalise(np.delete(a_u[i] - a_u, i, 0), np.delete(c_u[i] - c_u, i, 0), box)
                        for i in range(k)]
            assert k - 1 > 2 * hull._cut_rows(problems[0][0])         # tall programs: the cutting-plane path
            heights.clear()
            assert hull._lp_wins_many(problems, box) == expected, (k, m, box)
            assert max(heights) < k - 1                                # never all the rows of a program
            got = reachable_labels(w, b, lo, hi) if box else reachable_labels(w, b)
            assert got.tolist() == expected, (k, m, box)
            for rounds in (1, 0):  # what a round leaves open is solved on all its rows
                monkeypatch.setattr(hull, "_CUT_ROUNDS", rounds)
                heights.clear()
                assert hull._lp_wins_cutting(problems, box) == expected, (k, m, box, rounds)
                assert rounds or heights == [k - 1] * k                # no round: every program on all rows
            monkeypatch.setattr(hull, "_CUT_ROUNDS", 30)


def test_node_sets_searched_together_give_each_sets_own_answer(monkeypatch):
    """`reachable_labels_many` (the crossover's draws in one call) answers every node set exactly as a
    call of its own, with one program call per domain kind for all the sets' remaining labels; sets
    that need no program (one node, one distinct point, everything predicted) are answered too."""
    import lightning_ssb.analysis.hull as hull

    gen = torch.Generator().manual_seed(12)
    calls = []
    for k, m in [(30, 2), (30, 4), (20, 8), (12, 1), (25, 3)]:
        w, b = torch.randn(k, m, generator=gen), torch.randn(k, generator=gen)
        lo, hi = -torch.rand(m, generator=gen), torch.rand(m, generator=gen)
        calls += [(w, b, lo, hi, None), (w, b, None, None, None), (w, b, lo, hi, torch.rand(k, generator=gen) < 0.3)]
    calls.append((torch.ones(5, 2), torch.zeros(5), None, None, None))                    # all tie: none
    calls.append((torch.randn(4, 3, generator=gen), torch.randn(4, generator=gen), None, None, torch.ones(4) > 0))
    alone = [reachable_labels(*call) for call in calls]
    solved = []
    real = hull._lp_wins_many
    monkeypatch.setattr(hull, "_lp_wins_many", lambda problems, box: solved.append(box) or real(problems, box))
    together = hull.reachable_labels_many(calls)
    assert all(torch.equal(t, a) for t, a in zip(together, alone, strict=True))
    assert sorted(solved) == [False, True]                     # one call per domain kind, not one per set
    assert not alone[-2].any() and alone[-1].all()


def test_hull_decides_few_nodes_over_all_x_as_a_program_per_label(monkeypatch):
    """Over all x with m <= 4 nodes, the upper convex hull of the points (w_k, b_k) decides the labels
    before any program: a vertex by a point where it is verified to win, any other label by a mixture of
    the facet over it (weak duality). The answers equal one program per label (written in this test), with
    no program left for points in general position; equal constants (a bias-free read-out, whose points
    are flat) use the hull of the slopes; labels placed on a facet or an edge tie at best: unreachable."""
    import lightning_ssb.analysis.hull as hull

    calls = []
    real = hull._lp_wins_many
    monkeypatch.setattr(hull, "_lp_wins_many", lambda problems, box: calls.extend([box] * len(problems))
                        or real(problems, box))
    gen = torch.Generator().manual_seed(21)
    for k, m, flat in [(40, 2, False), (50, 3, False), (50, 4, False), (50, 2, True), (40, 4, True)]:
        w = torch.randn(k, m, generator=gen, dtype=torch.float64)
        b = torch.zeros(k, dtype=torch.float64) if flat else 2 * torch.randn(k, generator=gen, dtype=torch.float64)
        calls.clear()
        got = reachable_labels(w, b)
        margins = torch.tensor([margin_by_program(w, b, None, None, i) for i in range(k)])
        assert not ((margins > -1e-7) & (margins < 1e-7)).any() or flat   # flat: the inner labels tie at 0
        assert torch.equal(got, margins > 1e-9), (k, m, flat)
        assert 0 < int(got.sum()) < k
        assert calls == [], (k, m, flat, len(calls))
    # on a facet: label 3 is the mean of labels 0, 1, 2 (slopes and constants), so it only ever ties
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.0, 0.0], [0.2, 0.1]], dtype=torch.float64)
    b = torch.tensor([0.0, 0.0, 0.0, 0.0, -1.0], dtype=torch.float64)
    assert reachable_labels(w, b).tolist() == [True, True, True, False, False]
    b[3] = 1e-6   # lifted just above the facet: now it wins near x = 0
    assert reachable_labels(w, b).tolist() == [True, True, True, True, False]
    # equal constants, a label at the midpoint of an edge of the slopes' hull: it only ties
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.5, 0.5], [0.1, 0.0]], dtype=torch.float64)
    assert reachable_labels(w, torch.zeros(5, dtype=torch.float64)).tolist() == [True, True, True, False, False]
