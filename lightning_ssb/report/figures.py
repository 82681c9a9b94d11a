"""The report's figures, drawn from a loaded run (``report.load``) alone.

Each function returns ``(figure, data)``: the matplotlib figure, and the numbers it plots (so a
test can compare them with the files on disk), or ``(None, reason)``-style notes through
``MissingData`` when there is nothing to draw. Axes carry a ``gid`` naming what they show and
lines a ``gid`` naming the series (``node/real``, ``head/null``, ...), so the plotted values can be
read back from the figure itself.
"""

from __future__ import annotations

import math

import numpy as np

from lightning_ssb import statistics as registry
from lightning_ssb.capture import has_heads, layer_of
from lightning_ssb.plots import MAX_TICK_LABELS, TITLE_Y, crossover, matrices, new_figure, short_name, tick_fontsize
from lightning_ssb.report.load import RunResults, Stat, epoch_label
from lightning_ssb.results import epochs as E


def epoch_panels(run: RunResults | None = None) -> list[tuple[str, str, str, tuple[float, float] | None, bool]]:
    """The panels of the figure of the statistics by epoch: ``(statistic, title, y label, y range, chance)``
    of every registered statistic with a ``plot`` (``lightning_ssb.statistics``), then, with ``run``,
    every node or head statistic in its results that this process has no entry for (a statistic
    registered by the process that wrote them), titled by its name."""
    panels = [(s.name, s.plot.title, s.plot.ylabel, s.plot.ylim, s.plot.chance) for s in registry.plotted()]
    if run is not None:
        unknown = sorted({k.statistic for e in run.epochs for k in e.scalars
                          if k.granularity in registry.UNIT_LEVELS and registry.get(k.statistic) is None})
        panels += [(name, name, name, None, False) for name in unknown]
    return panels


GRAN_NAMES = {"node": "nodes", "head": "heads"}
GRAN_COLOURS = {"node": "tab:blue", "head": "tab:orange"}
# the real labels and the two nulls: series name, line style, marker, alpha, legend suffix
KINDS = ((None, "real", "o-", 1.0, ""),
         ("train", "null_train", "o--", 0.6, ", null: probe-train permuted"),
         ("both", "null_both", "x:", 0.6, ", null: both splits permuted"))
NULL_SENTENCES = {
    "train": "The probe-train null fits the read-outs on permuted probe-train labels and scores them on the real "
             "probe-test labels: it rules out that a read-out fitted on noise lands on labels by chance, given "
             "how informative the activations are.",
    "both": "The both-splits null permutes probe-test labels too, so predictions are independent of them by "
            "construction: it rules out a miscalibrated significance test (it should read about 0 always).",
}
FAMILY_NAMES = {"own": "own read-out (one fitted per unit)", "shared": "shared read-out (the site's, silenced)"}


class MissingData(Exception):
    """Nothing to draw; the message says what is missing (shown as a note in the report)."""




def position(epoch: int) -> float:
    """Where a state sits on an epoch axis: random init at -2, the start at -1, epoch e at e (a lone
    post-hoc analysis at -1)."""
    return {E.INIT: -2.0, E.REFERENCE: -1.0, E.ANALYZE: -1.0}.get(epoch, float(epoch))


def epoch_ticks(ax, epochs: list[int]) -> None:
    """One tick per state: "init", "start", then the epoch numbers (about ten when there are many)."""
    states = sorted(set(epochs), key=E.order_key)
    if len(states) > 12:  # keep the first and last states and about ten between
        step = math.ceil(len(states) / 10)
        states = sorted(set(states[::step]) | {states[0], states[-1]}, key=E.order_key)
    ax.set_xticks([position(e) for e in states], [E.short_label(e) for e in states])
    ax.set_xlabel("epoch")


def unit_name(site_shape, unit: int, granularity: str) -> str:
    if granularity == "head" or site_shape is None:
        return f"{'head' if granularity == 'head' else 'node'} {unit}"
    h, d = site_shape
    return f"h{unit // d}.n{unit % d}" if h > 1 else f"n{unit}"


def node_where(site_shape, node: int) -> str:
    """``head 3, node 7`` for node 55 of a site of heads of 16 nodes."""
    if site_shape is None or site_shape[0] <= 1:
        return f"node {node}"
    return f"head {node // site_shape[1]}, node {node % site_shape[1]}"


