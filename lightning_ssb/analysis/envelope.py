"""Upper envelopes of a node's K field lines, and exact single-node prediction through them (docs/method.md 6).

For one node n the field of output k is the line z_k(x) = w[k] x + b[k] in the node's activation x.
The argmax over k as x runs over the real line is the upper envelope of the K lines: a few labels in
order of x, separated by breakpoints. Evaluating N examples is then a binary search each.

Tie-breaking (everywhere in this package): `torch.argmax` returns the *lowest* label index among tied
maxima, and the envelope agrees: of lines with equal slope the highest intercept wins (lowest index
among exact duplicates), and at a breakpoint, where two or more lines tie, the lowest index among all
tied lines wins (`tie_labels`, which may be a third line through the same crossing).

Two label sets come out of an envelope. The *strict* winners are the labels whose field is the
strictly largest on an interval of positive length: R_n of docs/method.md 6, what the node can
output. The *argmax set* adds what the tie rule outputs at single points (breakpoints, lines that
coincide): every label the node's prediction can take, which the accuracy bound sums over. They
differ only at ties: in a bias-free read-out all K lines cross at x = 0, where label 0 wins the tie
without being on the envelope. Predictions are computed in float64 and equal a float64 brute-force
argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_ablation, check_features, check_labels, check_readout

_NODE_CHUNK = 128  # nodes evaluated at once: bounds the [chunk, N, 5] candidate tensors


@dataclass
class Envelope:
    """Upper envelope of lines: `labels[i]` `[m]` is the argmax on the open interval
    (breaks[i-1], breaks[i]) (breaks `[m-1]`, increasing, float64), and `tie_labels[i]` `[m-1]`
    is the argmax exactly at x = breaks[i]. `strict[i]` is False where another line coincides with
    piece i (the label wins there by the tie rule only); None means all strict."""

    labels: Tensor
    breaks: Tensor
    tie_labels: Tensor
    strict: Tensor | None = None

    @property
    def strict_labels(self) -> Tensor:
        """Labels that are the strictly largest field somewhere on the envelope's range."""
        return self.labels if self.strict is None else self.labels[self.strict]

    def predict(self, x: Tensor) -> Tensor:
        """The envelope's label `[N]` at each point x `[N]`, by binary search alone (exact arithmetic)."""
        xd = x.double()
        idx = torch.searchsorted(self.breaks, xd, right=False)   # number of breaks < x
        pred = self.labels[idx]
        if len(self.breaks):
            at = idx.clamp_max(len(self.breaks) - 1)
            on_break = (idx < len(self.breaks)) & (self.breaks[at] == xd)
            pred = torch.where(on_break, self.tie_labels[at], pred)
        return pred


@dataclass
class PackedEnvelopes:
    """Envelopes of D nodes, padded to the longest: labels `[D, M]`, breaks `[D, M-1]` (+inf
    padding), tie_labels `[D, M-1]`, lengths `[D]` (number of labels of each envelope), strict
    `[D, M]` (False where another line coincides with the piece, and in the padding)."""

    labels: Tensor
    breaks: Tensor
    tie_labels: Tensor
    lengths: Tensor
    strict: Tensor


def _candidates(w: Tensor, b: Tensor) -> Tensor:
    """Mask `[D, K]` of lines not strictly dominated on x >= 0 or on x <= 0; the others never win.

    Line k is strictly below line j on all of x >= 0 if w_j >= w_k and b_j > b_k (mirror for x <= 0).
    Sort and a running max make this O(K log K) per node and vectorised over nodes; for random
    lines only O(log K) survive, so the sequential hull below runs on a handful of lines.
    """
    ws, order = torch.sort(w, dim=1, stable=True)
    bs = b.gather(1, order)
    suffix = bs.flip(1).cummax(1).values.flip(1)
    prefix = bs.cummax(1).values
    first = torch.searchsorted(ws, ws, right=False)   # first position of each slope's tie group
    last = torch.searchsorted(ws, ws, right=True) - 1
    keep = (bs >= suffix.gather(1, first)) | (bs >= prefix.gather(1, last))
    return torch.zeros_like(keep).scatter_(1, order, keep)


