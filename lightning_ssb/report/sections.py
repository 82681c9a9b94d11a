"""The report's sections: each is one function ``(runs, book) -> (heading, html)`` (or None to leave
itself out), and ``SECTIONS`` lists them in page order. Adding a section (e.g. a comparison across
seeds) is writing one such function and appending it to ``SECTIONS``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable

from lightning_ssb import statistics as registry
from lightning_ssb.analysis.optim import unconverged_why
from lightning_ssb.capture import layer_of
from lightning_ssb.report import figures as F
from lightning_ssb.report.compare import across_seeds  # several runs of the same sites and labels
from lightning_ssb.report.html import Book
from lightning_ssb.report.load import RunResults, Stat
from lightning_ssb.results.keys import FAMILIES, HEADS_FIGURE

Section = Callable[[list[RunResults], Book], tuple[str, str] | None]


def _run_heading(run: RunResults, runs: list[RunResults]) -> str:
    return f"<h3>Run {html.escape(run.run_id)}</h3>\n" if len(runs) > 1 else ""


def _site_families(run: RunResults, book: Book, per: Callable[[str, str], str]) -> str:
    """``per(site, family)`` for every site and family of the run, with a note for absent families."""
    out = []
    families = run.families
    if not families:
        return book.note(f"{run.run_id}: no read-out family (own/shared) in the results.")
    for site in run.sites:
        out.append(f"<h4>{html.escape(site)}</h4>\n")
        for family in families:
            out.append(per(site, family))
    return "".join(out)


def _has_null(run: RunResults) -> bool:
    return any(e.nulls for e in run.epochs)


def _nulls_run(run: RunResults) -> str:
    """Which nulls ran at which states, e.g. ``train, both (start, epoch 1)``."""
    kinds = sorted({k for e in run.epochs for k in e.nulls})
    if not kinds:
        return "no"
    where = [e.name for e in run.epochs if e.nulls]
    return f"{', '.join(kinds)} ({'every state' if len(where) == len(run.epochs) else ', '.join(where)})"


def _fmt(v) -> str:
    return "undefined" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def overview(runs: list[RunResults], book: Book):
    rows = []
    for run in runs:
        states = ", ".join(str(e.epoch) if e.epoch >= 0 else e.name for e in run.epochs)
        k = run.num_classes
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in (
            run.run_id, run.folder, states, ", ".join(run.sites) or "-", ", ".join(run.families) or "-",
            k if k is not None else "?", f"{1 / k:.4f}" if k else "?", _nulls_run(run))) + "</tr>")
    table = ("<table><tr><th>run</th><th>folder</th><th>analysed states</th><th>sites</th><th>read-outs</th>"
             "<th>labels K</th><th>chance 1/K</th><th>nulls run</th></tr>" + "".join(rows) + "</table>\n")
    for run in runs:
        for e in run.epochs:
            for site, c in (e.meta.get("convergence") or {}).items():
                if c.get("unconverged"):
                    book.note(f"{run.run_id}, {e.name}, {site}: {int(c['unconverged'])} read-out fits stopped before "
                              f"converging (largest final gradient {c['grad_max']:.2g}): {unconverged_why([c])}.")
    notes = "".join(book.note(f"{run.run_id}: the {family} read-out is not in the results; its figures are "
                              f"left out.") for run in runs for family in FAMILIES if family not in run.families)
    notes += "".join(book.note(f"{run.run_id}: no null (permuted probe labels) in the results: the statistics are "
                               f"shown without the level chance reaches.") for run in runs if not _has_null(run))
    notes += "".join(book.note(f"{run.run_id}: {n}") for run in runs for n in run.notes)
    notes += "".join(book.note(f"{run.run_id}: {n}") for run in runs for e in run.epochs for n in e.notes)
    return "Runs", table + notes


def statistics(runs: list[RunResults], book: Book):
    body = []
    for run in runs:
        body.append(_run_heading(run, runs))
        kinds = sorted({k for e in run.epochs for k in e.nulls}, reverse=True)
        nulls = ("Solid: the real probe labels. " + " ".join(
            ("Dashed, hollow: " if k == "train" else "Dotted, crosses: ") + F.NULL_SENTENCES[k] for k in kinds) + " "
            if kinds else "No null in these results. ")
        body.append(_site_families(run, book, lambda site, fam, run=run, nulls=nulls: book.draw(
            f"{run.run_id}__{site}__{fam}__statistics", F.statistics_over_epochs, run, site, fam,
            title=f"{site}, {fam}: statistics by epoch",
            caption=f"{site}, {fam} read-out. {nulls}A unit is live when it has at least one learned label; "
                    f"'init' is the architecture at a random initialisation (the symmetric state), 'start' the "
                    f"model training started from.")))
    return "Symmetry breaking by epoch (with the nulls)", "".join(body)


NULL_NAMES = {"train": "null: probe-train permuted", "both": "null: both splits permuted"}


def table_rows() -> list[tuple[str, str | None, str]]:
    """``(statistic, null, row name)`` of the deepest layer's table: every registered statistic with
    ``table`` (its panel title as the name), then those with ``table_nulls`` under each null."""
    entries = registry.in_table()
    rows = [(s.name, None, s.plot.title if s.plot else s.name) for s in entries]
    return rows + [(s.name, null, f"{s.plot.title if s.plot else s.name}, {NULL_NAMES[null]}")
                   for s in entries if s.table_nulls for null in ("train", "both")]


def states_side_by_side(runs: list[RunResults], book: Book):
    """The deepest layer's statistics at random init, the start and every epoch, in one table per site."""
    body = []
    for run in runs:
        deepest = max((layer_of(s) for s in run.sites if layer_of(s) is not None), default=None)
        sites = [s for s in run.sites if layer_of(s) == deepest]
        if not sites:
            continue
        body.append(_run_heading(run, runs))
        for site in sites:
            head = ("<tr><th>read-out</th><th>units</th><th>statistic</th>"
                    + "".join(f"<th>{html.escape(e.name)}</th>" for e in run.epochs) + "</tr>")
            rows = []
            for fam in run.families:
                for gran in ("node", "head"):
                    for stat, null, name in table_rows():
                        values = [e.scalars.get(Stat(site, fam, gran, stat, null)) for e in run.epochs]
                        if all(v is None for v in values):
                            continue
                        cells = "".join(f"<td>{'-' if v is None else _fmt(v)}</td>" for v in values)
                        rows.append(f"<tr><td>{fam}</td><td>{gran}s</td><td>{name}</td>{cells}</tr>")
            if rows:
                body.append(f"<h4>{html.escape(site)}</h4><table>{head}{''.join(rows)}</table>\n")
    if not body:
        return None
    return "The deepest layer at each state: random init, start, epochs", "".join(body)


