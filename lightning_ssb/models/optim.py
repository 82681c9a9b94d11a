"""AdamW with linear warm-up then linear decay (the group's recipe, docs/method.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class OptimizerConfig:
    """AdamW and its learning-rate schedule.

    Args:
        lr: Peak learning rate (paper: 5e-5).
        weight_decay: Decoupled weight decay, not applied to biases and LayerNorm weights (paper: 0.01).
        betas: Adam betas.
        eps: Adam epsilon.
        warmup: Linear warm-up length: a fraction of all training steps if below 1, else a step count.
        schedule: ``"linear"`` (warm-up then linear decay to 0) or ``"constant"`` (warm-up then flat).
    """

    lr: float = 5e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup: float = 0.06
    schedule: str = "linear"

    def __post_init__(self) -> None:
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"model.optimizer.schedule: expected 'linear' or 'constant', got {self.schedule!r}")
        if self.lr <= 0 or self.warmup < 0:
            raise ValueError("model.optimizer: lr must be > 0 and warmup >= 0")


def configure_adamw(module: nn.Module, cfg: OptimizerConfig, total_steps: int, fused: bool = True) -> dict:
    """Lightning ``configure_optimizers`` return value for ``module`` over ``total_steps`` steps.

    ``fused`` picks PyTorch's fused AdamW kernel (same update, one pass over all parameters); it must be
    off under Lightning's mixed-precision plugin, which refuses gradient clipping with fused optimizers.
    """
    decay, no_decay = [], []
    for _name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        # the usual BERT rule: no decay on biases and LayerNorm gains
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        if not fused:
            raise ValueError("fused AdamW not requested")
        # the fused kernel does the same AdamW update in one pass over all parameters: on CPU about 6x
        # faster than the default per-tensor loop, which matters when a short-sequence step is cheap
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": linear_schedule(optimizer, cfg, total_steps),
                                                     "interval": "step"}}


def linear_schedule(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, total_steps: int):
    """Linear warm-up to ``cfg.lr``, then linear decay to 0 (or flat), as a step-wise ``LambdaLR``."""
    total = max(int(total_steps), 1)
    warmup = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(total - warmup, 1))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
