"""Order parameters and cross-seed matching (docs/method.md 5)."""

import math

import pytest
import torch

from lightning_ssb.analysis import jaccard_matrix, match_units, order_parameters


def sets(*rows, k=6):
    out = torch.zeros(len(rows), k, dtype=torch.bool)
    for u, r in enumerate(rows):
        out[u, list(r)] = True
    return out


def test_phi_on_constructed_cases():
    same = order_parameters(sets([0, 1], [0, 1], [0, 1]))
    assert same["phi"] == 0.0 and same["overlap"] == 1.0 and same["live"] == 3 and same["live_fraction"] == 1.0
    disjoint = order_parameters(sets([0], [1, 2], [3], []))
    assert disjoint["phi"] == 1.0 and disjoint["live"] == 3 and disjoint["live_fraction"] == 0.75
    assert disjoint["mean_labels"] == 1.0 and disjoint["coverage"] == pytest.approx(4 / 6)
    half = order_parameters(sets([0, 1], [1, 2]))                   # Jaccard 1/3
    assert half["phi"] == pytest.approx(2 / 3)
    for few in (sets([0], [], []), sets([], [])):
        p = order_parameters(few)
        assert math.isnan(p["phi"]) and math.isnan(p["overlap"])   # undefined, not 0
    acc = order_parameters(sets([0], [1]), torch.tensor([0.2, 0.5]))
    assert acc["acc_mean"] == pytest.approx(0.35) and acc["acc_max"] == 0.5


def test_jaccard_matches_python_sets():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(7, 9, generator=gen) < 0.3, torch.rand(5, 9, generator=gen) < 0.3
    jac = jaccard_matrix(a, b)
    for i in range(7):
        for j in range(5):
            sa, sb = set(a[i].nonzero().flatten().tolist()), set(b[j].nonzero().flatten().tolist())
            ref = len(sa & sb) / len(sa | sb) if sa | sb else 0.0
            assert jac[i, j].item() == pytest.approx(ref)


def test_matching_recovers_a_permutation():
    a = sets([0], [1, 2], [3], [4, 5], [])
    perm = torch.tensor([3, 0, 4, 1, 2])          # unit u of a is unit perm[u] of b
    b = torch.zeros_like(a)
    b[perm] = a
    m = match_units(a, b)
    assert m.assignment.tolist() == perm.tolist()
    assert m.matched_jaccard_mean == 1.0 and m.matched_agreement == 1.0
    assert m.identity_jaccard_mean == 0.0 and m.identity_agreement == 0.0   # same statistics, new assignment
    assert m.fixed_fraction == 0.0
    assert m.stats_a == m.stats_b
    with pytest.raises(ValueError, match="labels_a and labels_b must have the same shape"):
        match_units(a, b[:3])
    with pytest.raises(ValueError, match="labels_b must be a bool tensor"):
        match_units(a, b.long())


def test_agreement_counts_only_equal_non_empty_sets():
    # unit 0: same set in both; unit 1: {1,2} vs {1} (Jaccard .5, not agreement); unit 2 empty in both;
    # units 3 and 4: {3} in a, swapped with {4} in b.
    a = sets([0], [1, 2], [], [3], [4])
    b = sets([0], [1], [], [4], [3])
    m = match_units(a, b)
    # identity: live in either run = units 0, 1, 3, 4; equal sets only unit 0
    assert m.identity_agreement == pytest.approx(1 / 4)
    # matched: 3 <-> 4 swap found; pairs with a live side = 4; equal: 0, 3, 4
    assert m.matched_agreement == pytest.approx(3 / 4)
    # all empty: nothing is live, agreement is undefined rather than perfect
    none = match_units(sets([], []), sets([], []))
    assert math.isnan(none.identity_agreement) and math.isnan(none.matched_agreement)


def test_ties_that_make_the_matching_arbitrary_are_not_agreement():
    # a's unit {0, 1} ties between b's {0} and {1} (Jaccard .5 each): whichever the matching picks,
    # the sets differ, so it is no agreement; the two empty units never count.
    a = sets([0, 1], [], [])
    b = sets([0], [1], [])
    m = match_units(a, b)
    assert m.matched_agreement == 0.0 and m.identity_agreement == 0.0
