"""Heads and subsets with the rest of the site silenced, against explicit masking."""

import pytest
import torch

from lightning_ssb.analysis import Readout, head_accuracies, subset_accuracy
from lightning_ssb.analysis.silencing import head_predictions


def setup(n=300, h=3, d=4, k=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h * d, generator=gen, dtype=torch.float64)
    r = Readout(torch.randn(k, h * d, generator=gen, dtype=torch.float64),
                torch.randn(k, generator=gen, dtype=torch.float64), x[:100].mean(0))
    return x, torch.randint(k, (n,), generator=gen), r


def masked_pred(x, r, nodes, ablation):
    keep = torch.zeros(x.shape[1], dtype=torch.bool)
    keep[nodes] = True
    fill = torch.zeros_like(x) if ablation == "zero" else r.mean.expand_as(x)
    return (torch.where(keep, x, fill) @ r.weight.T + r.bias).argmax(1)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_heads_and_subsets_match_masking(ablation):
    x, y, r = setup()
    preds = head_predictions(x, r, 3, ablation)
    for h in range(3):
        assert torch.equal(preds[h], masked_pred(x, r, list(range(4 * h, 4 * h + 4)), ablation))
    acc = head_accuracies(x, y, r, 3, ablation)
    assert acc[1].item() == pytest.approx((masked_pred(x, r, [4, 5, 6, 7], ablation) == y).double().mean().item())
    nodes = [0, 5, 11]
    expected = (masked_pred(x, r, nodes, ablation) == y).double().mean().item()
    assert subset_accuracy(x, y, r, nodes, ablation) == pytest.approx(expected)
    # All nodes: the site accuracy, whatever the ablation.
    full = ((x @ r.weight.T + r.bias).argmax(1) == y).double().mean().item()
    assert subset_accuracy(x, y, r, range(12), ablation) == pytest.approx(full)


def test_subset_errors():
    x, y, r = setup()
    with pytest.raises(ValueError, match="num_heads=5 must divide"):
        head_accuracies(x, y, r, 5)
    with pytest.raises(ValueError, match="nodes must lie in 0..11"):
        subset_accuracy(x, y, r, [12])
    with pytest.raises(ValueError, match="nodes is empty"):
        subset_accuracy(x, y, r, [])
    with pytest.raises(ValueError, match="ablation must be one of"):
        subset_accuracy(x, y, r, [0], "gaussian")