def _chain(w: list[float], b: list[float], lab: list[int]):
    """Monotone-chain upper hull of the points (w, b), i.e. the envelope of the lines, with ties."""
    pts = sorted(zip(w, (-v for v in b), lab, strict=True))
    stack: list[tuple[float, float, int, float]] = []  # (w, b, label, min label collinear on the edge to its left)
    coincident: set[int] = set()  # labels of kept lines that another line coincides with
    prev_w = prev_b = None
    for wc, nb, lc in pts:
        if wc == prev_w:  # same slope: the first (highest b, lowest label) wins everywhere
            if -nb == prev_b:
                coincident.add(stack[-1][2] if stack and stack[-1][0] == wc else -1)
            continue
        prev_w, prev_b, bc = wc, -nb, -nb
        carry = math.inf
        while len(stack) >= 2:
            wa, ba, _, _ = stack[-2]
            wb, bb, lb, eb = stack[-1]
            lhs, rhs = (bb - ba) * (wc - wa), (bc - ba) * (wb - wa)
            if lhs > rhs:
                break
            stack.pop()
            # On the new edge (collinear) the popped line ties at the breakpoint; below it, it never wins.
            carry = min(carry, lb, eb) if lhs == rhs else math.inf
        stack.append((wc, bc, lc, carry if stack else math.inf))
    labels = [s[2] for s in stack]
    breaks = [(stack[i][1] - stack[i + 1][1]) / (stack[i + 1][0] - stack[i][0]) for i in range(len(stack) - 1)]
    ties = [int(min(stack[i][2], stack[i + 1][2], stack[i + 1][3])) for i in range(len(stack) - 1)]
    strict = [lab not in coincident for lab in labels]
    return labels, breaks, ties, strict


def node_envelopes(w: Tensor, b: Tensor) -> PackedEnvelopes:
    """Envelopes of D nodes at once: slopes w `[D, K]` (the read-out's columns) and intercepts b `[D, K]`."""
    w, b = w.detach().double(), b.detach().double()
    num_nodes = w.shape[0]
    keep = _candidates(w, b)
    rows, cols = keep.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=num_nodes).tolist()
    wl, bl, cl = w[rows, cols].tolist(), b[rows, cols].tolist(), cols.tolist()
    out, start = [], 0
    for c in counts:
        out.append(_chain(wl[start:start + c], bl[start:start + c], cl[start:start + c]))
        start += c
    m = max(len(o[0]) for o in out)
    labels = torch.empty(num_nodes, m, dtype=torch.long)
    breaks = torch.full((num_nodes, m - 1), math.inf, dtype=torch.float64)
    ties = torch.empty(num_nodes, m - 1, dtype=torch.long)
    strict = torch.zeros(num_nodes, m, dtype=torch.bool)
    for n, (lab, brk, tie, st) in enumerate(out):
        labels[n, :len(lab)] = torch.tensor(lab)
        strict[n, :len(st)] = torch.tensor(st)
        labels[n, len(lab):] = lab[-1]
        if brk:
            breaks[n, :len(brk)] = torch.tensor(brk, dtype=torch.float64)
            ties[n, :len(tie)] = torch.tensor(tie)
        ties[n, len(tie):] = lab[-1]
    # Rounding can leave breaks of a near-degenerate hull out of order; searchsorted needs them sorted.
    breaks = breaks.cummax(1).values
    lengths = torch.tensor([len(o[0]) for o in out])
    return PackedEnvelopes(labels, breaks, ties, lengths, strict)


def upper_envelope(w: Tensor, b: Tensor, lo: float = -math.inf, hi: float = math.inf) -> Envelope:
    """Labels on the upper envelope of the lines `w[k] * x + b[k]` (w, b `[K]`) over [lo, hi], in order of x.

    Returns the pieces that win on a sub-interval of positive length inside [lo, hi], the breakpoints
    strictly inside, and the winner at each of them. If lo == hi the envelope is the winner at that point.
    """
    check_features("w", w, 1)
    check_features("b", b, 1)
    if w.shape != b.shape:
        raise ValueError(f"w and b must have the same shape [K], got {tuple(w.shape)} and {tuple(b.shape)}")
    if not lo <= hi:
        raise ValueError(f"lo must be <= hi, got lo={lo}, hi={hi}")
    env = node_envelopes(w.unsqueeze(0), b.unsqueeze(0))
    n = int(env.lengths[0])
    labels, breaks, ties = env.labels[0, :n], env.breaks[0, :n - 1], env.tie_labels[0, :n - 1]
    strict = env.strict[0, :n]
    left = torch.cat([breaks.new_tensor([-math.inf]), breaks])
    right = torch.cat([breaks, breaks.new_tensor([math.inf])])
    on = ((left < hi) & (right > lo)).nonzero().flatten()
    if len(on) == 0:  # lo == hi exactly at a breakpoint: the tie winner, strictly largest nowhere
        at = int((breaks == lo).nonzero()[0])
        return Envelope(ties[at:at + 1], breaks[:0], ties[:0], torch.zeros(1, dtype=torch.bool))
    first, last = int(on[0]), int(on[-1])
    return Envelope(labels[first:last + 1], breaks[first:last], ties[first:last], strict[first:last + 1])


