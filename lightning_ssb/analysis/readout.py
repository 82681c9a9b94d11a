"""The linear read-out of a site (METHOD.md section 3): fitting it, and the fields it gives a node set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
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

    The fields and gradient are computed in x's precision (float32 for float32 activations) by torch,
    the L-BFGS steps by `scipy.optimize.minimize(method="L-BFGS-B")`, at most `max_iter` iterations.

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
    onehot = F.one_hot(y, k).to(dtype)
    # Start the bias at the log prior: the exact optimum when the nodes carry no information.
    prior = onehot.mean(0).clamp_min(0.5 / len(y))
    theta0 = torch.cat([torch.zeros(k * d, dtype=torch.float64), prior.log().double()]).numpy()

    def loss_and_grad(theta: np.ndarray):
        # Closed-form gradient of the penalised mean cross-entropy; float64 only in the optimiser.
        t = torch.from_numpy(theta).to(dtype)
        w, b = t[:k * d].view(k, d), t[k * d:]
        logp = torch.log_softmax(torch.addmm(b, xs, w.T), 1)
        loss = -logp.gather(1, y.unsqueeze(1)).mean() + 0.5 * l2 * (w * w).sum()
        g = logp.exp_().sub_(onehot).div_(len(y))
        grad = torch.cat([(g.T @ xs + l2 * w).flatten(), g.sum(0)])
        return float(loss), grad.double().numpy()

    # scipy's L-BFGS keeps its small vector algebra single-threaded (torch's two-loop recursion pays an
    # OpenMP round trip per 50k-element op, which dominates on a busy CPU); the matmuls stay in torch.
    res = minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-6, "ftol": 1e-10})
    sol = torch.from_numpy(res.x).to(dtype)
    w, b = sol[:k * d].view(k, d), sol[k * d:]
    weight = w / std
    bias = b - weight @ mean
    return Readout(weight, bias, mean)
