"""Moved to ``lightning_ssb.results.render``; kept so that old imports work."""

from lightning_ssb.results.render import TABLE_COLUMNS, crossover_table, node_table, site_figures

__all__ = ["TABLE_COLUMNS", "crossover_table", "node_table", "site_figures"]
