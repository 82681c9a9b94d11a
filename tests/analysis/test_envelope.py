"""Envelopes against brute-force argmax, on hand-worked cases and random lines."""

import math

import pytest
import torch

from lightning_ssb.analysis import Readout, node_accuracies, node_predictions, upper_envelope
from lightning_ssb.analysis.envelope import envelope_label_mask, node_envelopes


def brute(x, w, b):
    """argmax of the K fields in float64 (lowest label on ties), whatever the inputs' dtype."""
    return (x.double().unsqueeze(-1) * torch.as_tensor(w).double() + torch.as_tensor(b).double()).argmax(-1)


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_three_lines_by_hand():
    # z0 = -x, z1 = 0, z2 = x - 1: 0 wins left of 0, 1 on (0, 1), 2 right of 1.
    env = upper_envelope(t(-1, 0, 1), t(0, 0, -1))
    assert env.labels.tolist() == [0, 1, 2]
    assert env.breaks.tolist() == [0.0, 1.0]
    assert env.tie_labels.tolist() == [0, 1]  # at a crossing the lower index wins, as in argmax
    x = t(-2, 0, 0.5, 1, 3)
    assert env.predict(x).tolist() == brute(x, t(-1, 0, 1), t(0, 0, -1)).tolist() == [0, 0, 1, 1, 2]


def test_third_line_through_a_crossing_wins_the_tie():
    # Lines 1 (x) and 2 (-x) cross at 0, where line 0 (z = 0, never strictly on top) ties them.
    w, b = t(0, 1, -1), t(0, 0, 0)
    env = upper_envelope(w, b)
    assert env.labels.tolist() == [2, 1]
    assert env.tie_labels.tolist() == [0]
    assert env.predict(t(-1, 0, 1)).tolist() == [2, 0, 1]
    assert brute(t(0), w, b).item() == 0


def test_parallel_and_duplicate_lines():
    # Same slope: the highest intercept wins everywhere; exact duplicates: the lowest index.
    env = upper_envelope(t(1, 1, 1), t(0, 2, 2))
    assert env.labels.tolist() == [1] and len(env.breaks) == 0
    env = upper_envelope(t(0, 0), t(3, 3))
    assert env.labels.tolist() == [0]


def test_single_label_and_k1():
    assert upper_envelope(t(0.5), t(-1)).labels.tolist() == [0]
    # Parallel lines: the higher one (label 0) wins for every x, so the envelope has one label.
    env = upper_envelope(t(2, 2), t(1, 0))
    assert env.labels.tolist() == [0]


def test_restriction_to_a_range():
    w, b = t(-1, 0, 1), t(0, 0, -1)
    assert upper_envelope(w, b, 0.2, 0.8).labels.tolist() == [1]
    env = upper_envelope(w, b, -1, 0.5)
    assert env.labels.tolist() == [0, 1] and env.breaks.tolist() == [0.0]
    on_break = upper_envelope(w, b, 1.0, 1.0)
    assert on_break.labels.tolist() == [1] and on_break.strict_labels.tolist() == []  # a tie: wins by index only
    env = node_envelopes(w[None], b[None])
    # over [1, 5] label 1 is the argmax only at x = 1 (tie with 2, lower index): in the argmax set, not in R_n
    assert envelope_label_mask(env, t(1.0), t(5.0), 3, strict=False).tolist() == [[False, True, True]]
    assert envelope_label_mask(env, t(1.0), t(5.0), 3).tolist() == [[False, False, True]]
    assert envelope_label_mask(env, t(0.5), t(0.5), 3).tolist() == [[False, True, False]]  # inside a piece


def test_bias_free_lines_through_zero_have_two_strict_winners():
    """Without a bias all K lines cross at x = 0, where label 0 wins the tie: it is not on the envelope
    (R_n holds the labels of largest and smallest slope only), but it is what the node outputs at 0."""
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(6, 384, generator=gen, dtype=torch.float64)   # 384 nodes of 6 lines each
    b = torch.zeros(384, 6, dtype=torch.float64)
    env = node_envelopes(w.T, b)
    lo, hi = torch.full((384,), -1.0, dtype=torch.float64), torch.full((384,), 1.0, dtype=torch.float64)
    strict = envelope_label_mask(env, lo, hi, 6)
    assert (strict.sum(1) == 2).all()
    assert torch.equal(strict, torch.zeros_like(strict).scatter_(1, w.T.argmax(1, keepdim=True), True)
                       .scatter_(1, w.T.argmin(1, keepdim=True), True))
    assert (envelope_label_mask(env, lo, hi, 6, strict=False)[:, 0]).all()   # the tie at 0 outputs label 0


