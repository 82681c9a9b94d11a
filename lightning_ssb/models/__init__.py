"""LightningModules for the two training stages."""

from lightning_ssb.models.architecture import BertArchitecture
from lightning_ssb.models.classifier import SequenceClassifier
from lightning_ssb.models.mlm import MLMModule
from lightning_ssb.models.optim import OptimizerConfig

__all__ = ["BertArchitecture", "MLMModule", "OptimizerConfig", "SequenceClassifier"]
