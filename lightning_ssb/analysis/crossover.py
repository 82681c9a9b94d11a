"""The crossover in the number of nodes (docs/method.md section 7): random node subsets of growing size."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_ssb.parallel import fork_map

from .families import NodeLines
from .fit import DTYPE, FitSettings, fit_groups
from .hull import reachable_labels_many
from .optim import FitReport
from .readout import Readout
from .sampling import seeded_rows
from .timing import timed
from .units import label_stats, learned_labels

CROSSOVER_COLUMNS = ("m", "draws", "acc_mean", "acc_std", "reachable_mean", "reachable_all_mean",
                     "distinct_mean", "guess_level", "learned_mean", "cooperation")


class CrossoverResult(NamedTuple):
    """One row per subset size (`CROSSOVER_COLUMNS`) and how the own subsets' fits ended (None for
    the shared family, which fits nothing)."""

    rows: list[dict]
    report: FitReport | None


def default_sizes(num_nodes: int) -> list[int]:
    """1, 2, 4, ... below D, then D itself."""
    sizes = [1 << i for i in range(max(num_nodes.bit_length(), 1)) if (1 << i) < num_nodes]
    return sizes + [num_nodes]


def draw_subset(m: int, num_nodes: int, num_heads: int, gen: torch.Generator) -> Tensor:
    """m distinct nodes: within one random head while m <= d (docs/method.md 7), across heads beyond."""
    d = num_nodes // num_heads
    if num_heads > 1 and m <= d:
        h = int(torch.randint(num_heads, (1,), generator=gen))
        return h * d + torch.randperm(d, generator=gen)[:m]
    return torch.randperm(num_nodes, generator=gen)[:m]


def _check_sizes(sizes: list[int] | None, num_nodes: int) -> list[int]:
    if sizes is None:
        return default_sizes(num_nodes)
    if any(int(s) < 1 for s in sizes):
        raise ValueError(f"crossover sizes must be >= 1, got {sizes}")
    # sizes above D are dropped, so that one list serves sites of different widths
    return sorted(set(int(s) for s in sizes if int(s) <= num_nodes))


def strict_predictions(fields: Tensor) -> tuple[Tensor, Tensor]:
    """argmax `[N]` of fields `[N, K]` (lowest label on ties) and whether it is a strict win `[N]`."""
    top2 = fields.topk(min(2, fields.shape[1]), dim=1).values
    strict = top2[:, 0] > top2[:, 1] if fields.shape[1] > 1 else torch.ones(len(fields), dtype=torch.bool)
    return fields.argmax(1), strict


def _reachable_sets(w: Tensor, b: Tensor, lo: Tensor, hi: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
    """The reachable labels of one node subset: in its probe box, then over all x (a label reachable in the
    box is reachable over all x, so the box's answers spare the second search those labels)."""
    [in_box] = reachable_labels_many([(w, b, lo, hi, seen)])
    [anywhere] = reachable_labels_many([(w, b, None, None, in_box)])
    return in_box, anywhere


def crossover(x: Tensor, y: Tensor, readout: Readout | None, nodes: NodeLines, num_heads: int = 1,
              sizes: list[int] | None = None, draws: int = 5, seed: int = 0, ablation: str = "zero",
              theta: float = 0.5, q: float | None = 0.05, family: str = "shared",
              x_train: Tensor | None = None, y_train: Tensor | None = None,
              settings: FitSettings | None = None, max_train: int | None = None,
              node_pred: Tensor | None = None, workers: int = 1) -> CrossoverResult:
    """One row per subset size m over `draws` seeded subsets S, scored on x `[N, D]`, y `[N]`.

    family "shared": S's contribution to `readout` (silenced nodes by `ablation`); "own": a read-out
    with a bias fitted on S alone on (x_train, y_train), at most `max_train` of its examples (a seeded
    draw), the draws of one size in one batched fit, started from S's part of `readout` when given;
    a single node's own read-out is its own lines (`nodes`), so m = 1 is the single-node analysis.
    Row keys (`CROSSOVER_COLUMNS`): acc_mean, acc_std over draws; reachable_mean |R_S| over the probe
    box of S (its range on x) and reachable_all_mean over all x, both exact and strict (one linear
    program per label, docs/method.md 6); distinct_mean, the labels the data actually produced;
    guess_level, the mean of 1/|R_S|; learned_mean, |L_S| (the significance test over the draws x
    labels of one size); cooperation = sum over draws of |L_S| / sum over draws of sum_{n in S} |L_n|,
    with each node's L_n tested over the same draws (the (draw, node, label) triples of that size), so
    that at m = 1 the ratio is exactly 1; NaN when the nodes learned nothing.
    `nodes` are the family's single nodes (`node_pred` `[D, N]` their predictions on x, if known).
    ``workers`` > 1 solves the subsets' reachability programs (CPU work, whatever the device of the fits)
    in that many forked processes (`parallel.fork_map`), one task per distinct subset of every size (at
    K = 1,000 the sizes of 2 to 16 nodes took 87% of the time): the same answers.
    """
    settings = FitSettings() if settings is None else settings
    if family not in ("own", "shared"):
        raise ValueError(f"family must be 'own' or 'shared', got {family!r}")
    if draws < 1:
        raise ValueError(f"crossover draws must be >= 1, got {draws}")
    if family == "shared" and readout is None:
        raise ValueError("the shared crossover needs the site's readout")
    if family == "own" and (x_train is None or y_train is None):
        raise ValueError("the own crossover needs x_train and y_train to fit each subset's read-out")
    x = x.detach().to(DTYPE).cpu()
    y = y.cpu()
    num_nodes, k = x.shape[1], nodes.slope.shape[1]
    gen = torch.Generator().manual_seed(seed)
    if family == "own" and max_train is not None and x_train.shape[0] > max_train:
        keep = seeded_rows(x_train.shape[0], max_train, seed + 1).to(x_train.device)
        x_train, y_train = x_train[keep], y_train.to(x_train.device)[keep]
    if node_pred is None:
        node_pred = nodes.predict(x)
    lo_all, hi_all = x.min(0).values, x.max(0).values
    rows, reports, programs, wheres = [], [], [], []
    for m in _check_sizes(sizes, num_nodes):
        subsets = [torch.sort(draw_subset(m, num_nodes, num_heads, gen)).values for _ in range(draws)]
        # equal subsets (every draw when m = D; two draws of one whole head when m = d) have the same
        # read-out, so one fit and one set of reachability programs serves them all
        keys = [tuple(s.tolist()) for s in subsets]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        uniq = sorted(set(first.values()))
        where = [uniq.index(first[key]) for key in keys]
        if family == "own" and m == 1:
            w = torch.stack([nodes.slope[s].T for s in subsets])       # [r, K, 1]: the node's own lines
            b = torch.stack([nodes.intercept[s[0]] for s in subsets])
        elif family == "own":
            init = None
            if readout is not None:  # start from S's part of the shared read-out: the same optimum, sooner
                init = (torch.stack([readout.weight[:, subsets[i]] for i in uniq]),
                        torch.stack([readout.subset_bias(subsets[i], ablation) for i in uniq]))
            idx = [subsets[i].to(x_train.device) for i in uniq]
            with timed("crossover: own subset fits"):
                fit = fit_groups(torch.stack([x_train[:, s] for s in idx]), y_train, k, True, settings, init,
                                 what=f"own read-outs of {m}-node subsets")
            reports.append(fit.report)
            w, b = fit.weight.cpu()[where], fit.bias.cpu()[where]
        else:
            w = torch.stack([readout.weight[:, s] for s in subsets]).cpu().to(DTYPE)
            b = torch.stack([readout.subset_bias(s, ablation) for s in subsets]).cpu().to(DTYPE)
        preds, seen = [], []
        for i, s in enumerate(subsets):
            pred, strict = strict_predictions(x[:, s] @ w[i].T + b[i])
            preds.append(pred)
            wins = torch.zeros(k, dtype=torch.bool)
            wins[pred[strict].unique()] = True
            seen.append((wins, int(pred.unique().numel())))
        preds = torch.stack(preds)
        stats = label_stats(preds, y, k)
        learned = learned_labels(stats, theta, q).sum(1).double()
        # the nodes of every draw, tested as one family of (draw, node, label) triples
        members = torch.cat(subsets)
        node_learned = learned_labels(label_stats(node_pred[members], y, k), theta, q).sum()
        # the distinct subsets' programs: in the probe box of S, then over all x (solved below, all sizes)
        programs += [(len(rows), u, (w[i], b[i], lo_all[subsets[i]], hi_all[subsets[i]], seen[i][0]))
                     for u, i in enumerate(uniq)]
        denom = float(node_learned)
        acc = stats.accuracy
        rows.append({
            "m": m, "draws": draws, "acc_mean": acc.mean().item(), "acc_std": acc.std(unbiased=False).item(),
            "distinct_mean": sum(n_distinct for _, n_distinct in seen) / draws,
            "learned_mean": learned.mean().item(),
            "cooperation": learned.sum().item() / denom if denom > 0 else math.nan,
        })
        wheres.append(where)
    with timed("crossover: reachability (linear programs)"):
        answers = fork_map(lambda i: _reachable_sets(*programs[i][2]), len(programs), workers)
    found: dict[tuple[int, int], tuple[Tensor, Tensor]] = {(j, u): a for (j, u, _), a in zip(programs, answers,
                                                                                          strict=True)}
    for j, (row, where) in enumerate(zip(rows, wheres, strict=True)):
        reach = [int(found[j, u][0].sum()) for u in where]
        row["reachable_mean"] = sum(reach) / draws
        row["reachable_all_mean"] = sum(int(found[j, u][1].sum()) for u in where) / draws
        row["guess_level"] = sum(1.0 / r if r else math.nan for r in reach) / draws
    rows = [{key: row[key] for key in CROSSOVER_COLUMNS} for row in rows]
    return CrossoverResult(rows, FitReport.cat(reports) if reports else None)
