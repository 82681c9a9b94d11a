"""Loggers: a W&B logger that falls back to an offline run when there are no credentials."""

from lightning_ssb.loggers.wandb import WandbLogger, has_wandb_credentials
from lightning_ssb.loggers.wandb_records import WandbRunRecords, read_wandb_run

__all__ = ["WandbLogger", "WandbRunRecords", "has_wandb_credentials", "read_wandb_run"]
