"""The two read-out families of docs/method.md 3 as one interface: what a node, a head or a subset outputs.

- ``shared``: the unit's own contribution to one read-out of the whole site (bias-free by default);
  silenced nodes leave the sum (zero ablation) or stay at their probe-train mean (mean ablation).
- ``own``: a read-out fitted on the unit alone, with a bias (K lines for one node; a linear map
  from the head's d nodes, or a subset's m nodes).

Either way a node is K lines in its activation (`NodeLines`) and a head a linear map from its d
nodes (`HeadMaps`), so everything downstream (envelopes, hull, learned sets) is family-blind.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .envelope import envelope_label_mask, envelope_predict, node_envelopes
from .fit import FitSettings, fit_groups, fit_node_lines
from .readout import Readout

FAMILIES = ("own", "shared")
_HEAD_CHUNK_ELEMENTS = 1 << 24  # bounds the [N, K] fields computed at once for head predictions


@dataclass
class NodeLines:
    """Every node's K field lines z_k(x) = slope[n, k] x + intercept[n, k]: slope, intercept `[D, K]`."""

    slope: Tensor
    intercept: Tensor

    @cached_property
    def envelopes(self):
        """The D upper envelopes, built once: a site's predictions and both hull ranges read them."""
        return node_envelopes(self.slope, self.intercept)

    def predict(self, x: Tensor) -> Tensor:
        """Prediction `[D, N]` of each node alone on x `[N, D]`, exactly via its upper envelope."""
        return envelope_predict(self.envelopes, x, self.slope.contiguous(), self.intercept.contiguous())

    def hull(self, lo: Tensor | None, hi: Tensor | None) -> Tensor:
        """R_n `[D, K]` bool: labels on node n's envelope over [lo[n], hi[n]] (all x when None)."""
        d, k = self.slope.shape
        lo = torch.full((d,), -torch.inf, dtype=torch.float64) if lo is None else lo
        hi = torch.full((d,), torch.inf, dtype=torch.float64) if hi is None else hi
        return envelope_label_mask(self.envelopes, lo, hi, k)


@dataclass
class HeadMaps:
    """Every head's linear map to the K fields: weight `[H, K, d]`, bias `[H, K]` (head h reads nodes
    h*d .. h*d+d-1 of the site)."""

    weight: Tensor
    bias: Tensor

    def fields(self, x: Tensor, head: int) -> Tensor:
        h, k, d = self.weight.shape
        return x[:, head * d:(head + 1) * d] @ self.weight[head].T + self.bias[head]

    def predict(self, x: Tensor) -> Tensor:
        """Prediction `[H, N]` of each head alone on x `[N, H*d]`."""
        h = self.weight.shape[0]
        x = x.to(self.weight.dtype)
        return torch.stack([self.fields(x, i).argmax(1) for i in range(h)])


def shared_units(readout: Readout, num_heads: int, ablation: str) -> tuple[NodeLines, HeadMaps]:
    """Nodes and heads of the shared family: columns of the site's read-out and their effective bias
    (the read-out's bias if it has one, plus the silenced nodes' mean under mean ablation)."""
    k, dim = readout.weight.shape
    d = dim // num_heads
    lines = NodeLines(readout.weight.T.contiguous(), readout.node_bias(ablation).contiguous())
    maps = HeadMaps(readout.weight.view(k, num_heads, d).permute(1, 0, 2).contiguous(),
                    readout.head_bias(num_heads, ablation))
    return lines, maps


def own_units(x: Tensor, y: Tensor, num_classes: int, num_heads: int, settings: FitSettings,
              bins: int | None, heads: bool = True) -> tuple[NodeLines, HeadMaps | None]:
    """Nodes and heads of the own family, fitted on x `[N, D]`, y `[N]`: every node's K lines on
    binned statistics (`fit_node_lines`), every head's map in one batched fit (`fit_groups`)."""
    slope, intercept = fit_node_lines(x, y, num_classes, bins, settings)
    maps = None
    if heads:
        n, dim = x.shape
        d = dim // num_heads
        groups = x.view(n, num_heads, d).transpose(0, 1).contiguous()  # [H, N, d]
        weight, bias = fit_groups(groups, y, num_classes, True, settings)
        maps = HeadMaps(weight, bias)
    return NodeLines(slope, intercept), maps
