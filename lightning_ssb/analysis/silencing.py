"""Predictions and accuracies of node sets with the rest of the site silenced (docs/method.md 3.2-3.3).

Single nodes go through their envelopes (`envelope.py`); heads and arbitrary subsets through
matmuls over their own nodes only. Zero ablation leaves silenced nodes out of the sum; mean ablation
replaces them by the probe-train mean stored in the read-out (`Readout.mean`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_ablation, check_features, check_labels, check_readout
from .readout import Readout


def _as_nodes(nodes, dim: int) -> Tensor:
    nodes = torch.as_tensor(nodes, dtype=torch.long).flatten()
    if len(nodes) == 0:
        raise ValueError("nodes is empty: a subset needs at least one node")
    if int(nodes.min()) < 0 or int(nodes.max()) >= dim:
        raise ValueError(f"nodes must lie in 0..{dim - 1}, got [{int(nodes.min())}, {int(nodes.max())}]")
    return nodes


def _check_heads(num_heads: int, dim: int) -> int:
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the number of nodes D={dim}")
    return dim // num_heads


def subset_predictions(x: Tensor, readout: Readout, nodes, ablation: str = "zero") -> Tensor:
    """Prediction `[N]` of the node set `nodes` (indices into D) on x `[N, D]`, the rest silenced."""
    check_features("x", x, 2)
    check_readout(readout, x.shape[1])
    check_ablation(ablation)
    nodes = _as_nodes(nodes, x.shape[1])
    return readout.fields(x, nodes, ablation).argmax(1)


def subset_accuracy(x: Tensor, y: Tensor, readout: Readout, nodes, ablation: str = "zero") -> float:
    """Accuracy acc(S) of the node set S = `nodes` on x `[N, D]`, y `[N]`."""
    check_features("x", x, 2)
    y = check_labels("y", y, x.shape[0], readout.num_classes, require_all=False)
    return (subset_predictions(x, readout, nodes, ablation) == y).double().mean().item()


def head_predictions(x: Tensor, readout: Readout, num_heads: int, ablation: str = "zero") -> Tensor:
    """Prediction `[H, N]` of each head alone on x `[N, H*d]` (head h = nodes h*d .. h*d+d-1)."""
    check_features("x", x, 2)
    check_readout(readout, x.shape[1])
    check_ablation(ablation)
    d = _check_heads(num_heads, x.shape[1])
    return torch.stack([readout.fields(x, torch.arange(h * d, (h + 1) * d), ablation).argmax(1)
                        for h in range(num_heads)])


def head_accuracies(x: Tensor, y: Tensor, readout: Readout, num_heads: int, ablation: str = "zero") -> Tensor:
    """Accuracy `[H]` of each head alone on x `[N, H*d]`, y `[N]`."""
    check_features("x", x, 2)
    y = check_labels("y", y, x.shape[0], readout.num_classes, require_all=False)
    return (head_predictions(x, readout, num_heads, ablation) == y).double().mean(1)
