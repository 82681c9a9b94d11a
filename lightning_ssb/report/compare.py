"""Across seeds (docs/method.md 5): runs that differ only in the seed, compared per site, read-out
family, granularity and epoch, from their disk results alone.

Spontaneous breaking shows as (a) statistics that agree within their spread, (b) a low identity
agreement (a unit's learned set L_u is not the same set in another seed) and (c) a high matched
agreement (the same sets exist, on other units: ``lightning_ssb.analysis.match_units``).

``compare_runs`` computes both tables; ``agreement_figure`` draws them; ``across_seeds`` is the
report's section; ``write_comparison`` writes the CSVs and figures of ``python -m lightning_ssb compare``.
"""

from __future__ import annotations

import csv
import html
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lightning_ssb import statistics as registry
from lightning_ssb.capture import has_heads, layer_of
from lightning_ssb.plots import new_figure
from lightning_ssb.report.load import NoResultsError, RunResults, Stat, epoch_label, load_runs


def shown() -> list[str]:
    """The statistics the printed table shows: every registered one with ``compare`` (built in:
    live_fraction, phi, mean_labels, coverage, acc_mean); the CSV has every one the runs logged."""
    return [s.name for s in registry.compared()]


AGREEMENT = ("identity_agreement", "matched_agreement")
STAT_COLUMNS = ("epoch", "site", "family", "granularity", "statistic")
PAIR_COLUMNS = ("epoch", "site", "family", "granularity", "run_a", "run_b", "live_a", "live_b", "identity_agreement",
                "matched_agreement", "identity_jaccard_mean", "matched_jaccard_mean", "fixed_fraction")


class IncomparableRunsError(NoResultsError):
    """Runs that cannot be compared (different sites, labels, no common epoch); names the folder."""


@dataclass
class SeedComparison:
    """The comparison of several runs: one statistics row per (epoch, site, family, granularity,
    statistic) with one value per run, and one agreement row per pair of runs and (epoch, site, family,
    granularity) that has learned label sets."""

    names: list[str]  # one column name per run (its run folder's name, or its run id when those clash)
    epochs: list[int]  # analysed in every run
    statistics: list[dict] = field(default_factory=list)  # STAT_COLUMNS + names + mean, std, spread
    pairs: list[dict] = field(default_factory=list)  # PAIR_COLUMNS
    notes: list[str] = field(default_factory=list)  # e.g. runs analysed at different read-out penalties

    def agreement(self, epoch: int, site: str, family: str, granularity: str) -> dict[str, list[float]]:
        """``{identity_agreement: [...], matched_agreement: [...]}`` over the pairs of runs."""
        rows = [p for p in self.pairs if (p["epoch"], p["site"], p["family"], p["granularity"]) ==
                (epoch, site, family, granularity)]
        return {q: [r[q] for r in rows] for q in AGREEMENT}

    def statistic(self, epoch: int, site: str, family: str, granularity: str, statistic: str) -> dict | None:
        return next((r for r in self.statistics if (r["epoch"], r["site"], r["family"], r["granularity"],
                                                    r["statistic"]) == (epoch, site, family, granularity, statistic)),
                    None)


def run_name(run: RunResults) -> str:
    """The run folder's name (``seed_0`` for ``runs/seeds/seed_0/ssb/<id>/``), else the run id."""
    parts = run.folder.resolve().parts
    return parts[-3] if len(parts) >= 3 and parts[-2] == "ssb" else run.run_id


def check_comparable(runs: list[RunResults], where: list[str] | None = None) -> list[int]:
    """The epochs every run analysed; raises IncomparableRunsError naming the first folder that differs
    from the first run in its sites, label names or label count, or that shares no epoch with it."""
    where = where or [str(r.folder) for r in runs]
    if len(runs) < 2:
        raise IncomparableRunsError(f"{where[0]}: holds one run only; compare needs two or more runs")
    first = runs[0]
    for run, folder in zip(runs[1:], where[1:], strict=True):
        if run.sites != first.sites:
            raise IncomparableRunsError(f"{folder}: its sites {run.sites} differ from those of {where[0]} "
                                        f"({first.sites})")
        if run.num_classes != first.num_classes or run.label_names != first.label_names:
            diff = (f"{run.num_classes} labels, {first.num_classes} there" if run.num_classes != first.num_classes
                    else "different label names")
            raise IncomparableRunsError(f"{folder}: its probe labels differ from those of {where[0]} ({diff})")
    epochs = sorted(set.intersection(*({e.epoch for e in r.epochs} for r in runs)))
    if not epochs:
        raise IncomparableRunsError(f"{where[1]}: no analysed epoch in common with {where[0]}")
    return epochs


