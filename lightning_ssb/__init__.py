"""lightning_ssb: watch single-nodal spontaneous symmetry breaking inside BERT while it trains."""

__version__ = "0.1.0"
