"""Per-unit statistics, learned sets, confusion/field matrices and clusters (docs/method.md 4)."""

import math

import numpy as np
import pytest
import torch

from lightning_ssb.analysis import (
    Readout,
    benjamini_hochberg,
    binomial_pvalues,
    cluster_stats,
    confusion_matrices,
    fit_node_lines,
    label_stats,
    learned_labels,
    unit_report,
)
from lightning_ssb.analysis.fit import FitSettings
from lightning_ssb.analysis.units import binary_cluster_stats, node_field_matrices


def test_label_stats_and_confusion_match_loops():
    gen = torch.Generator().manual_seed(0)
    u, n, k = 4, 200, 6
    pred, y = torch.randint(k, (u, n), generator=gen), torch.randint(k, (n,), generator=gen)
    st = label_stats(pred, y, k)
    conf = confusion_matrices(pred, y, k)
    for a in range(u):
        for i in range(k):
            in_i = y == i
            assert st.recall[a, i].item() == pytest.approx((pred[a][in_i] == i).double().mean().item())
            said_i = pred[a] == i
            prec = (y[said_i] == i).double().mean().item() if said_i.any() else 0.0
            assert st.precision[a, i].item() == pytest.approx(prec)
            for j in range(k):
                assert conf[a, i, j] == int(((y == i) & (pred[a] == j)).sum())
    assert torch.equal(conf.sum((1, 2)), torch.full((u,), n))


def test_learned_sets_without_the_test_by_hand():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([
        [0, 0, 1, 0, 2, 1],   # recalls 1, .5, .5
        [0, 0, 0, 0, 0, 0],   # always 0: recall(0) = 1
        [1, 2, 0, 2, 0, 1],   # no correct prediction -> empty
    ])
    learned = learned_labels(label_stats(pred, y, 3), theta=0.5, q=None)
    assert learned.tolist() == [[True, True, True], [True, False, False], [False] * 3]
    assert learned_labels(label_stats(pred, y, 3), theta=0.6, q=None).tolist()[0] == [True, False, False]