def statistics_over_epochs(run: RunResults, site: str, family: str):
    """Every statistic of `epoch_panels` (built in: live units, Phi, coverage, labels per unit and
    accuracies) against the epoch (random init and the start first), per granularity, with the two nulls
    beside each (probe-train permuted: dashed; both splits permuted: dotted). Data: ``{statistic:
    {"node/real": (epochs, values), "node/null_train": ...}}``; the lines' x values are `position(epoch)`."""
    panels = epoch_panels(run)
    rows = math.ceil(len(panels) / 3)
    fig = new_figure(12, 3.25 * rows)
    axes = fig.subplots(rows, 3).flatten()
    for ax in axes[len(panels):]:  # a last row not filled
        ax.set_axis_off()
    data, missing, handles = {}, [], {}
    grans = [g for g in ("node", "head") if any(run.series(site, family, g, s)[0] for s, *_ in panels)]
    if not grans:
        raise MissingData(f"{site}, {family}: no node or head statistics in scalars.json")
    shape = run.site_shape(site)
    one_head = shape is not None and shape[0] == 1  # a layer output: its one "head" is the whole layer
    for ax, (stat, title, ylabel, ylim, chance) in zip(axes, panels, strict=False):
        ax.set_gid(stat)
        data[stat] = {}
        for gran in grans:
            for null, name, style, alpha, suffix in KINDS:
                states, values = run.series(site, family, gran, stat, null)
                if not states:
                    continue
                series = f"{gran}/{name}"
                label = ("whole layer (one unit)" if gran == "head" and one_head else GRAN_NAMES[gran]) + suffix
                (line,) = ax.plot([position(e) for e in states], values, style, color=GRAN_COLOURS[gran],
                                  alpha=alpha, markersize=5 if null is None else 4,
                                  markerfacecolor=GRAN_COLOURS[gran] if null is None else "none", label=label,
                                  gid=series)
                handles.setdefault(label, line)
                data[stat][series] = (states, values)
        if chance and run.num_classes:
            handles.setdefault("chance 1/K", ax.axhline(1 / run.num_classes, color="0.3", linestyle=":",
                                                        linewidth=1, label="chance 1/K"))
        if not data[stat]:
            missing.append(stat)
            ax.text(0.5, 0.5, f"'{stat}' not in the results", ha="center", va="center", transform=ax.transAxes,
                    color="0.4")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        if ylim:
            ax.set_ylim(*ylim)
        all_states = [e for s in data[stat].values() for e in s[0]] or [e.epoch for e in run.epochs]
        epoch_ticks(ax, all_states)
        ax.grid(alpha=0.3)
        nan_phi = stat == "phi" and any(math.isnan(v) for s in data[stat].values() for v in s[1])
        if nan_phi:
            ax.text(0.02, 0.03, "missing points: undefined (< 2 live units)", transform=ax.transAxes, fontsize=7,
                    color="0.35")
    fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle(f"{site}, {FAMILY_NAMES.get(family, family)}: statistics by epoch", fontsize=11)
    return fig, {"site": site, "family": family, "statistics": data, "missing": missing}




def sensitivity_panels() -> list[tuple[str, str]]:
    """``(statistic, title)`` of every registered statistic with ``sensitivity_plot``."""
    return [(s.name, s.plot.title) for s in registry.in_sensitivity() if s.sensitivity_plot]

PART_OF = {("shared", "node"): "shared", ("shared", "head"): "shared", ("own", "node"): "node",
           ("own", "head"): "group"}