def penalties(runs: list[RunResults], book: Book):
    """The run's read-out penalties (how each was set) and how the statistics move with them."""
    body = []
    for run in runs:
        pen = run.penalties
        if not pen and not any(e.sensitivity for e in run.epochs):
            continue
        body.append(_run_heading(run, runs))
        if pen:
            src = pen.get("source") or {}
            cells = "".join(f"<td>{pen[k]:g} ({src.get(k, '?')})</td>" if pen.get(k) is not None else "<td>-</td>"
                            for k in ("shared", "node", "group"))
            body.append("<p>Chosen once, at the first analysed state, and kept for every state of the run: "
                        "\"cv\" is the lowest held-out log-loss of k-fold cross-validation on probe-train (probe-test "
                        "never seen), pooled over the units of the watched sites; \"config\" a number set in the "
                        "config.</p><table><tr><th>shared read-out</th><th>own: single nodes</th>"
                        f"<th>own: heads and subsets</th></tr><tr>{cells}</tr></table>\n")
        sites = sorted({r["site"] for e in run.epochs for r in e.sensitivity if r.get("site")})
        for site in sites:
            body.append(book.draw(f"{run.run_id}__{site}__sensitivity", F.sensitivity_curves, run, site,
                                  title=f"{site}: sensitivity to the penalty",
                                  caption="Each family's read-outs refitted at every penalty of a decade grid, at "
                                          "random init, the start and the last epoch. Where the curves are flat "
                                          "around the wide band (the run's penalty), a conclusion does not depend "
                                          "on the penalty."))
    if not body:
        return None
    return "Read-out penalties and the sensitivity to them", "".join(body)


