"""The monitor's figure helpers; they live in ``lightning_ssb.plots`` (the bottom layer, shared with the
report, which must load without Lightning) and are re-exported here for custom analyses."""

from lightning_ssb.plots import (
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