GRAN_ORDER = {"node": 0, "head": 1}


def _site_order(run: RunResults, site: str) -> int:
    return run.sites.index(site) if site in run.sites else len(run.sites)


def _spread(values: list[float]) -> tuple[float, float, float]:
    """mean, sample standard deviation, max - min, over the defined values (NaN when none)."""
    v = np.array([x for x in values if not math.isnan(x)], dtype=float)
    if not len(v):
        return math.nan, math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, float(v.max() - v.min())


def compare_runs(runs: list[RunResults], where: list[str] | None = None) -> SeedComparison:
    """docs/method.md 5 across seeds for runs of the same sites and labels (``where``: how to name each
    run's folder in an error, default its ``ssb/<run id>/`` folder)."""
    from lightning_ssb.analysis import match_units  # here: the report itself loads without scipy's optimiser

    epochs = check_comparable(runs, where)
    names = [run_name(r) for r in runs]
    if len(set(names)) < len(names):
        names = [r.run_id for r in runs]
    cmp = SeedComparison(names=names, epochs=epochs)
    by_epoch = [{e.epoch: e for e in r.epochs} for r in runs]
    for epoch in epochs:
        results = [b[epoch] for b in by_epoch]
        keys = sorted({s for e in results for s in e.scalars if not s.null}, key=lambda s: (
            _site_order(runs[0], s.site), s.family, GRAN_ORDER.get(s.granularity, 9), s.statistic))
        for s in keys:
            values = [e.scalars.get(s, math.nan) for e in results]
            mean, std, spread = _spread(values)
            cmp.statistics.append({"epoch": epoch, "site": s.site, "family": s.family, "granularity": s.granularity,
                                   "statistic": s.statistic, **dict(zip(names, values, strict=True)), "mean": mean,
                                   "std": std, "spread": spread})
        units = list(dict.fromkeys((s.site, s.family, s.granularity) for s in keys if s.granularity in GRAN_ORDER))
        for site, family, gran in units:
            labels = [e.arrays.get(Stat(site, family, gran, "labels")) for e in results]
            for (i, a), (j, b) in itertools.combinations(enumerate(labels), 2):
                if a is None or b is None or a.shape != b.shape:
                    continue  # a run without this family's label sets: its statistics still compare
                m = match_units(a.bool(), b.bool())
                cmp.pairs.append({"epoch": epoch, "site": site, "family": family, "granularity": gran,
                                  "run_a": names[i], "run_b": names[j], "live_a": int(a.any(1).sum()),
                                  "live_b": int(b.any(1).sum()), "identity_agreement": m.identity_agreement,
                                  "matched_agreement": m.matched_agreement,
                                  "identity_jaccard_mean": m.identity_jaccard_mean,
                                  "matched_jaccard_mean": m.matched_jaccard_mean, "fixed_fraction": m.fixed_fraction})
    cmp.notes += penalty_differences(runs, names)
    return cmp


def penalty_differences(runs: list[RunResults], names: list[str]) -> list[str]:
    """One line per read-out part whose L2 penalty differs between the runs: statistics fitted at
    different penalties do not compare like with like (docs/method.md 3)."""
    notes = []
    for part, what in (("shared", "shared read-out"), ("node", "own single-node read-outs"),
                       ("group", "own head and subset read-outs")):
        values = [r.penalties.get(part) for r in runs]
        if len({v for v in values if v is not None}) > 1:
            listed = ", ".join(f"{n} {v:g}" if v is not None else f"{n} -" for n, v in zip(names, values, strict=True))
            notes.append(f"the runs used different L2 penalties for the {what} ({listed}): their statistics "
                         f"differ by the penalty as well as the seed")
    if any(not r.penalties for r in runs) and any(r.penalties for r in runs):
        notes.append("some runs recorded no read-out penalties (results of an earlier version): they may have "
                     "used other ones")
    return notes