def sensitivity_curves(run: RunResults, site: str):
    """The statistics of `sensitivity_panels` (built in: live units, Phi, labels per unit) against
    the L2 penalty (log axis) at every state that ran the
    sensitivity analysis, one row of panels per read-out family, the run's chosen penalty marked.

    Data: ``{"states": [epochs], "rows": {(family, granularity, epoch): (l2s, {stat: values})},
    "chosen": {(family, granularity): l2}}``."""
    states = [e for e in run.epochs if any(r.get("site") == site for r in e.sensitivity)]
    if not states:
        raise MissingData(f"{site}: no sensitivity.csv rows (the monitor runs them at the start and the last epoch)")
    families = [f for f in run.families if any(r.get("family") == f for e in states for r in e.sensitivity)]
    panels = sensitivity_panels()
    fig = new_figure(3.2 * len(panels) + 1.0, 3.3 * len(families) + 1.0)
    axes = np.atleast_2d(fig.subplots(len(families), len(panels), squeeze=False))
    styles = ["o-", "s--", "^:", "d-."]
    data_rows, chosen, handles = {}, {}, {}
    penalties = run.penalties
    # one x range for every panel, the whole grid: a panel whose values are all undefined (Phi with no
    # two live units) has no line to set it, and matplotlib fitted its axis to the penalty band alone
    grid = [r["l2"] for e in states for r in e.sensitivity if r.get("site") == site and r.get("l2", 0) > 0]
    x_range = (min(grid) / 1.6, max(grid) * 1.6) if grid else None
    for row_axes, family in zip(axes, families, strict=True):
        for ax, (stat, title) in zip(row_axes, panels, strict=True):
            ax.set_gid(f"{family}/{stat}")
            for i, e in enumerate(states):
                for gran in ("node", "head"):
                    rows = sorted((r for r in e.sensitivity if r.get("site") == site and r.get("family") == family
                                   and r.get("granularity") == gran), key=lambda r: r["l2"])
                    if not rows:
                        continue
                    l2s = [r["l2"] for r in rows]
                    values = [r.get(stat, math.nan) for r in rows]  # a statistic the csv predates: a gap
                    data_rows.setdefault((family, gran, e.epoch), (l2s, {}))[1][stat] = values
                    label = f"{GRAN_NAMES[gran]}, {epoch_label(e.epoch)}"
                    (line,) = ax.plot(l2s, values, styles[i % len(styles)], color=GRAN_COLOURS[gran],
                                      alpha=1.0 if e is states[-1] else 0.55, label=label,
                                      gid=f"{gran}/{e.epoch}")
                    handles.setdefault(label, line)
                    value = penalties.get(PART_OF[(family, gran)])
                    if value is not None:
                        chosen[(family, gran)] = value
                        ax.axvline(value, color=GRAN_COLOURS[gran], alpha=0.22, linewidth=7,
                                   gid=f"chosen/{gran}")
            ax.set_xscale("log")
            if x_range:
                ax.set_xlim(*x_range)
            undefined = registry.get(stat).undefined
            if undefined and any(math.isnan(v) for line in ax.get_lines() for v in line.get_ydata()):
                ax.text(0.02, 0.03, f"missing points: undefined ({undefined})", transform=ax.transAxes, fontsize=7,
                        color="0.35", gid="undefined")
            ax.set_xlabel("L2 penalty (standardised nodes)", fontsize=8)
            ax.set_title(f"{family}: {title}", fontsize=9)
            ylim = registry.get(stat).plot.ylim
            if ylim:
                ax.set_ylim(*ylim)
            ax.grid(alpha=0.3)
    handles["chosen"] = axes[0][0].plot([], [], "-", color="0.3", alpha=0.22, linewidth=7,
                                        label="the run's penalty (wide band)")[0]
    fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(f"{site}: how the statistics move with the L2 penalty (the run's penalties as wide bands)",
                 fontsize=11)
    return fig, {"site": site, "states": [e.epoch for e in states], "rows": data_rows, "chosen": chosen}


def _pick_epochs(run: RunResults, available: list[int], most: int = 6) -> list[int]:
    if len(available) <= most:
        return available
    idx = np.unique(np.linspace(0, len(available) - 1, most).round().astype(int))
    return [available[i] for i in idx]


def head_accuracy_grid(run: RunResults, family: str, most_epochs: int = 6):
    """Single-head accuracy, layers x heads, one panel per epoch on one colour scale.

    Data: ``{"epochs": [...], "layers": [...], "grids": [[L, H] arrays]}``."""
    sites = sorted((s for s in run.sites if has_heads(s)), key=layer_of)
    per_epoch = {}
    for e in run.epochs:
        rows = [e.arrays.get(Stat(s, family, "head", "accuracy")) for s in sites]
        if any(r is not None for r in rows):
            width = max(len(r) for r in rows if r is not None)
            per_epoch[e.epoch] = np.array([r.float().numpy() if r is not None else np.full(width, np.nan)
                                           for r in rows])
    if not per_epoch:
        raise MissingData(f"{family}: no head accuracy arrays (<site>/{family}/head/accuracy) for attention sites")
    epochs = _pick_epochs(run, sorted(per_epoch), most_epochs)
    grids = [per_epoch[e] for e in epochs]
    vmax = max(float(np.nanmax(g)) for g in grids)
    n = len(epochs)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    heads = grids[0].shape[1]
    fig = new_figure(3.6 * cols + 1.2, (0.32 * len(sites) + 1.3) * rows + 0.8)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).flatten()
    layers = [layer_of(s) for s in sites]
    for ax, epoch, grid in zip(axes, epochs, grids, strict=False):  # the last row may have spare axes
        im = ax.imshow(grid, aspect="auto", vmin=0.0, vmax=vmax, cmap="viridis", interpolation="nearest")
        ax.set_gid(f"epoch {epoch}")
        if grid.size <= 64:  # few cells: print the accuracy in each
            for (i, j), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 * vmax else "black")
        ax.set_title(epoch_label(epoch), fontsize=9, y=TITLE_Y)
        ax.set_yticks(range(len(layers)), [str(x) for x in layers], fontsize=7)
        ax.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=7)
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    cbar = fig.colorbar(im, ax=list(axes[:n]), shrink=0.9)
    cbar.set_label("single-head accuracy")
    chance = f"; chance 1/K = {1 / run.num_classes:.3f}" if run.num_classes else ""
    shown = "" if len(epochs) == len(per_epoch) else f" ({len(epochs)} of {len(per_epoch)} epochs)"
    fig.suptitle(f"Single-head accuracy, {FAMILY_NAMES.get(family, family)}{shown}{chance}", fontsize=10)
    return fig, {"family": family, "epochs": epochs, "sites": sites, "layers": layers, "grids": grids}


