"""The convex-hull bound (docs/method.md section 6): labels a node, or a set of m nodes, can ever output.

A label k can be the argmax of the fields of a node set S only if the point (W[k, S], b_k) is a
vertex of the upper convex hull of the K points in R^{m+1}: one exposed by a direction (x, 1).
For one node this is the upper envelope of its K lines (`envelope.py`), exact with ties. For m nodes,
`reachable_labels` solves one linear program per label (exact for every m, over the probe box of S
or over all x); most labels are decided before any program by witnesses and certificates that are
checked on their own (over all x with at most 4 nodes, proposed by Qhull's upper hull), and
method "qhull" stays as a cross-check for small m. For m >= 2
"reachable" means being the strictly largest field somewhere: a label that only ties is not counted.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import linprog
from scipy.spatial import ConvexHull, Delaunay, QhullError
from torch import Tensor

from ._checks import check_ablation, check_features
from .envelope import envelope_label_mask, node_envelopes, upper_envelope


def node_hull_labels(readout, lo: Tensor | None = None, hi: Tensor | None = None,
                     ablation: str = "zero", strict: bool = True) -> Tensor:
    """R_n `[D, K]` bool: labels that are the strictly largest field of node n somewhere in
    [lo[n], hi[n]] (`[D]` each; all x when None). strict False: the argmax set (ties included)."""
    check_ablation(ablation)
    w = readout.weight.T.contiguous()
    b = readout.node_bias(ablation).contiguous()
    env = node_envelopes(w, b)
    lo = torch.full((w.shape[0],), -math.inf) if lo is None else lo
    hi = torch.full((w.shape[0],), math.inf) if hi is None else hi
    return envelope_label_mask(env, lo, hi, readout.num_classes, strict)


def hull_bound(hull_labels: Tensor, prior: Tensor) -> Tensor:
    """Accuracy bound `[D]`: sum over k in R_n of P(y = k), for hull_labels `[D, K]` and prior `[K]`."""
    return hull_labels.double() @ prior.double()


def _lp_wins(rows: np.ndarray, consts: np.ndarray, box: bool) -> bool:
    """Is there u (in [0, 1]^m when `box`, else anywhere) with rows @ u + consts > 0 for every row?

    max t subject to -(rows @ u) + t <= consts, t <= 1: the margin by which the label beats all others.
    rows `[R, m]`, consts `[R]` are normalised by the caller, so the tolerance is scale-free."""
    res, _ = _margin_programs([(rows, consts)], box)
    return res.status == 0 and -res.fun > _LP_TOL


def _margin_programs(problems: list[tuple[np.ndarray, np.ndarray]], box: bool):
    """Solve the margin programs of `_lp_wins` for `problems` (rows, consts each) as one block-diagonal
    program: each block its own variables (u, then t) and rows, the objective minus the sum of the t.
    Returns the solver's result and the index of each block's t. The constraint matrix is written
    straight into CSR arrays (building it block by block through scipy.sparse cost more than solving a
    small program)."""
    heights = np.array([rows.shape[0] for rows, _ in problems])
    widths = np.array([rows.shape[1] + 1 for rows, _ in problems])  # u, then t
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    data = np.concatenate([np.hstack([-rows, np.ones((rows.shape[0], 1))]).ravel() for rows, _ in problems])
    indices = np.concatenate([np.tile(np.arange(c, c + wd), h)
                              for c, wd, h in zip(starts, widths, heights, strict=True)])
    indptr = np.concatenate([[0], np.cumsum(np.repeat(widths, heights))])
    a_ub = sparse.csr_matrix((data, indices, indptr), shape=(int(heights.sum()), int(widths.sum())))
    a_ub.eliminate_zeros()
    ends = starts + widths - 1
    cost = np.zeros(a_ub.shape[1])
    cost[ends] = -1.0
    bounds = np.empty((a_ub.shape[1], 2))
    bounds[:] = (0.0, 1.0) if box else (-np.inf, np.inf)
    bounds[ends] = (-np.inf, 1.0)
    res = linprog(cost, A_ub=a_ub, b_ub=np.concatenate([consts for _, consts in problems]), bounds=bounds,
                  method="highs")
    return res, ends


def _lp_wins_many(problems: list[tuple[np.ndarray, np.ndarray]], box: bool) -> list[bool]:
    """`_lp_wins` of several labels' programs (rows, consts each), solved together as one block-diagonal
    program: every block keeps its own variables (u, t) and rows, and the objective, the sum of the
    margins t, is separable, so every block sits at its own optimum. One solver call instead of one per
    label (the call's own overhead was most of a small program's time); blocks of at most
    `_LP_BATCH_ENTRIES` coefficients. A joint program the solver does not finish falls back to one
    program per label. Programs with more than twice `_cut_rows` rows (many labels, few nodes) are
    solved by cutting planes (`_lp_wins_cutting`): the same answers from a few of their rows."""
    out: list[bool | None] = [None] * len(problems)
    tall = [i for i, (rows, _) in enumerate(problems) if rows.shape[0] > 2 * _cut_rows(rows)]
    if tall:  # many labels against few nodes: most rows are slack at the optimum (`_lp_wins_cutting`)
        for i, answer in zip(tall, _lp_wins_cutting([problems[i] for i in tall], box), strict=True):
            out[i] = answer
    rest = [i for i in range(len(problems)) if out[i] is None]
    for i, answer in zip(rest, _lp_wins_direct([problems[i] for i in rest], box), strict=True):
        out[i] = answer
    return [bool(answer) for answer in out]


def _lp_wins_direct(problems: list[tuple[np.ndarray, np.ndarray]], box: bool) -> list[bool]:
    """`_lp_wins_many` with every row of every program: block-diagonal programs of at most
    `_LP_BATCH_ENTRIES` coefficients."""
    out: list[bool] = []
    start = 0
    while start < len(problems):
        stop, entries = start, 0
        while stop < len(problems) and (stop == start or entries + problems[stop][0].size <= _LP_BATCH_ENTRIES):
            entries += problems[stop][0].size
            stop += 1
        out += _lp_block(problems[start:stop], box)
        start = stop
    return out


def _lp_block(problems: list[tuple[np.ndarray, np.ndarray]], box: bool) -> list[bool]:
    """One batch of `_lp_wins_many`: one joint program, or one program per label if it does not finish."""
    if len(problems) == 1:
        return [_lp_wins(*problems[0], box)]
    res, ends = _margin_programs(problems, box)
    if res.status != 0:
        return [_lp_wins(rows, consts, box) for rows, consts in problems]
    return [bool(t > _LP_TOL) for t in res.x[ends]]


def _cut_rows(rows: np.ndarray) -> int:
    """Rows a cutting-plane program of `_lp_wins_cutting` starts from (and adds per round) for a label's
    program with rows `[R, m]`: a vertex of its optimum needs at most m + 1 of them."""
    return max(2 * (rows.shape[1] + 1), _CUT_MIN_ROWS)


def _lp_wins_cutting(problems: list[tuple[np.ndarray, np.ndarray]], box: bool) -> list[bool]:
    """`_lp_wins` of programs with many more rows (other labels) than columns (nodes), by cutting planes:
    each program starts from the `_cut_rows` rows most violated at the domain's centre; each round solves
    every unfinished program on its rows (one block-diagonal call, `_margin_programs`) and then decides
    it, or adds the rows its optimum violates most. Both answers are the full program's:
    - the margin t of a program on some of the rows bounds the full program's from above (fewer
      constraints), so t <= `_LP_TOL` means "no";
    - at its optimum u, the smallest row of all R is a margin that u itself reaches in the full program,
      so a smallest row > `_LP_TOL` means "yes" (u is a witness).
    At K = 1,000 labels the programs of 16 nodes ended with 34 to 100 of their 999 rows, after 2 to 8
    rounds. A round's programs are solved `_CUT_BATCH` at a time: the solver's time grows faster than
    the number of blocks in one program (1,339 blocks in one call took longer than all their rows in
    batches of 131 labels). A program that still has no answer after `_CUT_ROUNDS` rounds, whose
    violated rows are all in already (solver tolerance), or whose joint program the solver does not
    finish, is solved on all its rows (`_lp_wins_direct`)."""
    out: list[bool | None] = [None] * len(problems)
    chosen = []
    for rows, consts in problems:
        centre = np.full(rows.shape[1], 0.5) if box else np.zeros(rows.shape[1])
        values = rows @ centre + consts
        size = min(_cut_rows(rows), len(values))
        chosen.append(np.argpartition(values, size - 1)[:size])
    todo = list(range(len(problems)))
    for _ in range(_CUT_ROUNDS):
        left = []
        for first in range(0, len(todo), _CUT_BATCH):
            batch = todo[first:first + _CUT_BATCH]
            res, ends = _margin_programs([(problems[i][0][chosen[i]], problems[i][1][chosen[i]]) for i in batch], box)
            if res.status != 0:
                continue  # left to the full programs
            for i, end in zip(batch, ends, strict=True):
                rows, consts = problems[i]
                t = res.x[end]
                values = rows @ res.x[end - rows.shape[1]:end] + consts
                if t <= _LP_TOL or values.min() > _LP_TOL:
                    out[i] = bool(t > _LP_TOL)
                    continue
                values[chosen[i]] = np.inf  # the rows not in yet that the optimum violates most
                worst = np.argsort(values, kind="stable")[:_cut_rows(rows)]
                worst = worst[values[worst] < t]
                if worst.size:  # none: the violated rows are in already (solver tolerance), left to the full program
                    chosen[i] = np.concatenate([chosen[i], worst])
                    left.append(i)
        todo = left
    rest = [i for i in range(len(problems)) if out[i] is None]
    for i, answer in zip(rest, _lp_wins_direct([problems[i] for i in rest], box), strict=True):
        out[i] = answer
    return [bool(answer) for answer in out]


_LP_TOL = 1e-9     # margin, relative to the largest coefficient, that counts as a strict win
_CUT_MIN_ROWS = 32  # rows a cutting-plane program starts from at least (`_cut_rows`)
_CUT_BATCH = 32     # programs per solver call of a cutting-plane round
_CUT_ROUNDS = 30    # rounds of `_lp_wins_cutting` before a program is solved on all its rows
_LP_BATCH_ENTRIES = 1 << 16  # coefficients per joint program of `_lp_wins_direct` (2^21 was 5x slower at K = 200)
_SAMPLES = 256     # random points per call whose argmax labels need no program


def _normalise(rows: np.ndarray, consts: np.ndarray, box: bool):
    """Scale so that tiny or huge read-outs give the same answer. In a box only a common factor is
    free; over all x the slopes' scale is absorbed by x, so slopes and constants scale separately."""
    if box:
        s = max(np.abs(rows).max(initial=0.0), np.abs(consts).max(initial=0.0))
        return (rows / s, consts / s) if s > 0 else (rows, consts)
    sa, sc = np.abs(rows).max(initial=0.0), np.abs(consts).max(initial=0.0)
    return (rows / sa if sa > 0 else rows), (consts / sc if sc > 0 else consts)


