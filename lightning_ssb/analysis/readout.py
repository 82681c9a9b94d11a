"""The linear read-out of a site (METHOD.md section 3): fitting it, and the fields it gives a node set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_ablation, check_features, check_labels

DEFAULT_L2 = 1e-3
DEFAULT_MAX_ITER = 100


@dataclass
class Readout:
    """A read-out z = weight @ x + bias from the D nodes of a site to K outputs.

    weight `[K, D]`, bias `[K]`, both on raw (unstandardised) activations, so that
    z_k = sum_n W[k, n] x_n + b_k is exactly METHOD.md's field.
    mean `[D]` is the probe-train mean of each node, used by mean ablation (None if unknown).
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor | None = None

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

    def subset_bias(self, nodes: Tensor, ablation: str = "zero") -> Tensor:
        """Effective bias `[K]` of the node set `nodes`: the silenced nodes contribute 0 or their mean."""
        check_ablation(ablation)
        if ablation == "zero":
            return self.bias
        mu = self._mean()
        return self.bias + self.weight @ mu - self.weight[:, nodes] @ mu[nodes]

    def fields(self, x: Tensor, nodes: Tensor | None = None, ablation: str = "zero") -> Tensor:
        """Fields `[N, K]` of the node set `nodes` (all nodes when None) on x `[N, D]`."""
        if nodes is None:
            return x @ self.weight.T + self.bias
        return x[:, nodes] @ self.weight[:, nodes].T + self.subset_bias(nodes, ablation)


def fit_readout(x: Tensor, y: Tensor, num_classes: int, l2: float = DEFAULT_L2,
                max_iter: int = DEFAULT_MAX_ITER, seed: int = 0, max_examples: int | None = None) -> Readout:
    """Multinomial logistic regression of y `[N]` on x `[N, D]`, full-batch L-BFGS (METHOD.md 3.1).

    Choices: the model is fitted on standardised nodes (each node centred and divided by its
    probe-train std; a constant node is only centred) and folded back to raw activations, so the
    L2 penalty `l2/2 * ||W_std||^2` (bias not penalised, added to the *mean* cross-entropy) is
    independent of each node's scale and L-BFGS is well conditioned. l2 = 1e-3 keeps the weights
    finite on separable data (late layers) while costing little accuracy. Starting from zero
    weights, the fit is deterministic; `seed` only draws the `max_examples` subset when N is larger.
    """
    check_features("x", x, 2)
    y = check_labels("y", y, x.shape[0], num_classes, require_all=False)
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    if max_examples is not None and x.shape[0] > max_examples:
        gen = torch.Generator().manual_seed(seed)
        keep = torch.randperm(x.shape[0], generator=gen)[:max_examples]
        x, y = x[keep], y[keep]
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    x = x.detach().to(dtype)
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    xs = (x - mean) / std

    k, d = num_classes, x.shape[1]
    w = torch.zeros(k, d, dtype=dtype, requires_grad=True)
    # Start the bias at the log prior: the exact optimum when the nodes carry no information.
    prior = torch.bincount(y, minlength=k).to(dtype).clamp_min(0.5) / len(y)
    b = prior.log().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=10,
                            tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, xs, w.T), y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        weight = w / std
        bias = b - weight @ mean
    return Readout(weight.detach(), bias.detach(), mean)
