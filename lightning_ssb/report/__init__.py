"""The report of a run's symmetry breaking, built from the monitor's disk results alone (no W&B).

``write_report(run_dirs, out)`` writes one self-contained HTML file (figures embedded as PNG) and
every figure as PNG and SVG in ``<out stem>_figures/`` beside it. ``python -m lightning_ssb report``
is its command line.
"""

from lightning_ssb.report.build import build_report, default_out, write_report
from lightning_ssb.report.load import NoResultsError, RunResults, load_run, load_runs
from lightning_ssb.report.sections import SECTIONS

__all__ = ["write_report", "build_report", "default_out", "load_run", "load_runs", "RunResults",
           "NoResultsError", "SECTIONS"]
