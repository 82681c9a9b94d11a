"""A small synthetic run written straight to disk in the docs/RESULTS.md layout (no training, no
monitor code): the report is tested against files whose every number is known.

Structure: a quarter of the nodes learn labels by epoch 0 and three quarters by the last epoch,
each node its own label (every third node a second one), in a shuffled order so only a sorted
learned-label matrix shows the blocks; the nulls stay near dead; the random initialisation (init) and
the reference have no live node. The reference and the last epoch carry sensitivity rows, and every
state the run's penalties in meta.json.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch

LABELS = ["country", "located in the administrative territorial entity", "country of citizenship",
          "member of political party", "instance of", "spouse", "genre", "mouth of the watercourse"]
SITES = {"blocks.0.attn.heads": [4, 4], "blocks.1.attn.heads": [4, 4], "blocks.1.output": [1, 16]}
FAMILIES = ("own", "shared")
EPOCHS = (-1, 0, 1, 2)
WITH_INIT = (-3, -1, 0, 1, 2)  # the random initialisation analysed too
K = len(LABELS)
PENALTIES = {"shared": 0.003, "node": 0.01, "group": 0.001}
SENSITIVITY_GRID = (1e-4, 1e-3, 1e-2, 0.1, 1.0)


def epoch_dir(epoch: int) -> str:
    return {-1: "reference", -3: "init", -2: "analyze"}.get(epoch, f"epoch_{epoch:03d}")


def _jaccard_phi(labels: np.ndarray) -> tuple[float, float]:
    live = [set(np.nonzero(r)[0]) for r in labels if r.any()]
    if len(live) < 2:
        return math.nan, math.nan
    j = [len(a & b) / len(a | b) for a, b in itertools.combinations(live, 2)]
    overlap = float(np.mean(j))
    return 1.0 - overlap, overlap


def _stats(labels: np.ndarray, acc: np.ndarray) -> dict[str, float]:
    phi, overlap = _jaccard_phi(labels)
    live = int(labels.any(1).sum())
    return {"live": float(live), "live_fraction": live / len(labels), "phi": phi, "overlap": overlap,
            "mean_labels": float(labels.sum(1).mean()), "coverage": float(labels.any(0).sum()) / K,
            "acc_mean": float(acc.mean()), "acc_max": float(acc.max()), "cluster_count": 1.0,
            "cluster_size": 1.0, "cluster_noise": 0.0}


def _node_labels(rng, perm: np.ndarray, live: int) -> np.ndarray:
    labels = np.zeros((len(perm), K), dtype=bool)
    for rank, node in enumerate(perm[:live]):
        labels[node, rank % K] = True
        if rank % 3 == 0:
            labels[node, (rank + 1) % K] = True
    return labels


def write_run(root: Path, run_id: str = "synthetic01", epochs=EPOCHS, sites: dict | None = None, seed: int = 0) -> Path:
    """Write ``root/ssb/<run_id>/{reference,epoch_XXX}/`` and return the run folder.
    ``sites``: name -> [H, d] (default ``SITES``)."""
    sites = SITES if sites is None else sites
    rng = np.random.default_rng(seed)
    run = Path(root) / "ssb" / run_id
    perms = {(s, f): rng.permutation(h * d) for s, (h, d) in sites.items() for f in FAMILIES}
    for epoch in epochs:
        folder = run / epoch_dir(epoch)
        folder.mkdir(parents=True)
        trained = [e for e in epochs if e >= 0]
        progress = (epoch + 1) / max(1, len(trained)) if epoch >= 0 else 0.0  # 0 before training, 1 at the last
        sens_rows = []
        scalars = {"ssb/epoch": float(epoch), "ssb/analysis_seconds": 1.5}
        arrays, cross_rows, node_rows = {}, [], []
        for (site, (h, d)), fam in itertools.product(sites.items(), FAMILIES):
            n = h * d
            live = 0 if epoch < 0 else round(n * (0.25 + 0.5 * progress))
            labels = _node_labels(rng, perms[site, fam], live)
            acc = 1 / K + 0.4 * progress * rng.random(n) + 0.05 * labels.any(1)
            bound = np.minimum(1.0, acc + 0.3 * rng.random(n))
            hull = labels | (rng.random((n, K)) < 0.3)
            head_labels = np.zeros((h, K), dtype=bool)
            if epoch >= 0:
                for head in range(h):
                    head_labels[head, [(2 * head) % K, (2 * head + 1 + epoch) % K]] = True
            head_acc = 1 / K + 0.5 * progress * rng.random(h)
            null_labels = np.zeros((n, K), dtype=bool)
            if epoch == epochs[-1]:
                null_labels[0, 0] = True  # chance lets one node through at the end
            null_acc = 1 / K + 0.02 * rng.random(n)
            null_head_labels = np.zeros((h, K), dtype=bool)
            null_head_acc = 1 / K + 0.02 * rng.random(h)
            units = [("node", labels, acc, None), ("head", head_labels, head_acc, None)]
            for kind in ("train", "both"):
                units += [("node", null_labels, null_acc + (0.01 if kind == "train" else 0.0), kind),
                          ("head", null_head_labels, null_head_acc, kind)]
            for gran, lab, a, null in units:
                mid = f"{fam}/null_{null}/{gran}" if null else f"{fam}/{gran}"
                for stat, v in _stats(lab, a).items():
                    scalars[f"ssb/{site}/{mid}/{stat}"] = v
                arrays[f"{site}/{mid}/labels"] = torch.from_numpy(lab)
                arrays[f"{site}/{mid}/accuracy"] = torch.from_numpy(a).float()
            if epoch in (-1, epochs[-1]) and site == list(sites)[-1]:
                for gran in ("node", "head"):
                    for i, l2 in enumerate(SENSITIVITY_GRID):
                        live = max(0.0, (0.3 + 0.6 * progress) - 0.15 * i)
                        sens_rows.append([site, fam, gran, l2, live * n, live, 2 * live, live / 2, 0.9 - 0.05 * i])
            scalars[f"ssb/{site}/{fam}/node/hull_labels"] = float(hull.sum(1).mean())
            scalars[f"ssb/{site}/{fam}/node/hull_labels_all"] = float(hull.sum(1).mean()) + 1
            scalars[f"ssb/{site}/{fam}/node/hull_bound"] = float(bound.mean())
            scalars[f"ssb/{site}/{fam}/node/hull_tightness"] = float((acc / bound).mean())
            scalars[f"ssb/{site}/{fam}/node/hull_violations"] = 0.0
            if fam == "shared":
                scalars[f"ssb/{site}/shared/site/acc"] = 0.2 + 0.6 * progress
            arrays[f"{site}/{fam}/node/hull_labels"] = torch.from_numpy(hull)
            arrays[f"{site}/{fam}/node/hull_bound"] = torch.from_numpy(bound).float()
            best = np.argsort(-acc, kind="stable")[:2]
            confusion = rng.integers(0, 3, size=(2, K, K))
            for t, node in enumerate(best):
                for k in np.nonzero(labels[node])[0]:
                    confusion[t, k, k] += 8
            field = rng.normal(size=(2, K, K)) + 3 * np.eye(K)
            arrays[f"{site}/{fam}/best/nodes"] = torch.from_numpy(best).long()
            arrays[f"{site}/{fam}/best/accuracy"] = torch.from_numpy(acc[best]).float()
            arrays[f"{site}/{fam}/best/confusion"] = torch.from_numpy(confusion).long()
            arrays[f"{site}/{fam}/best/field"] = torch.from_numpy(field).float()
            m = 1
            while m <= n:
                reach = min(K, 1 + m)
                cross_rows.append([site, fam, m, 5, 1 / K + 0.5 * progress * math.log2(2 * m) / 5, 0.01,
                                   reach, reach + 1, reach, 1 / reach, 0.5 * m, 0.8 + 0.1 * math.log2(m)])
                m *= 2
            for node in range(n):
                node_rows.append([site, fam, 1 if ".1." in site else 0, node // d, node % d, acc[node],
                                  " ".join(LABELS[k] for k in np.nonzero(labels[node])[0]),
                                  " ".join(LABELS[k] for k in np.nonzero(hull[node])[0]), bound[node]])
        meta = {"epoch": epoch, "step": 0 if epoch < 0 else 10 * (epoch + 1), "num_classes": K,
                "label_names": LABELS, "sites": sites, "families": list(FAMILIES), "nulls": ["train", "both"],
                "prefix": "ssb", "penalties": {**PENALTIES, "source": {p: "cv" for p in PENALTIES}, "curves": {}}}
        if sens_rows:
            with open(folder / "sensitivity.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["site", "family", "granularity", "l2", "live", "live_fraction", "mean_labels", "coverage",
                            "phi"])
                w.writerows(sens_rows)
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        (folder / "scalars.json").write_text(
            json.dumps({k: (None if v != v else v) for k, v in scalars.items()}, indent=1))
        torch.save(arrays, folder / "arrays.pt")
        with open(folder / "crossover.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["site", "family", "m", "draws", "acc_mean", "acc_std", "reachable_mean",
                        "reachable_all_mean", "distinct_mean", "guess_level", "learned_mean", "cooperation"])
            w.writerows(cross_rows)
        with open(folder / "nodes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["site", "family", "layer", "head", "node", "accuracy", "learned_labels", "hull_labels",
                        "hull_bound"])
            w.writerows(node_rows)
    return run