def _fmt(v, digits: int = 3) -> str:
    if isinstance(v, str):
        return v
    return "nan" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def summary_rows(cmp: SeedComparison, epoch: int | None = None) -> tuple[list[str], list[list[str]]]:
    """The printed table: one row per site, family and granularity of ``epoch`` (default: the last
    common one): each shown statistic as mean +- std over runs, then the agreements (mean over pairs)."""
    epoch = cmp.epochs[-1] if epoch is None else epoch
    stats = shown()
    header = ["site", "family", "gran", *stats, "identity", "matched"]
    rows = []
    units = dict.fromkeys((r["site"], r["family"], r["granularity"]) for r in cmp.statistics
                          if r["epoch"] == epoch and r["granularity"] in ("node", "head"))
    for site, family, gran in units:
        row = [site, family, gran]
        for stat in stats:
            r = cmp.statistic(epoch, site, family, gran, stat)
            row.append("-" if r is None else f"{_fmt(r['mean'])}\u00b1{_fmt(r['std'])}")
        agree = cmp.agreement(epoch, site, family, gran)
        row += [_fmt(_spread(agree[q])[0]) if agree[q] else "-" for q in AGREEMENT]
        rows.append(row)
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def agreement_figure(cmp: SeedComparison, family: str, epoch: int | None = None):
    """Per granularity (rows): Phi of every run and live fraction of every run against the site (the
    statistics agree), and identity against matched agreement (identity low, matched high).

    Data: ``{"epoch", "family", "sites", "<gran>": {"phi": {run: [...]}, "live_fraction": {...},
    "identity_agreement": [mean per site], "matched_agreement": [...]}}``."""
    from lightning_ssb.report.figures import MissingData

    epoch = cmp.epochs[-1] if epoch is None else epoch
    grans = [g for g in ("node", "head") if cmp.statistic(epoch, *_any_site(cmp, epoch, family, g), "phi")]
    if not grans:
        raise MissingData(f"{family}: no node or head statistics in every run")
    sites = list(dict.fromkeys(r["site"] for r in cmp.statistics if r["epoch"] == epoch and r["family"] == family
                               and r["granularity"] in grans))
    ticks = [s if layer_of(s) is None else str(layer_of(s)) if has_heads(s) else f"{layer_of(s)} ({s.split('.', 2)[2]})"
             for s in sites]
    x = np.arange(len(sites))
    fig = new_figure(13, 3.4 * len(grans) + 0.9)
    axes = np.atleast_2d(fig.subplots(len(grans), 3, squeeze=False))
    data = {"epoch": epoch, "family": family, "sites": sites}
    colours = [f"C{i % 10}" for i in range(len(cmp.names))]
    for row, gran in zip(axes, grans, strict=True):
        data[gran] = {}
        for ax, stat, title in ((row[0], "phi", "\u03a6 = 1 \u2212 overlap"),
                                (row[1], "live_fraction", "live fraction")):
            per_run = {}
            for k, (name, colour) in enumerate(zip(cmp.names, colours, strict=True)):
                ys = [(cmp.statistic(epoch, s, family, gran, stat) or {}).get(name, math.nan) for s in sites]
                per_run[name] = ys
                ax.plot(x + (k - (len(cmp.names) - 1) / 2) * 0.08, ys, "o", color=colour, label=name, gid=name)
            data[gran][stat] = per_run
            ax.set_title(f"{gran}s: {title}, every run", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
            ax.set_gid(f"{gran}/{stat}")
        ax = row[2]
        for q, colour, offset, label in (("identity_agreement", "0.55", -0.2, "identity (same unit index)"),
                                         ("matched_agreement", "tab:red", 0.2, "matched (Hungarian on Jaccard)")):
            means = []
            for i, s in enumerate(sites):
                vals = [v for v in cmp.agreement(epoch, s, family, gran)[q] if not math.isnan(v)]
                means.append(float(np.mean(vals)) if vals else math.nan)
                if len(vals) > 1:  # several pairs: each pair a dot on its bar
                    ax.plot([i + offset] * len(vals), vals, ".", color="black", markersize=3)
            defined = [i for i, m in enumerate(means) if not math.isnan(m)]
            ax.bar(x[defined] + offset, [means[i] for i in defined], width=0.38, color=colour, label=label, gid=q)
            for i, m in enumerate(means):  # undefined (no unit live in either run): no bar, said so
                if math.isnan(m):
                    ax.text(i + offset, 0.02, "n/a", ha="center", va="bottom", fontsize=6, color="0.4", rotation=90,
                            gid=f"{q}/undefined")
            data[gran][q] = means
        ax.set_title(f"{gran}s: agreement of learned sets between runs", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_gid(f"{gran}/agreement")
        for a in row:
            a.set_xticks(x, ticks, fontsize=8)
            a.set_xlabel("layer", fontsize=8)
            a.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7, title="run", title_fontsize=7)
    axes[0][2].legend(fontsize=7, loc="upper left")
    when = epoch_label(epoch)
    fig.suptitle(f"Across {len(cmp.names)} seeds, {family} read-out, {when}: the statistics agree; a spontaneous "
                 f"breaking shows identity agreement below matched agreement", fontsize=10)
    return fig, data


def _any_site(cmp: SeedComparison, epoch: int, family: str, gran: str) -> tuple[str, str, str]:
    site = next((r["site"] for r in cmp.statistics if r["epoch"] == epoch and r["family"] == family
                 and r["granularity"] == gran), "")
    return site, family, gran


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows)


