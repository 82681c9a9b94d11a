"""Per-unit statistics, learned sets, confusion/field matrices and clusters (METHOD.md 4)."""

import numpy as np
import pytest
import torch

from lightning_ssb.analysis import (Readout, cluster_stats, confusion_matrices, label_stats, learned_labels,
                                    unit_report)


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


def test_learned_sets_by_hand():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([
        [0, 0, 1, 0, 2, 1],   # recalls 1, .5, .5; freq 3/6, 2/6, 1/6 -> all >= .5 and beat chance
        [0, 0, 0, 0, 0, 0],   # always 0: recall(0)=1 = P(p=0): does not beat chance -> empty
        [1, 2, 0, 2, 0, 1],   # no correct prediction -> empty
    ])
    learned = learned_labels(label_stats(pred, y, 3), theta=0.5)
    assert learned.tolist() == [[True, True, True], [False] * 3, [False] * 3]
    assert learned_labels(label_stats(pred, y, 3), theta=0.6).tolist()[0] == [True, False, False]


def test_clusters_by_hand():
    # B: labels 0,1 form a 2x2 block; 2 alone on the diagonal; 3 has no diagonal 1; one stray 1 at (3, 0).
    b = torch.tensor([[1, 1, 0, 0],
                      [1, 1, 0, 0],
                      [0, 0, 1, 0],
                      [1, 0, 0, 0]], dtype=torch.float64)
    st = cluster_stats((b * 10 + 1).unsqueeze(0), tau=0.5)   # 11 / 11 = 1 >= .5, 1 / 11 < .5
    assert st.count.tolist() == [2] and st.mean_size.tolist() == [1.5] and st.noise.tolist() == [1]
    # 0-1 and 1-2 are linked but 0-2 is not: greedy keeps {0, 1} and makes {2} its own cluster.
    chain = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.float64)
    st = cluster_stats(chain.unsqueeze(0), tau=0.5)
    assert st.count.tolist() == [2] and st.noise.tolist() == [7 - 4 - 1]
    # No positive field: no ones, no cluster.
    st = cluster_stats(-torch.ones(1, 3, 3), tau=0.3)
    assert st.count.tolist() == [0] and st.mean_size.tolist() == [0.0] and st.noise.tolist() == [0]


def test_cluster_greedy_matches_a_reference_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = rng.random((9, 9)) < 0.5
        diag = [i for i in range(9) if b[i, i]]
        sizes, used = [], set()
        for i in diag:  # direct transcription of METHOD.md 4
            if i in used:
                continue
            cl = [i]
            for j in diag:
                if j > i and j not in used and b[np.ix_(cl + [j], cl + [j])].all():
                    cl.append(j)
            used |= set(cl)
            sizes.append(len(cl))
        st = cluster_stats(torch.tensor(b, dtype=torch.float64).unsqueeze(0), tau=0.5)
        assert st.count.item() == len(sizes) and st.noise.item() == b.sum() - sum(s * s for s in sizes)


def test_unit_report_fields_are_class_means_of_the_unit_fields():
    gen = torch.Generator().manual_seed(3)
    n, h, d, k = 120, 2, 3, 4
    x, y = torch.randn(n, h * d, generator=gen, dtype=torch.float64), torch.arange(n) % k
    r = Readout(torch.randn(k, h * d, generator=gen, dtype=torch.float64), torch.zeros(k, dtype=torch.float64))
    node = unit_report(x, y, r, "node", units=[4])
    head = unit_report(x, y, r, "head", num_heads=h)
    for i in range(k):
        xi = x[y == i]
        assert torch.allclose(node.field[0, i], (xi[:, 4:5] * r.weight[:, 4]).mean(0))
        assert torch.allclose(head.field[1, i], (xi[:, 3:] @ r.weight[:, 3:].T).mean(0))
    assert node.predictions.shape == (1, n) and head.confusion.shape == (h, k, k)
    assert torch.equal(head.confusion.sum(2), torch.bincount(y, minlength=k).expand(h, k))
    with pytest.raises(ValueError, match="granularity must be"):
        unit_report(x, y, r, "layer")