def test_float32_activations_are_predicted_as_a_float64_argmax():
    """Fields that differ by float32's resolution: a float32 brute force gets thousands of pairs wrong."""
    gen = torch.Generator().manual_seed(0)
    n, d, k = 640, 384, 64
    x = torch.randn(n, d, generator=gen)
    w = 1.0 + 1e-6 * torch.randn(k, d, generator=gen)
    b = 1e-6 * torch.randn(k, generator=gen)
    pred = node_predictions(x, Readout(w, b))
    assert torch.equal(pred, brute(x.T, w.T.unsqueeze(1), b))
    in_float32 = (x.T.unsqueeze(2) * w.T.unsqueeze(1) + b).argmax(2)
    assert (in_float32 != pred).sum() > 1000


@pytest.mark.parametrize("k", [1, 2, 3, 7, 40])
def test_random_integer_lines_with_many_ties(k):
    gen = torch.Generator().manual_seed(k)
    x = torch.arange(-40, 41, dtype=torch.float64) / 4  # hits many integer/half-integer crossings exactly
    for _ in range(100):
        w = torch.randint(-3, 4, (k,), generator=gen).double()
        b = 2.0 * torch.randint(-3, 4, (k,), generator=gen).double()
        env = upper_envelope(w, b)
        assert env.predict(x).tolist() == brute(x, w, b).tolist()
        assert (env.breaks[1:] > env.breaks[:-1]).all()


@pytest.mark.parametrize("shape", [(50, 5, 3), (300, 17, 64), (200, 9, 1000)])
def test_node_predictions_match_brute_force(shape):
    n, d, k = shape
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=gen)
    x[:, 0] = 0.7                                                   # a constant node
    w = torch.randn(k, d, generator=gen)
    w[:, 1] = 0.0                                                   # a node with only parallel lines
    readout = Readout(w, torch.randn(k, generator=gen), x.mean(0))
    for ablation in ("zero", "mean"):
        b = readout.node_bias(ablation)                             # [D, K]
        expected = brute(x.T, readout.weight.T.unsqueeze(1), b.unsqueeze(1))
        assert torch.equal(node_predictions(x, readout, ablation), expected)
    y = torch.randint(k, (n,), generator=gen)
    acc = node_accuracies(x, y, readout)
    assert torch.allclose(acc, (brute(x.T, w.T.unsqueeze(1), readout.bias) == y).double().mean(1))


def test_mean_ablation_bias_is_the_silenced_mean():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(20, 4, generator=gen), torch.randn(3, 4, generator=gen), torch.randn(3, generator=gen)
    r = Readout(w, b, x.mean(0))
    full = x.mean(0).repeat(20, 1)
    full[:, 2] = x[:, 2]
    assert torch.allclose(x[:, 2:3] * w[:, 2] + r.node_bias("mean")[2], full @ w.T + b, atol=1e-6)


def test_float_breakpoints_agree_with_argmax_at_vocabulary_size():
    gen = torch.Generator().manual_seed(1)
    k, d, n = 5000, 4, 3000
    readout = Readout(torch.randn(k, d, generator=gen), torch.randn(k, generator=gen))
    x = torch.randn(n, d, generator=gen) * 3
    expected = brute(x.T, readout.weight.T.unsqueeze(1), readout.bias)
    assert torch.equal(node_predictions(x, readout), expected)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="w and b"):
        upper_envelope(t(1, 2), t(1))
    with pytest.raises(ValueError, match="b contains"):
        upper_envelope(t(1, 2), t(1, math.nan))
    with pytest.raises(ValueError, match="x contains"):
        node_predictions(torch.tensor([[math.inf]]), Readout(torch.ones(2, 1), torch.zeros(2)))
    with pytest.raises(ValueError, match="readout.weight has 1 input nodes"):
        node_predictions(torch.zeros(3, 2), Readout(torch.ones(2, 1), torch.zeros(2)))
    with pytest.raises(ValueError, match="y has labels"):
        node_accuracies(torch.zeros(3, 1), torch.tensor([0, 1, 2]), Readout(torch.ones(2, 1), torch.zeros(2)))
    with pytest.raises(ValueError, match="readout.mean is None"):
        node_predictions(torch.zeros(3, 1), Readout(torch.ones(2, 1), torch.zeros(2)), "mean")
