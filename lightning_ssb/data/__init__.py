"""Data: tokenizer, MLM masking, Wikipedia and FewRel data modules, shipped samples.

Batch format and data-module attributes: docs/ARCHITECTURE.md.
"""

from lightning_ssb.data.collate import ClassificationCollator
from lightning_ssb.data.fewrel import FewRelDataModule
from lightning_ssb.data.masking import MaskingCollator
from lightning_ssb.data.sampling import LengthGroupedBatchSampler
from lightning_ssb.data.tokenizer import ENTITY_MARKERS, load_tokenizer
from lightning_ssb.data.wikipedia import WikipediaDataModule

__all__ = [
    "ENTITY_MARKERS",
    "ClassificationCollator",
    "FewRelDataModule",
    "LengthGroupedBatchSampler",
    "MaskingCollator",
    "WikipediaDataModule",
    "load_tokenizer",
]
