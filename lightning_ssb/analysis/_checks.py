"""Input validation shared by the analysis functions: every error names the bad argument."""

from __future__ import annotations

import torch
from torch import Tensor

ABLATIONS = ("zero", "mean")


def check_features(name: str, x: Tensor, ndim: int) -> Tensor:
    """A floating tensor of `ndim` dims with only finite values (NaN/inf would poison every argmax)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no examples (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        mask = ~torch.isfinite(x)
        bad = mask.sum().item()
        where = ""
        if x.dim() >= 2:  # name the first unit (node) that has one: [N, ...] -> flat unit index
            unit = int(mask.reshape(x.shape[0], -1).any(0).nonzero()[0])
            where = f" (first at node {unit})"
        raise ValueError(f"{name} contains {bad} NaN or inf values{where}")
    return x


def check_labels(name: str, y: Tensor, n: int, num_classes: int, require_all: bool = True) -> Tensor:
    """Integer labels `[n]` in 0..K-1; with `require_all`, every class has an example (recall needs it)."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] to match its features, got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {y.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} has labels in [{lo}, {hi}], outside 0..{num_classes - 1} (num_classes={num_classes})")
    if require_all:
        counts = torch.bincount(y, minlength=num_classes)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            raise ValueError(
                f"{name} has no example of class {empty[:5].tolist()}{'...' if len(empty) > 5 else ''}: "
                f"every label in 0..{num_classes - 1} needs at least one (drop or remap empty classes)")
    return y.long()


def check_ablation(ablation: str) -> str:
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    return ablation


def check_readout(readout, dim: int, name: str = "readout") -> None:
    """The read-out must map `dim` nodes to its K outputs."""
    w, b = readout.weight, readout.bias
    if w.dim() != 2 or b.dim() != 1 or w.shape[0] != b.shape[0]:
        raise ValueError(f"{name}: weight must be [K, D] and bias [K], got {tuple(w.shape)} and {tuple(b.shape)}")
    if w.shape[1] != dim:
        raise ValueError(f"{name}.weight has {w.shape[1]} input nodes but the features have {dim}")
    for part, t in (("weight", w), ("bias", b)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}.{part} contains {(~torch.isfinite(t)).sum().item()} NaN or inf values")
