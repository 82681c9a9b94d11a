"""Loggers: a W&B logger that falls back to an offline run when there are no credentials."""

from lightning_ssb.loggers.wandb import WandbLogger, has_wandb_credentials

__all__ = ["WandbLogger", "has_wandb_credentials"]