def write_comparison(paths, out=None) -> tuple[SeedComparison, Path, list[Path]]:
    """Load the runs at ``paths``, compare them and write ``<out>/seeds.csv`` (statistics side by side),
    ``<out>/agreement.csv`` (one row per pair of runs) and one figure per read-out family as PNG and SVG.
    ``out`` defaults to ``compare/`` in the folder the paths share."""
    paths = [Path(p) for p in paths]
    runs, where = [], []
    for p in paths:
        found = load_runs([p])
        runs += found
        where += [str(p) if len(found) == 1 else str(r.folder) for r in found]
    cmp = compare_runs(runs, where)
    if out is None:
        resolved = [p.resolve() for p in paths]
        out = (resolved[0] if len(resolved) == 1 else Path(os.path.commonpath(resolved))) / "compare"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "seeds.csv", [*STAT_COLUMNS, *cmp.names, "mean", "std", "spread"], cmp.statistics)
    write_csv(out / "agreement.csv", list(PAIR_COLUMNS), cmp.pairs)
    from lightning_ssb.report.figures import MissingData

    figures = []
    families = list(dict.fromkeys(r["family"] for r in cmp.statistics))
    for family in families:
        try:
            fig, _ = agreement_figure(cmp, family)
        except MissingData:
            continue
        for ext in ("png", "svg"):
            fig.savefig(out / f"across_seeds_{family}.{ext}", dpi=110)
        figures.append(out / f"across_seeds_{family}.png")
    return cmp, out, figures


def across_seeds(runs: list[RunResults], book):
    """The report's section: given two or more runs of the same sites and labels, the comparison of
    the last common epoch (table and one figure per family); one run: no section."""
    if len(runs) < 2:
        return None
    try:
        cmp = compare_runs(runs)
    except IncomparableRunsError as err:
        return "Across seeds", book.note(f"No comparison across seeds: {err}.")
    header, rows = summary_rows(cmp)
    epoch = cmp.epochs[-1]
    when = epoch_label(epoch)
    table = ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>\n")
    intro = (f"<p>{len(runs)} runs ({html.escape(', '.join(cmp.names))}), {when}. Statistics: mean \u00b1 sample "
             f"standard deviation over the runs. Identity: of the units live in either run, the fraction whose "
             f"learned set is the same in both (same unit index); matched: the same after matching units one to "
             f"one (Hungarian algorithm on Jaccard similarity); both are means over the pairs of runs. "
             f"Spontaneous breaking: equal statistics, identity well below matched.</p>\n")
    intro += "".join(book.note(n) for n in cmp.notes)
    figs = "".join(book.draw(f"across_seeds__{family}", agreement_figure, cmp, family,
                             title=f"across seeds, {family}",
                             caption=f"{family} read-out, {when}: \u03a6 and live fraction of every run per site "
                                     f"(left, middle), identity and matched agreement (right).")
                   for family in dict.fromkeys(r["family"] for r in cmp.statistics))
    return "Across seeds", intro + table + figs