def head_accuracy(runs: list[RunResults], book: Book):
    body = []
    for run in runs:
        body.append(_run_heading(run, runs))
        for fam in run.families:
            body.append(book.draw(f"{run.run_id}__head_accuracy__{fam}", F.head_accuracy_grid, run, fam,
                                  title=f"single-head accuracy, {fam}",
                                  caption=f"Accuracy of each attention head alone ({fam} read-out), layers x "
                                          f"heads, one panel per analysed epoch, one colour scale."))
    return "Single-head accuracy (layers x heads)", "".join(body)


def learned_labels(runs: list[RunResults], book: Book):
    body = []
    for run in runs:
        body.append(_run_heading(run, runs))

        def per(site, fam, run=run):
            shape = run.site_shape(site)
            grans = ("node",) if shape is not None and shape[0] == 1 else ("node", "head")  # 1 head: the layer
            return "".join(book.draw(
                f"{run.run_id}__{site}__{fam}__learned_{gran}", F.learned_label_matrix, run, site, fam, gran,
                title=f"{site}, {fam}: learned labels per {gran}",
                caption=f"Learned label sets L_u of the live {gran}s in the last epoch: a block per group "
                        f"of units that learned the same labels; separate blocks along the diagonal are "
                        f"broken symmetry.") for gran in grans)
        body.append(_site_families(run, book, per))
    return "Learned labels in the last epoch (units x labels)", "".join(body)


def crossover_section(runs: list[RunResults], book: Book):
    body = []
    for run in runs:
        body.append(_run_heading(run, runs))
        body.append(_site_families(run, book, lambda site, fam, run=run: book.draw(
            f"{run.run_id}__{site}__{fam}__crossover", F.crossover_curve, run, site, fam,
            title=f"{site}, {fam}: crossover",
            caption="Random node subsets of size m: accuracy, the random-guess level 1/|R_S| over the "
                    "outputs S can reach, and the cooperation ratio (learned labels of S over those of its "
                    "nodes; above 1 the nodes cooperate).")))
    return "Crossover in the number of nodes", "".join(body)


def hull_bound(runs: list[RunResults], book: Book):
    body = []
    for run in runs:
        body.append(_run_heading(run, runs))
        for fam in run.families:
            body.append(book.draw(f"{run.run_id}__hull_bound__{fam}", F.accuracy_vs_bound, run, fam,
                                  title=f"accuracy against the hull bound, {fam}",
                                  caption="Each point is a node: its accuracy against the bound from the labels on "
                                          "the upper envelope of its K fields. Points on the line reach the "
                                          "bound."))
    return "Node accuracy against the convex-hull bound", "".join(body)


def best_nodes(runs: list[RunResults], book: Book):
    body = []
    for run in runs:
        body.append(_run_heading(run, runs))
        body.append(_site_families(run, book, lambda site, fam, run=run: book.draw(
            f"{run.run_id}__{site}__{fam}__best_node", F.best_node_matrices, run, site, fam,
            title=f"{site}, {fam}: best node",
            caption="The most accurate node: its mean fields per true label (left) and where its "
                    "predictions go (right); a learned label is a bright diagonal cell.")))
    return "The best nodes: field and confusion matrices", "".join(body)


