"""``python -m lightning_ssb report RUN_DIR [RUN_DIR ...] [--out PATH]`` and
``python -m lightning_ssb compare RUN_DIR RUN_DIR [...] [--out DIR]``."""

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


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lightning_ssb compare",
        description="Compare runs that differ in the seed (docs/method.md 5, across seeds): per site, read-out family, "
                    "granularity and epoch, every statistic side by side with its spread, and the identity and "
                    "matched agreement of the units' learned label sets. Writes seeds.csv, agreement.csv and one "
                    "figure per family (PNG, SVG); prints the last common epoch.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folders (every ssb/<run id>/ below each is one run) or ssb/<run id>/ folders; "
                        "two runs or more in all")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the tables and figures; default: compare/ in the folder the runs share")
    p.add_argument("--epoch", type=int, default=None,
                   help="the epoch the printed table shows (-1: before training, -2: analyze); default: the last "
                        "common one")
    return p


def compare_main(argv: list[str] | None = None) -> int:
    from lightning_ssb.report.compare import format_table, summary_rows, write_comparison
    from lightning_ssb.report.load import epoch_label

    args = compare_parser().parse_args(argv)
    try:
        cmp, out, figures = write_comparison(args.run_dirs, args.out)
        if args.epoch is not None and args.epoch not in cmp.epochs:
            raise NoResultsError(f"{args.run_dirs[0]}: epoch {args.epoch} is not analysed in every run "
                                 f"(common: {cmp.epochs})")
    except NoResultsError as err:
        print(f"lightning_ssb: error: {err}", file=sys.stderr)
        return 1
    epoch = cmp.epochs[-1] if args.epoch is None else args.epoch
    when = epoch_label(epoch)
    print(f"{len(cmp.names)} runs ({', '.join(cmp.names)}), {when}: mean\u00b1std over runs; identity and "
          f"matched agreement of the learned sets, mean over pairs")
    print(format_table(*summary_rows(cmp, epoch)))
    for note in cmp.notes:
        print(f"note: {note}")
    print(f"tables: {out / 'seeds.csv'}, {out / 'agreement.csv'}")
    for fig in figures:
        print(f"figure: {fig} (and .svg)")
    return 0
