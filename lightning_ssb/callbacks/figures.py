"""The monitor's figure helpers; they live in ``lightning_ssb.report.plots`` (shared with the report,
which must load without Lightning) and are re-exported here for the monitor and custom analyses."""

from lightning_ssb.report.plots import (
    MAX_NAME_CHARS,
    MAX_TICK_LABELS,
    crossover,
    envelope,
    heatmap,
    matrices,
    new_figure,
    short_name,
    tick_fontsize,
    to_png,
)

__all__ = ["MAX_NAME_CHARS", "MAX_TICK_LABELS", "crossover", "envelope", "heatmap", "matrices", "new_figure",
           "short_name", "tick_fontsize", "to_png"]