def best_node_labels(runs: list[RunResults], book: Book):
    """What the best nodes learned, by name: for the most accurate nodes of each site and family in the
    last epoch, the labels (relations, or tokens for MLM) in their learned sets."""
    body = []
    for run in runs:
        names = run.label_names
        e = run.last
        rows = []
        for site in run.sites:
            shape = run.site_shape(site)
            for fam in run.families:
                best = e.best.get((site, fam))
                labels = e.arrays.get(Stat(site, fam, "node", "labels"))
                if not best or "nodes" not in best or labels is None:
                    continue
                for rank, node in enumerate(best["nodes"].tolist()):
                    learned = labels[node].nonzero().flatten().tolist()
                    words = ", ".join(html.escape(names[k] if names and k < len(names) else str(k)) for k in learned)
                    acc = float(best["accuracy"][rank]) if "accuracy" in best else math.nan
                    rows.append(f"<tr><td>{html.escape(site)}</td><td>{fam}</td><td>{F.node_where(shape, node)}</td>"
                                f"<td>{_fmt(acc)}</td><td>{len(learned)}</td><td>{words or '-'}</td></tr>")
        if rows:
            body.append(_run_heading(run, runs))
            body.append(f"<p>{html.escape(e.name)}: the most accurate nodes of each site and read-out family and "
                        f"the labels each has learned (its learned set L_n, by name).</p><table><tr><th>site</th>"
                        f"<th>read-out</th><th>node</th><th>accuracy</th><th>|L_n|</th><th>learned labels</th></tr>"
                        + "".join(rows) + "</table>\n")
    if not body:
        return None
    return "What the best nodes learned", "".join(body)


def custom_analyses(runs: list[RunResults], book: Book):
    """One subsection per custom analysis (``NodalAnalysis``): its scalars at every state, the arrays it
    saved, and the figures it drew at the last state that has any."""
    body = []
    for run in runs:
        figures = [(e, _custom_figures(run, e)) for e in run.epochs]  # each state's folder read once
        names = sorted({n for e in run.epochs for n in (*e.custom, *e.custom_arrays)}
                       | {n for _, found in figures for n in found})
        if not names:
            continue
        body.append(_run_heading(run, runs))
        for name in names:
            body.append(f"<h4>{html.escape(name)}</h4>\n")
            values = [e.custom.get(name, {}) for e in run.epochs]
            keys = sorted({k for v in values for k in v})
            if keys:
                head = "<tr><th>key</th>" + "".join(f"<th>{html.escape(e.name)}</th>" for e in run.epochs) + "</tr>"
                rows = "".join(f"<tr><td>{html.escape(k)}</td>"
                               + "".join(f"<td>{_fmt(v[k]) if k in v else '-'}</td>" for v in values) + "</tr>"
                               for k in keys)
                body.append(f"<table>{head}{rows}</table>\n")
            arrays = {k: tuple(v.shape) for e in run.epochs for k, v in e.custom_arrays.get(name, {}).items()}
            if arrays:
                listed = ", ".join(f"{html.escape(k)} {list(shape)}" for k, shape in sorted(arrays.items()))
                body.append(f"<p>Arrays in each state's arrays.pt (as <code>{html.escape(name)}/&lt;key&gt;</code>): "
                            f"{listed}.</p>\n")
            last, pngs = next(((e, found[name]) for e, found in reversed(figures) if found.get(name)), (None, {}))
            for key, png in sorted(pngs.items()):
                body.append(book.embed(f"{run.run_id}__{name}__{key}", png, title=f"{name}: {key}, {last.name}",
                                       caption=f"{name}: {key} ({last.name}), as the analysis drew it."))
    if not body:
        return None
    return "Custom analyses", "".join(body)


def _custom_figures(run: RunResults, e) -> dict[str, dict[str, object]]:
    """``{analysis name: {key: PNG path}}`` of the custom figures a state's folder holds
    (``<prefix>__<name>__<key>.png``; the built-in figures are named after a site or ``heads``)."""
    out: dict[str, dict[str, object]] = {}
    for png in sorted(e.folder.glob(f"{run.prefix}__*.png")):
        parts = png.stem.split("__")
        if len(parts) < 3 or parts[1].startswith("blocks.") or parts[1] == HEADS_FIGURE:
            continue
        out.setdefault(parts[1], {})["/".join(parts[2:])] = png
    return out


SECTIONS: list[Section] = [overview, statistics, states_side_by_side, penalties, head_accuracy, learned_labels,
                           best_node_labels, crossover_section, hull_bound, best_nodes, custom_analyses, across_seeds]


def chance_text(runs: list[RunResults]) -> str:
    ks = {r.num_classes for r in runs if r.num_classes}
    return ", ".join(f"1/{k} = {1 / k:.4f}" for k in sorted(ks)) if ks else "unknown"

