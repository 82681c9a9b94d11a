"""``python -m lightning_ssb report RUN_DIR [RUN_DIR ...] [--out PATH]``."""

from __future__ import annotations

import argparse
import sys

from lightning_ssb.report.build import write_report
from lightning_ssb.report.load import NoResultsError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lightning_ssb report",
        description="Write one self-contained HTML report (figures embedded) of SSBMonitor results, plus every "
                    "figure as PNG and SVG beside it, from the disk results alone (no W&B needed).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run folder (every ssb/<run id>/ below it is read) or an ssb/<run id>/ folder")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="the HTML file to write (a folder gets report.html); default: <ssb/<run id>>/report.html "
                        "for one run, ./ssb_report.html for several. Figures go to <out stem>_figures/.")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        path = write_report(args.run_dirs, args.out)
    except NoResultsError as err:
        print(f"lightning_ssb: error: {err}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0