def binom_tail(k, n, p):
    """P(X >= k), X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))


def test_binomial_pvalues_match_the_summed_tail():
    gen = torch.Generator().manual_seed(4)
    y = torch.arange(60) % 3
    pred = torch.randint(3, (5, 60), generator=gen)
    pred[0] = y                                   # a perfect unit
    pred[1] = 2                                   # a constant unit: P(p = 2) = 1
    st = label_stats(pred, y, 3)
    p = binomial_pvalues(st)
    for u in range(5):
        for i in range(3):
            ref = binom_tail(int(st.hits[u, i]), 20, float(st.pred_freq[u, i]))
            assert p[u, i].item() == pytest.approx(ref, rel=1e-9, abs=1e-300)
    assert p[1, 2] == 1.0 and p[0, 0] < 1e-8


def test_benjamini_hochberg_by_hand():
    p = torch.tensor([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    # q = 0.05, m = 10: thresholds k * 0.005; p_(2) = 0.008 <= 0.010 is the largest k below its line
    assert benjamini_hochberg(p, 0.05).tolist() == [True, True] + [False] * 8
    # q = 0.45: k * 0.045; p_(7) = 0.074 <= 0.315, p_(10) = 0.216 <= 0.45 -> all
    assert benjamini_hochberg(p, 0.45).all()
    assert not benjamini_hochberg(torch.tensor([0.5, 0.9]), 0.05).any()
    assert benjamini_hochberg(p.view(2, 5), 0.05).shape == (2, 5)


def test_the_test_rejects_a_unit_that_splits_two_labels_by_chance():
    # Half of class 0 and half of class 1 predicted as their own label, independently of the label:
    # recall 0.5 on both, and the test sees no association.
    y = torch.arange(200) % 2
    pred = (torch.arange(200) // 2) % 2                     # 0,0,1,1,0,0,1,1,...: independent of y
    st = label_stats(pred.unsqueeze(0), y, 2)
    assert st.recall.tolist() == [[0.5, 0.5]]
    assert not learned_labels(st, 0.5, 0.05).any()
    assert learned_labels(st, 0.5, None).all()              # without the test, noise passes
    good = torch.where(torch.arange(200) < 180, y, 1 - y)   # 90% right: significant
    assert learned_labels(label_stats(good.unsqueeze(0), y, 2), 0.5, 0.05).all()


def test_clusters_by_hand():
    # B: labels 0,1 form a 2x2 block; 2 alone on the diagonal; 3 has no diagonal 1; one stray 1 at (3, 0).
    b = torch.tensor([[1, 1, 0, 0],
                      [1, 1, 0, 0],
                      [0, 0, 1, 0],
                      [1, 0, 0, 0]], dtype=torch.float64)
    st = binary_cluster_stats(b.unsqueeze(0))
    assert st.count.tolist() == [2] and st.mean_size.tolist() == [1.5] and st.noise.tolist() == [1]
    # 0-1 and 1-2 are linked but 0-2 is not: greedy keeps {0, 1} and makes {2} its own cluster.
    chain = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.float64)
    st = binary_cluster_stats(chain.unsqueeze(0))
    assert st.count.tolist() == [2] and st.noise.tolist() == [7 - 4 - 1]
    # Fields: rows are centred first. Row i of F = 10 * B[i] - 4: centred, a 1 of B becomes
    # 10 - 10 * (ones in the row) / 4 and a 0 becomes -10 * (ones in the row) / 4.
    fields = (b * 10 - 4).unsqueeze(0)
    centred = b * 10 - 10 * b.sum(1, keepdim=True) / 4   # max 7.5 (row 2); tau 0.5: entries >= 3.75
    expected = (centred >= 0.5 * centred.max()).unsqueeze(0)
    assert torch.equal(binary_cluster_stats(expected).count, cluster_stats(fields, tau=0.5).count)
    assert expected[0].tolist() == [[True, True, False, False], [True, True, False, False],
                                    [False, False, True, False], [True, False, False, False]]
    # All fields equal (a unit that says nothing): no ones, no cluster.
    st = cluster_stats(-torch.ones(1, 3, 3), tau=0.3)
    assert st.count.tolist() == [0] and st.mean_size.tolist() == [0.0] and st.noise.tolist() == [0]


def test_own_read_out_clusters_are_not_erased_by_the_intercepts():
    """An own node's fields sit near its intercepts, about log(1/K) < 0 for every label: without
    centring every row, no entry passed the threshold and every own-family cluster count was 0."""
    gen = torch.Generator().manual_seed(0)
    n, k = 800, 4
    y = torch.arange(n) % k
    # a weak node: its mean rises with the label by 0.3 of its spread
    x = (y.double() * 0.3 + torch.randn(n, generator=gen, dtype=torch.float64)).unsqueeze(1)
    lines = fit_node_lines(x, y, k, bins=None, settings=FitSettings(l2=1e-3))
    means = torch.stack([x[y == i].mean(0) for i in range(k)])
    fields = node_field_matrices(means, lines.slope.T, intercept=lines.intercept)
    assert fields.max() < 0            # every raw field is near log(1/4): max-normalising it finds no ones
    st = cluster_stats(fields, tau=0.3)
    # centred, each class's highest field is its own label's at the two ends (0 and 3): two clusters at least
    centred = fields[0] - fields[0].mean(1, keepdim=True)
    assert centred[0].argmax() == 0 and centred[3].argmax() == 3
    assert st.count.item() >= 2
    # shift-invariance: adding a constant to every field of one example class leaves the statistics alone
    shifted = fields + torch.arange(k, dtype=torch.float64).view(1, k, 1) * 5.0
    assert torch.equal(cluster_stats(shifted, 0.3).count, st.count)


def test_cluster_greedy_matches_a_reference_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = rng.random((9, 9)) < 0.5
        diag = [i for i in range(9) if b[i, i]]
        sizes, used = [], set()
        for i in diag:  # direct transcription of docs/method.md 4
            if i in used:
                continue
            cl = [i]
            for j in diag:
                if j > i and j not in used and b[np.ix_(cl + [j], cl + [j])].all():
                    cl.append(j)
            used |= set(cl)
            sizes.append(len(cl))
        st = binary_cluster_stats(torch.tensor(b).unsqueeze(0))
        assert st.count.item() == len(sizes) and st.noise.item() == b.sum() - sum(s * s for s in sizes)


def test_unit_report_fields_are_class_means_of_the_unit_fields():
    gen = torch.Generator().manual_seed(3)
    n, h, d, k = 120, 2, 3, 4
    x, y = torch.randn(n, h * d, generator=gen, dtype=torch.float64), torch.arange(n) % k
    r = Readout(torch.randn(k, h * d, generator=gen, dtype=torch.float64), torch.randn(k, generator=gen,
                dtype=torch.float64), x.mean(0))
    node = unit_report(x, y, r, "node", units=[4])
    head = unit_report(x, y, r, "head", num_heads=h)
    mean_node = unit_report(x, y, r, "node", units=[4], ablation="mean")
    mu = x.mean(0)
    for i in range(k):
        xi = x[y == i]   # the field of the unit alone, its bias included (docs/method.md 4)
        assert torch.allclose(node.field[0, i], (xi[:, 4:5] * r.weight[:, 4]).mean(0) + r.bias)
        assert torch.allclose(head.field[1, i], (xi[:, 3:] @ r.weight[:, 3:].T).mean(0) + r.bias)
        silenced = r.weight @ mu - r.weight[:, 4] * mu[4]   # the other nodes at their mean
        assert torch.allclose(mean_node.field[0, i], (xi[:, 4:5] * r.weight[:, 4]).mean(0) + r.bias + silenced)
    assert node.predictions.shape == (1, n) and head.confusion.shape == (h, k, k)
    assert torch.equal(head.confusion.sum(2), torch.bincount(y, minlength=k).expand(h, k))
    with pytest.raises(ValueError, match="granularity must be"):
        unit_report(x, y, r, "layer")
