"""The linear read-out of a site (docs/method.md section 3): fitting it, and the fields it gives a node set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_ablation, check_features, check_labels
from .fit import DEFAULT_CONST_TOL, DEFAULT_GTOL, DEFAULT_L2, DEFAULT_MAX_ITER, DTYPE, FitSettings, fit_groups
from .optim import FitReport


@dataclass
class Readout:
    """A read-out z = weight @ x + bias from the D nodes of a site to K outputs.

    weight `[K, D]`, bias `[K]`, both on raw (unstandardised) activations, so that
    z_k = sum_n W[k, n] x_n + b_k is exactly docs/method.md's field.
    mean `[D]` is the probe-train mean of each node, used by mean ablation (None if unknown);
    report says how the fit ended (None for a read-out built by hand).
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor | None = None
    report: FitReport | None = None

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def _mean(self) -> Tensor:
        if self.mean is None:
            raise ValueError("readout.mean is None: mean ablation needs the probe-train mean of each node "
                             "(fit_readout sets it; or pass Readout(weight, bias, mean=x_train.mean(0)))")
        return self.mean

    def node_bias(self, ablation: str = "zero") -> Tensor:
        """Effective bias `[D, K]` of each node alone: b (zero ablation) or b + W mu - W[:, n] mu_n (mean)."""
        check_ablation(ablation)
        if ablation == "zero":
            return self.bias.expand(self.dim, -1)
        mu = self._mean()
        return (self.bias + self.weight @ mu).unsqueeze(0) - self.weight.T * mu.unsqueeze(1)

    def head_bias(self, num_heads: int, ablation: str = "zero") -> Tensor:
        """Effective bias `[H, K]` of each head alone (heads are consecutive blocks of D / H nodes)."""
        d = self.dim // num_heads
        return torch.stack([self.subset_bias(torch.arange(h * d, (h + 1) * d), ablation) for h in range(num_heads)])

    def subset_bias(self, nodes: Tensor, ablation: str = "zero") -> Tensor:
        """Effective bias `[K]` of the node set `nodes`: the silenced nodes contribute 0 or their mean."""
        check_ablation(ablation)
        if ablation == "zero":
            return self.bias
        mu = self._mean()
        return self.bias + self.weight @ mu - self.weight[:, nodes] @ mu[nodes]

    def fields(self, x: Tensor, nodes: Tensor | None = None, ablation: str = "zero") -> Tensor:
        """Fields `[N, K]` of the node set `nodes` (all nodes when None) on x `[N, D]`."""
        x = x.to(device=self.weight.device, dtype=self.weight.dtype)
        if nodes is None:
            return x @ self.weight.T + self.bias
        return x[:, nodes] @ self.weight[:, nodes].T + self.subset_bias(nodes, ablation)

    def cpu(self) -> Readout:
        """The same read-out with its tensors on the CPU."""
        return Readout(self.weight.cpu(), self.bias.cpu(), None if self.mean is None else self.mean.cpu(), self.report)


def fit_readout(x: Tensor, y: Tensor, num_classes: int, l2: float = DEFAULT_L2,
                max_iter: int = DEFAULT_MAX_ITER, seed: int = 0, max_examples: int | None = None,
                bias: bool = False, const_tol: float = DEFAULT_CONST_TOL, gtol: float = DEFAULT_GTOL,
                init: Readout | None = None, what: str = "shared read-out") -> Readout:
    """The shared read-out of a site (docs/method.md 3): multinomial logistic regression of y `[N]` on
    all D nodes x `[N, D]`, without a bias unless `bias`, in float64 on x's device (see `fit.py` for
    the standardisation, the penalty, constant nodes and convergence). `seed` only draws the
    `max_examples` subset when N is larger. The result's `mean` is the probe-train mean of each node
    (for mean ablation), its `report` how the fit ended; `init` warm-starts the fit.
    """
    check_features("x", x, 2)
    y = check_labels("y", y, x.shape[0], num_classes, require_all=False)
    settings = FitSettings(l2, max_iter, const_tol, gtol)
    if max_examples is not None and x.shape[0] > max_examples:
        gen = torch.Generator().manual_seed(seed)
        keep = torch.randperm(x.shape[0], generator=gen)[:max_examples].to(x.device)
        x, y = x[keep], y[keep.to(y.device)]
    start = None if init is None else (init.weight, init.bias)
    fit = fit_groups(x, y, num_classes, bias, settings, init=start, what=what)
    return Readout(fit.weight, fit.bias, x.to(DTYPE).mean(0), fit.report)