def block_order(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (live units only) and columns of a ``[U, K]`` learned-label matrix ordered so that its
    blocks show: units by their first learned label, labels by the first unit that learned them
    (labels no unit learned go last), repeated until stable."""
    live = np.nonzero(labels.any(1))[0]
    cols = np.arange(labels.shape[1])
    rows = live
    if len(rows) == 0:
        return rows, cols
    for _ in range(5):
        sub = labels[rows][:, cols]
        first = np.where(sub.any(1), sub.argmax(1), sub.shape[1])
        order = np.lexsort((rows, -sub.sum(1), first))  # first label, then bigger sets first, then index
        new_rows = rows[order]
        sub = labels[new_rows][:, cols]
        first_unit = np.where(sub.any(0), sub.argmax(0), sub.shape[0])
        new_cols = cols[np.lexsort((cols, first_unit))]
        if np.array_equal(new_rows, rows) and np.array_equal(new_cols, cols):
            break
        rows, cols = new_rows, new_cols
    return rows, cols


def learned_label_matrix(run: RunResults, site: str, family: str, granularity: str = "node"):
    """The last epoch's learned label sets L_u as a units x labels matrix in block order (live units only).

    Data: ``{"epoch", "units": row unit indices, "labels": column label indices, "matrix"}``."""
    e = run.last
    arr = e.arrays.get(Stat(site, family, granularity, "labels"))
    if granularity == "head" and arr is not None and len(arr) < 2:
        raise MissingData(f"{site}: a single head (the whole layer), no head matrix to order")
    if arr is None:
        raise MissingData(f"{site}, {family}: no {granularity} label sets in {e.name}'s arrays.pt")
    labels = arr.bool().numpy()
    units, cols = block_order(labels)
    if len(units) == 0:
        raise MissingData(f"{site}, {family}: no {GRAN_NAMES[granularity][:-1]} has a learned label ({e.name})")
    mat = labels[units][:, cols].astype(float)
    names = run.label_names
    k = labels.shape[1]
    named_cols = names is not None and k <= MAX_TICK_LABELS
    named_rows = len(units) <= MAX_TICK_LABELS
    width = min(16.0, max(7.0, 0.16 * k + 2.5))
    height = min(14.0, max(2.6, 0.13 * len(units) + (2.2 if named_cols else 1.2)))
    fig = new_figure(width, height)
    ax = fig.subplots()
    ax.set_gid("learned labels")
    ax.imshow(mat, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    if named_cols:
        ax.set_xticks(range(k), [short_name(names[c]) for c in cols], rotation=90, fontsize=tick_fontsize(k))
    ax.set_xlabel("label (ordered by the first unit that learned it)" if named_cols
                  else f"label index, reordered ({k} labels: too many to name)")
    learned_cols = int(labels.any(0).sum())
    if learned_cols < k:  # labels right of the line: learned by no unit
        ax.axvline(learned_cols - 0.5, color="tab:red", linewidth=1)
    shape = run.site_shape(site)
    if named_rows:
        ax.set_yticks(range(len(units)), [unit_name(shape, u, granularity) for u in units],
                      fontsize=tick_fontsize(len(units)))
    else:  # row numbers would read as unit ids: leave them out
        ax.set_yticks([])
    ax.set_ylabel(f"live {GRAN_NAMES[granularity]}" + ("" if named_rows else ", one row each (too many to name)"))
    total = labels.shape[0]
    ax.set_title(f"{site}, {family} read-out, {e.name}\nlearned label sets L_u (black = learned): "
                 f"{len(units)} of {total} {GRAN_NAMES[granularity]} live"
                 + (f"; {k - learned_cols} labels (right of the red line) learned by none" if learned_cols < k else ""),
                 fontsize=9, y=TITLE_Y)
    return fig, {"site": site, "family": family, "granularity": granularity, "epoch": e.epoch, "units": units,
                 "labels": cols, "matrix": mat}


def crossover_curve(run: RunResults, site: str, family: str):
    """The last epoch's crossover (crossover.csv): accuracy, 1/|R_S| and cooperation against m.

    Data: ``{"epoch", "rows": [crossover.csv rows of this site and family]}``."""
    e = next((e for e in reversed(run.epochs) if e.crossover), None)
    if e is None:
        raise MissingData("no crossover.csv in any epoch")
    rows = [r for r in e.crossover if r.get("site") == site and r.get("family", family) == family]
    if not rows:
        raise MissingData(f"{site}, {family}: no rows in {e.name}'s crossover.csv")
    rows = sorted(rows, key=lambda r: r["m"])
    fig = crossover(rows, f"{site}, {family} read-out, {e.name}: crossover in the number of nodes")
    fig.axes[0].set_gid("crossover")
    return fig, {"site": site, "family": family, "epoch": e.epoch, "rows": rows}


def accuracy_vs_bound(run: RunResults, family: str):
    """Every node's accuracy against its convex-hull bound (last epoch), one panel per site, y = x.

    Data: ``{"epoch", "sites": {site: (bound, accuracy)}}``."""
    e = run.last
    pairs = {}
    for site in run.sites:
        acc = e.arrays.get(Stat(site, family, "node", "accuracy"))
        bound = e.arrays.get(Stat(site, family, "node", "hull_bound"))
        if acc is not None and bound is not None and len(acc) == len(bound):
            pairs[site] = (bound.float().numpy(), acc.float().numpy())
    if not pairs:
        raise MissingData(f"{family}: no node accuracy with hull bound (<site>/{family}/node/hull_bound) "
                          f"in {e.name}'s arrays.pt")
    n = len(pairs)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = new_figure(3.8 * cols + 0.4, 3.5 * rows + 0.8)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).flatten()
    for ax, (site, (bound, acc)) in zip(axes, pairs.items(), strict=False):  # spare axes: hidden below
        top = max(float(bound.max()), float(acc.max())) * 1.05 or 1.0
        ax.plot([0, top], [0, top], "--", color="0.5", linewidth=1, label="y = x (bound reached)")
        ax.scatter(bound, acc, s=9, alpha=0.7, color="tab:blue", label="one node", gid="nodes")
        violations = int((acc > bound + 1e-6).sum())
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_gid(site)
        ax.set_title(f"{site}\n{len(acc)} nodes, {violations} above the bound", fontsize=9)
        ax.set_xlabel("hull bound \u03a3_{k\u2208R_n} P(y=k)", fontsize=8)
        ax.set_ylabel("node accuracy", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Node accuracy against its convex-hull bound, {family} read-out, {e.name} "
                 f"(every point must lie on or below y = x)", fontsize=10)
    return fig, {"family": family, "epoch": e.epoch, "sites": pairs}


def best_node_matrices(run: RunResults, site: str, family: str, rank: int = 0):
    """Field and confusion matrices of the ``rank``-th most accurate node (last epoch), named labels.

    Data: ``{"epoch", "node", "accuracy", "field", "confusion"}``."""
    e = next((e for e in reversed(run.epochs) if (site, family) in e.best), None)
    if e is None:
        raise MissingData(f"{site}, {family}: no best-node matrices (<site>/{family}/best/...) in arrays.pt")
    best = e.best[(site, family)]
    if "field" not in best or "confusion" not in best or len(best["field"]) <= rank:
        raise MissingData(f"{site}, {family}: best-node field or confusion matrix missing in {e.name}")
    node = int(best["nodes"][rank]) if "nodes" in best else None
    acc = float(best["accuracy"][rank]) if "accuracy" in best else math.nan
    field, confusion = best["field"][rank].float().numpy(), best["confusion"][rank].float().numpy()
    where = "node ?" if node is None else node_where(run.site_shape(site), node)
    fig = matrices(field, confusion,
                   f"{site}, {family} read-out, {e.name}: best node #{rank + 1} ({where}; accuracy {acc:.3f})",
                   "field matrix F[i, k]: mean field of output k on examples of label i",
                   "confusion matrix C[i, j]: examples of label i predicted j",
                   run.label_names, left_cbar="mean field z_k", right_cbar="examples",
                   xlabels=("output label k", "predicted label j"))
    fig.axes[0].set_gid("field")
    fig.axes[1].set_gid("confusion")
    return fig, {"site": site, "family": family, "epoch": e.epoch, "node": node, "accuracy": acc, "field": field,
                 "confusion": confusion}