def reachable_labels(w: Tensor, b: Tensor, lo: Tensor | None = None, hi: Tensor | None = None,
                     predicted: Tensor | None = None, method: str = "lp") -> Tensor:
    """Labels `[K]` bool that the node set with read-out columns w `[K, m]` and constants b `[K]` outputs
    as the strictly largest field for some activation x in the box [lo, hi] (`[m]` each; all x when
    both are None). docs/method.md 6: one linear program per label, exact for every m.

    Labels in `predicted` `[K]` (the data already produced them as a strict winner) need no program;
    nor do labels that win strictly at one of a few hundred seeded random points of the box, at a point a
    witness search finds or (all x) far out along a least-squares direction (`_direction_witnesses`), or
    that one other label (closed form) or in the box a mixture of the others (`_box_certificates`) beats
    everywhere. The labels left are solved as one block-diagonal program (`_lp_wins_many`): one solver
    call, the same answers (`reachable_labels_many`: one call for the labels left by several node sets).
    Two labels with the same point (w_k, b_k) tie everywhere, so neither is ever strictly largest.
    method "qhull" (all x only) uses the upper convex hull of the points (w_k, b_k) instead: a
    cross-check for small m.
    """
    return _solve_together([_reachable(w, b, lo, hi, predicted, method)])[0]


