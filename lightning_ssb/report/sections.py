"""The report's sections: each is one function ``(runs, book) -> (heading, html)`` (or None to leave
itself out), and ``SECTIONS`` lists them in page order. Adding a section (e.g. a comparison across
seeds) is writing one such function and appending it to ``SECTIONS``.
"""

from __future__ import annotations

import html
from typing import Callable, Optional

from lightning_ssb.report import figures as F
from lightning_ssb.report.html import Book
from lightning_ssb.report.load import RunResults
from lightning_ssb.report.seeds import across_seeds  # several runs of the same sites and labels
from lightning_ssb.results.keys import FAMILIES

Section = Callable[[list[RunResults], Book], Optional[tuple[str, str]]]


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
    return any(e.meta.get("null") for e in run.epochs) or any(s.null for e in run.epochs for s in e.scalars)


def overview(runs: list[RunResults], book: Book):
    rows = []
    for run in runs:
        epochs = ", ".join(str(e.epoch) if e.epoch >= 0 else e.name for e in run.epochs)
        null = _has_null(run)
        k = run.num_classes
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in (
            run.run_id, run.folder, epochs, ", ".join(run.sites) or "-", ", ".join(run.families) or "-",
            k if k is not None else "?", f"{1 / k:.4f}" if k else "?", "yes" if null else "no")) + "</tr>")
    table = ("<table><tr><th>run</th><th>folder</th><th>analysed epochs</th><th>sites</th><th>read-outs</th>"
             "<th>labels K</th><th>chance 1/K</th><th>null run</th></tr>" + "".join(rows) + "</table>\n")
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
        body.append(_site_families(run, book, lambda site, fam: book.draw(
            f"{run.run_id}__{site}__{fam}__statistics", F.statistics_over_epochs, run, site, fam,
            title=f"{site}, {fam}: statistics by epoch",
            caption=f"{site}, {fam} read-out. " + ("Solid: the real probe labels; dashed, hollow markers: the null "
                    "(probe labels permuted), the level chance alone reaches. " if _has_null(run) else
                    "No null in these results. ") + "A unit is live when it has at least one learned label.")))
    return "Symmetry breaking by epoch (with the null)", "".join(body)


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

        def per(site, fam):
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
        body.append(_site_families(run, book, lambda site, fam: book.draw(
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
        body.append(_site_families(run, book, lambda site, fam: book.draw(
            f"{run.run_id}__{site}__{fam}__best_node", F.best_node_matrices, run, site, fam,
            title=f"{site}, {fam}: best node",
            caption="The most accurate node: its mean fields per true label (left) and where its "
                    "predictions go (right); a learned label is a bright diagonal cell.")))
    return "The best nodes: field and confusion matrices", "".join(body)


SECTIONS: list[Section] = [overview, statistics, head_accuracy, learned_labels, crossover_section, hull_bound,
                           best_nodes, across_seeds]


def chance_text(runs: list[RunResults]) -> str:
    ks = {r.num_classes for r in runs if r.num_classes}
    return ", ".join(f"1/{k} = {1 / k:.4f}" for k in sorted(ks)) if ks else "unknown"