def envelope_label_mask(env: PackedEnvelopes, lo: Tensor, hi: Tensor, num_classes: int,
                        strict: bool = True) -> Tensor:
    """Mask `[D, K]` of the labels each node outputs somewhere in [lo[n], hi[n]] (lo, hi `[D]`).

    strict (R_n): the strictly largest field on a sub-interval of positive length (for lo == hi: at
    that point, off every breakpoint). Not strict (the argmax set): also the tie rule's winner at
    breakpoints inside the range and on coinciding lines."""
    d, m = env.labels.shape
    pad = env.breaks.new_full((d, 1), math.inf)
    left = torch.cat([-pad, env.breaks], 1)
    right = torch.cat([env.breaks, pad], 1)
    lo, hi = lo.double().cpu().unsqueeze(1), hi.double().cpu().unsqueeze(1)
    valid = torch.arange(m).unsqueeze(0) < env.lengths.unsqueeze(1)
    overlap = (left < hi) & (right > lo)
    point = (lo == hi) & (left < lo) & (right > lo)
    mask = torch.zeros(d, num_classes + 1, dtype=torch.bool)
    if strict:
        piece_on = valid & env.strict & (((left < hi) & (right > lo) & (lo < hi)) | point)
        mask.scatter_(1, torch.where(piece_on, env.labels, num_classes), True)
        return mask[:, :num_classes]
    valid_tie = torch.arange(m - 1).unsqueeze(0) < (env.lengths - 1).unsqueeze(1)
    tie_on = valid_tie & (env.breaks >= lo) & (env.breaks <= hi)
    mask.scatter_(1, torch.where(valid & overlap, env.labels, num_classes), True)
    mask.scatter_(1, torch.where(tie_on, env.tie_labels, num_classes), True)
    return mask[:, :num_classes]


def envelope_predict(env: PackedEnvelopes, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Predictions `[D, N]` of each node alone for x `[N, D]`, slopes w `[D, K]`, intercepts b `[D, K]`.

    A binary search finds the envelope piece of each example; the piece's label, its neighbours and
    the two adjacent tie winners are then re-scored with the same arithmetic as a float64 brute force
    (x * w + b in float64, lowest label among ties), so that rounding right at a breakpoint cannot
    make the two paths disagree.
    """
    num_nodes, n = w.shape[0], x.shape[0]
    m = env.labels.shape[1]
    out = torch.empty(num_nodes, n, dtype=torch.long)
    x = x.detach().double().cpu()
    w, b = w.detach().double().cpu(), b.detach().double().cpu()
    for s in range(0, num_nodes, _NODE_CHUNK):
        sl = slice(s, s + _NODE_CHUNK)
        xt = x[:, sl].T.contiguous()
        idx = torch.searchsorted(env.breaks[sl], xt.double(), right=False)
        # Candidate slots: the piece, its two neighbours, and the tie winners at its two ends.
        tables = [(env.labels[sl], [idx, (idx - 1).clamp_min(0), (idx + 1).clamp_max(m - 1)])]
        if m > 1:
            tables.append((env.tie_labels[sl], [idx.clamp_max(m - 2), (idx - 1).clamp(0, m - 2)]))
        best_z = best_l = None
        for labels, slots in tables:
            wl, bl = w[sl].gather(1, labels), b[sl].gather(1, labels)   # small [chunk, M] tables
            for slot in slots:
                lab = labels.gather(1, slot)
                z = xt * wl.gather(1, slot) + bl.gather(1, slot)
                if best_z is None:
                    best_z, best_l = z, lab
                    continue
                better = (z > best_z) | ((z == best_z) & (lab < best_l))
                best_z, best_l = torch.where(better, z, best_z), torch.where(better, lab, best_l)
        out[sl] = best_l
    return out


def node_predictions(x: Tensor, readout, ablation: str = "zero") -> Tensor:
    """Prediction `[D, N]` of every node alone (all others silenced) on x `[N, D]`, exactly via envelopes."""
    check_features("x", x, 2)
    check_readout(readout, x.shape[1])
    check_ablation(ablation)
    w = readout.weight.T.contiguous()
    b = readout.node_bias(ablation).contiguous()
    return envelope_predict(node_envelopes(w, b), x, w, b)


def node_accuracies(x: Tensor, y: Tensor, readout, ablation: str = "zero") -> Tensor:
    """Accuracy `[D]` of every node alone on x `[N, D]`, y `[N]` (docs/method.md 3.3), via envelopes:
    O(K log K + N log K) per node instead of the O(N K) fields."""
    check_features("x", x, 2)
    y = check_labels("y", y, x.shape[0], readout.weight.shape[0], require_all=False)
    return (node_predictions(x, readout, ablation) == y).double().mean(1)