def reachable_labels_many(calls: list[tuple]) -> list[Tensor]:
    """`reachable_labels` of several node sets, ``calls`` a list of ``(w, b, lo, hi, predicted)``: every
    label left to a program, across all the calls, is solved in one block-diagonal program per domain
    kind (box, all x), instead of one per call. The same answers as one call each."""
    return _solve_together([_reachable(*call) for call in calls])


def _solve_together(searches: list) -> list[Tensor]:
    """Run `_reachable` searches: each yields (problems, box) once, receives its programs' answers and
    returns its labels; the programs of all searches of one domain kind are solved in one call."""
    results: list = [None] * len(searches)
    waiting = []
    for i, search in enumerate(searches):
        try:
            problems, box = next(search)
            waiting.append((i, search, problems, box))
        except StopIteration as stop:
            results[i] = stop.value
    for box in (True, False):
        group = [item for item in waiting if item[3] == box]
        answers = _lp_wins_many([p for item in group for p in item[2]], box)
        at = 0
        for i, search, problems, _ in group:
            try:
                search.send(answers[at:at + len(problems)])
            except StopIteration as stop:
                results[i] = stop.value
            at += len(problems)
    return results


def _reachable(w: Tensor, b: Tensor, lo: Tensor | None = None, hi: Tensor | None = None,
               predicted: Tensor | None = None, method: str = "lp"):
    """The search of `reachable_labels`, as a generator: it yields the programs it needs once (a list of
    (rows, consts) and whether they are in a box), receives their answers and returns the labels."""
    check_features("w", w, 2)
    check_features("b", b, 1)
    if w.shape[0] != b.shape[0]:
        raise ValueError(f"w [K, m] and b [K] disagree on K: {tuple(w.shape)} and {tuple(b.shape)}")
    if method not in ("lp", "qhull"):
        raise ValueError(f"method must be 'lp' or 'qhull', got {method!r}")
    box = lo is not None or hi is not None
    if box and (lo is None or hi is None):
        raise ValueError("lo and hi must be given together (both None: all x)")
    if method == "qhull" and box:
        raise ValueError("method 'qhull' answers for all x only (lo = hi = None)")
    k, m = w.shape
    out = torch.zeros(k, dtype=torch.bool)
    if m == 1 and method == "lp":  # one node: its upper envelope is exact and needs no program
        env = upper_envelope(w[:, 0].double(), b.double(),
                             float(lo[0]) if box else -math.inf, float(hi[0]) if box else math.inf)
        out[env.strict_labels] = True
        return out
    points = torch.cat([w, b.unsqueeze(1)], 1).double().cpu().numpy()
    uniq, first, counts = np.unique(points, axis=0, return_index=True, return_counts=True)
    if len(uniq) == 1:  # one label wins alone; several with the same field everywhere: none strictly
        out[0] = k == 1
        return out
    # a label whose point another label duplicates ties with it everywhere: never strictly largest
    single = counts == 1
    if method == "qhull":
        reach = _reachable_qhull(uniq) & single
        out[torch.as_tensor(first[reach], dtype=torch.long)] = True
        return out
    a, c = uniq[:, :m], uniq[:, m]
    if box:
        lo_np, hi_np = lo.double().numpy().reshape(m), hi.double().numpy().reshape(m)
        if (hi_np < lo_np).any():
            raise ValueError("hi must be >= lo in every coordinate")
        width = hi_np - lo_np
        a_u, c_u = a * width, c + a @ lo_np          # fields in u in [0, 1]^m
    else:
        a_u, c_u = a, c
    u = len(uniq)
    reach = np.zeros(u, dtype=bool)
    if predicted is not None:
        pred_set = set(torch.as_tensor(predicted).nonzero().flatten().tolist())
        reach |= np.array([int(f) in pred_set for f in first])
    # Winners at seeded random points: in the box uniform u and its corners; over all x, random directions
    # at radii from well inside to far beyond where the fields' constants and slopes balance.
    rng = np.random.default_rng(0)
    if box:
        pts = np.vstack([rng.random((_SAMPLES, m)), (rng.random((_SAMPLES // 4, m)) < 0.5).astype(float)])
    else:
        span = np.abs(c_u).max(initial=0.0) / max(np.abs(a_u).max(initial=0.0), 1e-300) or 1.0
        radii = span * np.logspace(-2, 3, _SAMPLES)
        pts = rng.standard_normal((_SAMPLES, m)) * radii[:, None]
    fields = pts @ a_u.T + c_u
    top = fields.max(1, keepdims=True)
    strict = (fields == top).sum(1) == 1
    reach[np.unique(fields.argmax(1)[strict])] = True
    todo = ~reach
    if todo.sum() > 1:  # a witness searched for every remaining label at once: fewer programs to solve
        reach |= _witnesses(a_u, c_u, box, todo)
    # Beaten everywhere by one other label: min over the domain of (f_j - f_k) > 0. The pairwise differences
    # a_i - a_j are made in chunks of labels (`_differences`), never all K x K x m at once (at K = 2,000
    # tokens and 192 nodes that was 6 GB for each of its arrays)
    beaten = np.zeros(u, dtype=bool)
    for labels, rows, consts, _ in _differences(a_u, c_u, np.ones(u, dtype=bool)):
        if box:  # min over v in [0, 1]^m of (c_j - c_i) + (a_j - a_i) . v
            beaten[labels] = (np.maximum(rows, 0).sum(2) < -consts).any(1)
        else:
            beaten[labels] = ((np.abs(rows).max(2) == 0) & (consts < 0)).any(1)
    # What the samples and the one-label test left open, before any program: in the box, a mixture of
    # the other labels that beats the label everywhere (a dual certificate: never strictly largest); over
    # all x, a direction along which it beats every other label (a witness: reachable).
    undecided = ~reach & ~beaten
    if undecided.any() and box:
        beaten |= _box_certificates(a_u, c_u, undecided)
    elif undecided.any():
        if m <= _HULL_MAX_NODES:  # in a few dimensions the upper hull decides nearly every label, verified
            found, below = _hull_decisions(a_u, c_u, undecided)
            reach |= found
            beaten |= below
            undecided &= ~found & ~below
        if undecided.any():
            reach |= _direction_witnesses(a_u, c_u, undecided)
    left = np.nonzero(~reach & ~beaten)[0]  # each label's rows against the others: a_i - a_j, c_i - c_j
    problems = [_normalise(np.delete(a_u[i] - a_u, i, axis=0), np.delete(c_u[i] - c_u, i, axis=0), box) for i in left]
    del fields, pts  # the search waits here for its programs, perhaps beside many others
    if problems:
        reach[left] = yield problems, box
    reach &= single
    out[torch.as_tensor(first[reach], dtype=torch.long)] = True
    return out


_WITNESS_STEPS = 60


def _witnesses(a: np.ndarray, c: np.ndarray, box: bool, todo: np.ndarray) -> np.ndarray:
    """Labels (of `todo`) found to win strictly somewhere, by a projected subgradient ascent of each
    label's margin min_j (f_i - f_j) over the domain, all labels at once. Only a point where the label is
    verified to be the strict argmax counts; a label not found here still gets its linear program (the
    search proves reachability, never unreachability). Over all x the search runs in a box wide enough
    for the slopes to dominate the constants."""
    labels = np.nonzero(todo)[0]
    k, m = a.shape
    if box:
        lo, hi = 0.0, 1.0
    else:
        span = np.abs(c).max(initial=0.0) / max(np.abs(a).max(initial=0.0), 1e-300) or 1.0
        lo, hi = -100.0 * span, 100.0 * span
    ai = a[labels]                                                       # [L, m]
    u = np.where(ai > a.mean(0), hi, lo).astype(np.float64)              # start at the corner that favours i
    width = hi - lo
    found = np.zeros(len(labels), dtype=bool)
    rows = np.arange(len(labels))
    # numpy, not torch: the arrays are tiny and the search is many small steps, where each torch call's
    # own overhead cost several times more than its arithmetic
    for step in range(_WITNESS_STEPS):
        fields = u @ a.T + c                                              # [L, K]
        own = fields[rows, labels]
        fields[rows, labels] = -np.inf
        rival = fields.argmax(1)
        found |= own > fields[rows, rival]
        if found.all():
            break
        direction = ai - a[rival]                                         # ascent direction of the margin
        norm = np.maximum(np.abs(direction).max(1, keepdims=True), 1e-300)
        u = np.clip(u + width * 0.5 ** (step // 10 + 1) * direction / norm, lo, hi)
    out = np.zeros(k, dtype=bool)
    out[labels[found]] = True
    return out


_CHUNK = 1 << 22   # labels x labels x nodes entries per batch of the certificates and directions
_CERT_STEPS = 120
_DIRECTION_ROUNDS = 8


def _differences(a: np.ndarray, c: np.ndarray, todo: np.ndarray):
    """For batches of the labels in `todo` (each at most `_CHUNK` entries of [L, K, m], 32 MiB in float64):
    (labels, rows a_i - a_j `[L, K, m]`, constants c_i - c_j `[L, K]`, own `[L, K]` True at j = i), numpy
    arrays, from the labels' points a `[K, m]`, c `[K]`."""
    k, m = a.shape
    labels = np.nonzero(todo)[0]
    size = max(1, _CHUNK // max(1, k * m))
    for start in range(0, len(labels), size):
        part = labels[start:start + size]
        own = np.zeros((len(part), k), dtype=bool)
        own[np.arange(len(part)), part] = True
        yield part, a[part, None, :] - a[None, :, :], c[part, None] - c[None, :], own


def _box_certificates(a: np.ndarray, c: np.ndarray, todo: np.ndarray) -> np.ndarray:
    """Labels (of `todo`) that are never the strictly largest field in the box [0, 1]^m, each proven by
    weak linear-programming duality: for any mixture lambda of the other labels,
    max over the box of min_j (f_i - f_j) <= h(lambda) = lambda . (c_i - c) + sum_m max(0, lambda . (a_i - a))_m,
    so h(lambda) <= the programs' tolerance (on the same normalised rows) means the program would answer
    "no". lambda is searched by exponentiated subgradient steps, all labels at once; a label without a
    certificate keeps its program (the search proves unreachability, never reachability). `a`, `c`: the
    labels' points in the box's coordinates."""
    # numpy, not torch, as in `_witnesses`: up to 120 steps of a dozen small operations each, where torch's
    # per-call overhead cost three times the arithmetic (the same operations in float64, the same answers)
    out = np.zeros(len(todo), dtype=bool)
    for labels, rows, consts, own in _differences(a, c, todo):
        scale = np.maximum(np.maximum(np.abs(rows).reshape(len(labels), -1).max(1), np.abs(consts).max(1)), 1e-300)
        rows, consts = rows / scale[:, None, None], consts / scale[:, None]   # as `_normalise` (box)
        lam = (~own).astype(np.float64)
        lam /= lam.sum(1, keepdims=True)
        proven = np.zeros(len(labels), dtype=bool)
        live = np.arange(len(labels))  # labels still without a certificate; each searches on its own,
        best = np.full(len(labels), math.inf)  # so dropping the others changes nothing
        for step in range(_CERT_STEPS):
            z = np.matmul(lam[:, None, :], rows)[:, 0, :]                # [l, m]
            best = np.minimum(best, (lam * consts).sum(1) + np.maximum(z, 0.0).sum(1))
            done = best <= _LP_TOL
            if done.any():
                proven[live[done]] = True
                keep = ~done
                live, rows, consts, own, lam, best, z = (t[keep] for t in (live, rows, consts, own, lam, best, z))
                if live.size == 0:
                    break
            grad = consts + np.matmul(rows, (z > 0).astype(np.float64)[:, :, None])[:, :, 0]
            rate = 2.0 / (np.maximum(np.abs(grad).max(1, keepdims=True), 1e-300) * math.sqrt(step + 1))
            lam = lam * np.exp(-rate * (grad - grad.min(1, keepdims=True)))
            lam[own] = 0.0
            lam /= lam.sum(1, keepdims=True)
        out[labels[proven]] = True
    return out


def _direction_witnesses(a: np.ndarray, c: np.ndarray, todo: np.ndarray) -> np.ndarray:
    """Over all x: labels (of `todo`) that win strictly far out along a direction v with
    (a_i - a_j) . v > 0 for every other label j. v solves (a_i - a_j) . v = t_j in least squares (exact
    when the differences are independent, as for m >= K - 1); targets of the labels it does not beat
    are doubled for a few rounds. Only a point where the label is verified to be the strict argmax
    counts; a label not found here keeps its program."""
    out = np.zeros(len(todo), dtype=bool)
    at, ct = torch.from_numpy(a), torch.from_numpy(c)
    for labels, rows_np, consts_np, own_np in _differences(a, c, todo):
        rows, consts, own = torch.from_numpy(rows_np), torch.from_numpy(consts_np), torch.from_numpy(own_np)
        target = (~own).to(torch.float64)
        pending = torch.ones(len(labels), dtype=torch.bool)
        for _ in range(_DIRECTION_ROUNDS):
            idx = pending.nonzero().flatten()
            if idx.numel() == 0:
                break
            v = torch.linalg.lstsq(rows[idx], target[idx].unsqueeze(2), driver="gelsd").solution.squeeze(2)
            rv = torch.bmm(rows[idx], v.unsqueeze(2)).squeeze(2)          # [l, K]
            mine = own[idx]
            ahead = ((rv > 0) | mine).all(1) & torch.isfinite(rv).all(1)
            # far enough out that the slopes beat the constants: s (a_i - a_j) . v + (c_i - c_j) > 0
            need = torch.where(mine, -math.inf, -consts[idx] / torch.where(mine, 1.0, rv)).amax(1)
            u = (2 * need.clamp_min(0) + 1).unsqueeze(1) * v
            fields = u @ at.T + ct                                        # [l, K]
            wins = fields[mine] > fields.masked_fill(mine, -math.inf).amax(1)
            out[labels[idx[ahead & wins].numpy()]] = True
            pending[idx[ahead]] = False
            behind = (rv <= 0) & ~mine
            target[idx] = torch.where(behind, 2 * target[idx], target[idx])
    return out


_HULL_MAX_NODES = 4  # Qhull's upper hull of K ~ 50 points: under a millisecond up to R^5, 15 ms in R^7, 0.3 s in R^9


def _hull_decisions(a: np.ndarray, c: np.ndarray, todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over all x, for few nodes (m <= `_HULL_MAX_NODES`): labels of `todo` decided by the upper convex
    hull of the points (a_k, c_k) (Qhull), each decision verified on its own so that Qhull's tolerances
    decide nothing. (reachable, unreachable) `[K]` bool each; a label in neither keeps its program.

    - A vertex of the upper hull: x from the mean normal of its upper facets, checked to make the label
      the strict argmax of the fields (a witness, as in `_witnesses`).
    - Any other label: the upper facet over a_k gives a mixture lambda of that facet's labels with
      sum lambda_j a_j = a_k, so f_k = sum lambda_j f_j - gap everywhere with gap = sum lambda_j c_j - c_k:
      if -gap is at most the programs' tolerance (on the programs' own scaling, `_normalise`) and the
      slopes' residual is at rounding level, label k never wins by more than the tolerance (weak
      duality, as `_box_certificates`).
    Equal constants (a bias-free read-out: the points are flat) use the hull of the slopes alone: its
    vertices win far out, and a label inside it is a mixture of a Delaunay simplex of those vertices
    around it. Other degenerate sets (flat slopes) are left to the programs."""
    k, m = a.shape
    reach, below = np.zeros(k, dtype=bool), np.zeros(k, dtype=bool)
    sa, sc = np.abs(a).max(initial=0.0), np.abs(c).max(initial=0.0)
    flat = np.ptp(c) == 0
    pts = a / sa if flat else np.hstack([a / sa, (c / sc)[:, None]])  # scaling slopes and constants apart
    dim = pts.shape[1]                                                # keeps the upper hull
    if sa == 0 or len(pts) < dim + 1:
        return reach, below
    try:
        hull = ConvexHull(pts)
        corners_of = hull.vertices  # the hull's vertices: every other point lies in a simplex of them
        triangles = Delaunay(pts[corners_of]) if flat else None
    except QhullError:  # a flat point set
        return reach, below
    upper = np.ones(len(hull.equations), dtype=bool) if flat else hull.equations[:, m] > 1e-12  # normal up in c
    normals, offsets, simplices = hull.equations[upper, :dim], hull.equations[upper, dim], hull.simplices[upper]
    if not upper.any():
        return reach, below
    labels = np.nonzero(todo)[0]
    incident = (simplices[None, :, :] == labels[:, None, None]).any(2)          # [L, F]
    vertex = incident.any(1)
    if vertex.any():  # witnesses: x such that (x, 1) is the mean upper normal, in the original scaling
        mean = incident[vertex].astype(np.float64) @ normals
        x = mean / sa if flat else mean[:, :m] / mean[:, m:] * (sc / sa)
        fields = x @ a.T + c                                                    # [V, K]
        rows = np.arange(len(x))
        own = fields[rows, labels[vertex]]
        fields[rows, labels[vertex]] = -np.inf
        reach[labels[vertex][own > fields.max(1)]] = True
    inner = labels[~vertex]
    if len(inner):
        if flat:  # the Delaunay simplex that holds a_k
            where = triangles.find_simplex(pts[inner])
            inner, over = inner[where >= 0], corners_of[triangles.simplices[where[where >= 0]]]
        else:  # the upper facet over a_k: its plane is the lowest there (the upper hull is concave)
            heights = -(pts[inner, :m] @ normals[:, :m].T + offsets) / normals[:, m]  # [I, F]
            over = simplices[heights.argmin(1)]                                      # [I, m + 1]
        corners = np.concatenate([pts[over][:, :, :m], np.ones((len(inner), m + 1, 1))], 2)  # [I, m+1, m+1]
        target = np.concatenate([pts[inner, :m], np.ones((len(inner), 1))], 1)
        with np.errstate(all="ignore"):
            try:
                lam = np.linalg.solve(np.transpose(corners, (0, 2, 1)), target[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:  # a singular simplex: left to the programs
                return reach, below
        for i, label in enumerate(inner):
            if not (np.isfinite(lam[i]).all() and lam[i].min() >= -1e-12) or (over[i] == label).any():
                continue
            mix = np.clip(lam[i], 0.0, None)
            mix /= mix.sum()
            rows_i, consts_i = _normalise(np.delete(a[label] - a, label, 0), np.delete(c[label] - c, label, 0), False)
            pos = over[i] - (over[i] > label)  # the mixture's labels as rows of label's program
            if np.abs(mix @ rows_i[pos]).max() <= 1e-12 and mix @ consts_i[pos] <= _LP_TOL:
                below[label] = True
    return reach, below


def _reachable_qhull(points: np.ndarray) -> np.ndarray:
    """Vertices of the upper convex hull of points `[U, m+1]` (last coordinate the constant): the labels
    that win for some x. Degenerate sets (too few or flat points) fall back to the linear programs."""
    m = points.shape[1] - 1
    if len(points) >= m + 2:
        try:
            hull = ConvexHull(points)
            upper = hull.equations[:, m] > 1e-12                   # outward normal points up in b
            reach = np.zeros(len(points), dtype=bool)
            reach[np.unique(hull.simplices[upper])] = True
            return reach
        except QhullError:
            pass
    a, c = points[:, :m], points[:, m]
    return np.array([_lp_wins(*_normalise(np.delete(a[i] - a, i, 0), np.delete(c[i] - c, i, 0), False), False)
                     for i in range(len(points))])
