"""Read the monitor's disk results (docs/RESULTS.md) back into one tidy structure per run.

Nothing here needs W&B or the monitor: only ``<save_dir>/ssb/<run id>/{reference,epoch_XXX}/``.
Whatever is missing or unreadable becomes a note on the run or the epoch, never an exception,
so a report can always be written from what is there.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lightning_ssb.results import epochs as E
from lightning_ssb.results.keys import FAMILIES, PREFIX, ParsedKey, array_key, parse_key

REFERENCE_EPOCH, ANALYZE_EPOCH, INIT_EPOCH = E.REFERENCE, E.ANALYZE, E.INIT
epoch_label = E.label

BEST_ARRAYS = ("nodes", "accuracy", "confusion", "field")  # <site>/<family>/best/<name> in arrays.pt


class NoResultsError(ValueError):
    """A folder with no SSBMonitor results; the message names the folder."""


@dataclass(frozen=True)
class Stat:
    """Where a site statistic lives: the parts of a parsed key, without its prefix."""

    site: str
    family: str
    granularity: str
    statistic: str
    null: str | None = None  # None: the real labels; "train" or "both": a null

    @classmethod
    def of(cls, key: ParsedKey) -> Stat:
        return cls(key.site, key.family, key.granularity, key.statistic, key.null)


@dataclass
class EpochResults:
    """One analysed epoch (``epoch`` -1 is the reference, before training)."""

    epoch: int
    folder: Path
    meta: dict = field(default_factory=dict)
    scalars: dict[Stat, float] = field(default_factory=dict)  # NaN where the disk has null
    other_scalars: dict[str, float] = field(default_factory=dict)  # run and custom keys, as written
    custom: dict[str, dict[str, float]] = field(default_factory=dict)  # a NodalAnalysis's scalars: name -> key -> value
    custom_arrays: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # name -> key -> arrays.pt entry
    arrays: dict[Stat, torch.Tensor] = field(default_factory=dict)  # "<site>/<family>[/null]/<gran>/<name>"
    best: dict[tuple[str, str], dict[str, torch.Tensor]] = field(default_factory=dict)  # (site, family)
    crossover: list[dict] = field(default_factory=list)  # crossover.csv rows, numbers as float
    sensitivity: list[dict] = field(default_factory=list)  # sensitivity.csv rows, numbers as float
    notes: list[str] = field(default_factory=list)

    @property
    def penalties(self) -> dict:
        """{"shared", "node", "group", "source", "curves"}: the read-out penalties of meta.json (empty
        when absent)."""
        return self.meta.get("penalties") or {}

    @property
    def nulls(self) -> list[str]:
        """The nulls this state ran ("train", "both"), from meta.json or, for older results, the scalars."""
        listed = self.meta.get("nulls")
        if listed is not None:
            return list(listed)
        return sorted({s.null for s in self.scalars if s.null})

    @property
    def name(self) -> str:
        return epoch_label(self.epoch)


@dataclass
class RunResults:
    """Every analysed epoch of one run, sorted by epoch, with what they share (labels, sites)."""

    run_id: str
    folder: Path
    epochs: list[EpochResults]
    prefix: str = PREFIX
    notes: list[str] = field(default_factory=list)

    @property
    def last(self) -> EpochResults:
        return self.epochs[-1]

    def _meta(self, key: str, default=None):
        for e in reversed(self.epochs):
            if key in e.meta:
                return e.meta[key]
        return default

    @property
    def penalties(self) -> dict:
        """{"shared", "node", "group", "source", "curves"}: the run's read-out penalties, as the first
        analysed state recorded them (the run keeps them for every later state)."""
        for e in self.epochs:
            if e.penalties:
                return e.penalties
        return {}

    @property
    def label_names(self) -> list[str] | None:
        names = self._meta("label_names")
        return [str(n) for n in names] if names else None

    @property
    def num_classes(self) -> int | None:
        k = self._meta("num_classes")
        if k is None and self.label_names:
            k = len(self.label_names)
        return int(k) if k is not None else None

    @property
    def sites(self) -> list[str]:
        """Site names in the order meta.json lists them, then any found only in the scalars/arrays."""
        out: list[str] = []
        for e in self.epochs:
            for name in e.meta.get("sites", {}) or {}:
                if name not in out:
                    out.append(name)
        found = {s.site for e in self.epochs for s in (*e.scalars, *e.arrays)}
        return out + sorted(found - set(out), key=_natural)

    def site_shape(self, site: str) -> tuple[int, int] | None:
        """``(H, d)`` of a site from meta.json, else from its node/head arrays."""
        shape = (self._meta("sites") or {}).get(site)
        if shape:
            return int(shape[0]), int(shape[1])
        for e in reversed(self.epochs):
            for fam in FAMILIES:
                nodes, heads = e.arrays.get(Stat(site, fam, "node", "accuracy")), e.arrays.get(
                    Stat(site, fam, "head", "accuracy"))
                if nodes is not None and heads is not None and len(heads) and len(nodes) % len(heads) == 0:
                    return len(heads), len(nodes) // len(heads)
        return None

    @property
    def families(self) -> list[str]:
        listed = self._meta("families")
        found = {s.family for e in self.epochs for s in (*e.scalars, *e.arrays)}
        known = list(listed) if listed else []
        return [f for f in FAMILIES if f in known or f in found] + [f for f in known if f not in FAMILIES]

    def series(self, site: str, family: str, granularity: str, statistic: str,
               null: str | None = None) -> tuple[list[int], list[float]]:
        """The epochs that logged this statistic and its values (NaN where undefined)."""
        key = Stat(site, family, granularity, statistic, null)
        pairs = [(e.epoch, e.scalars[key]) for e in self.epochs if key in e.scalars]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_run_folders(path: Path) -> list[Path]:
    """``ssb/<run id>/`` folders at or under ``path``: a folder that itself holds epoch folders
    counts as one; otherwise every ``.../ssb/<run id>/`` below it, sorted."""
    path = Path(path)
    if _epoch_dirs(path):
        return [path]
    found = [p for p in sorted(path.glob("**/ssb/*")) if p.is_dir() and _epoch_dirs(p)]
    if not found:  # a save_dir whose layout is unusual: any folder below holding epoch folders
        found = [p for p in sorted(path.glob("**/*")) if p.is_dir() and _epoch_dirs(p)]
    return found


def _epoch_dirs(folder: Path) -> dict[int, Path]:
    """Epoch number -> folder; of re-runs of one epoch (``epoch_001-1``) the latest is kept."""
    if not folder.is_dir():
        return {}
    best: dict[int, tuple[int, Path]] = {}
    for p in folder.iterdir():
        parsed = E.parse_dirname(p.name)
        if parsed is None or not p.is_dir():
            continue
        epoch, rerun = parsed
        if epoch not in best or rerun > best[epoch][0]:
            best[epoch] = (rerun, p)
    return {e: best[e][1] for e in sorted(best, key=E.order_key)}


def _infer_prefix(keys) -> str:
    """The key prefix the run logged under: ``ssb`` unless the monitor's ``prefix`` was changed,
    then the one whose ``<prefix>/epoch`` key parse_key accepts as the run key."""
    keys = list(keys)
    for k in keys:
        if k.endswith("/epoch"):
            candidate = k[: -len("/epoch")]
            try:
                if parse_key(k, prefix=candidate).kind == "run":
                    return candidate
            except ValueError:
                pass
    return PREFIX


def _number(v) -> float:
    if v is None or v == "":
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _load_scalars(e: EpochResults, prefix: str | None) -> str:
    path = e.folder / "scalars.json"
    if not path.exists():
        e.notes.append(f"{e.name}: no scalars.json")
        return prefix or PREFIX
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        e.notes.append(f"{e.name}: scalars.json unreadable ({err})")
        return prefix or PREFIX
    prefix = prefix or _infer_prefix(raw)
    for k, v in raw.items():
        try:
            parsed = parse_key(k, prefix=prefix)
        except ValueError:
            e.other_scalars[k] = v  # e.g. "epoch"/"step" written without the prefix
            continue
        if parsed.kind == "site":
            e.scalars[Stat.of(parsed)] = _number(v)
        else:
            e.other_scalars[k] = v
            if parsed.kind == "custom":
                e.custom.setdefault(parsed.site, {})[parsed.statistic] = _number(v)
    return prefix


def _load_arrays(e: EpochResults) -> None:
    path = e.folder / "arrays.pt"
    if not path.exists():
        e.notes.append(f"{e.name}: no arrays.pt")
        return
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file is a note, not a crash
        e.notes.append(f"{e.name}: arrays.pt unreadable ({type(err).__name__}: {err})")
        return
    if not isinstance(raw, dict):
        e.notes.append(f"{e.name}: arrays.pt holds a {type(raw).__name__}, not a dict of tensors")
        return
    for k, v in raw.items():
        if not isinstance(v, torch.Tensor):
            continue
        try:  # array keys are scalar keys without the prefix (docs/RESULTS.md)
            parsed = parse_key(f"{PREFIX}/{k}")
        except ValueError:
            continue  # "<site>/<family>/best/<name>" has no granularity: looked up by array_key below
        if parsed.kind == "site":
            e.arrays[Stat.of(parsed)] = v
        elif parsed.kind == "custom":  # "<analysis name>/<key>": a NodalAnalysis's array
            e.custom_arrays.setdefault(parsed.site, {})[parsed.statistic] = v
    sites = {s.site for s in e.arrays} | set(e.meta.get("sites") or {})
    for site in sites:
        for fam in FAMILIES:
            best = {name: raw[key] for name in BEST_ARRAYS
                    if isinstance(raw.get(key := array_key(site, fam, "best", name)), torch.Tensor)}
            if best:
                e.best[(site, fam)] = best


def _load_table(e: EpochResults, name: str, rows: list[dict], text: tuple[str, ...]) -> None:
    path = e.folder / f"{name}.csv"
    if not path.exists():
        return
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append({k: (v if k in text else _number(v)) for k, v in row.items()})
    except (OSError, csv.Error) as err:
        e.notes.append(f"{e.name}: {name}.csv unreadable ({err})")


def load_epoch(folder: Path, epoch: int, prefix: str | None = None) -> tuple[EpochResults, str]:
    e = EpochResults(epoch=epoch, folder=folder)
    meta = folder / "meta.json"
    if meta.exists():
        try:
            e.meta = json.loads(meta.read_text())
        except (OSError, ValueError) as err:
            e.notes.append(f"{e.name}: meta.json unreadable ({err})")
    else:
        e.notes.append(f"{e.name}: no meta.json (label names and site shapes taken from other epochs)")
    prefix = _load_scalars(e, e.meta.get("prefix") or prefix)
    _load_arrays(e)
    _load_table(e, "crossover", e.crossover, ("site", "family"))
    _load_table(e, "sensitivity", e.sensitivity, ("site", "family", "granularity"))
    return e, prefix


def load_run(folder: Path) -> RunResults:
    """One ``ssb/<run id>/`` folder; raises NoResultsError when it holds no epoch folder."""
    folder = Path(folder)
    dirs = _epoch_dirs(folder)
    if not dirs:
        raise NoResultsError(f"{folder}: no SSBMonitor results (no ssb/<run id>/reference or epoch_* folders)")
    states, prefix = [], None
    for epoch, path in dirs.items():
        e, prefix = load_epoch(path, epoch, prefix)
        states.append(e)
    run = RunResults(run_id=folder.name, folder=folder, epochs=states, prefix=prefix or PREFIX)
    # analyze: a run of its own
    if REFERENCE_EPOCH not in dirs and ANALYZE_EPOCH not in dirs and INIT_EPOCH not in dirs:
        run.notes.append("no reference/ folder: the state before training is not shown")
    return run


def load_runs(paths) -> list[RunResults]:
    """Every ``ssb/<run id>/`` at or under each path; a path with none raises NoResultsError."""
    runs = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise NoResultsError(f"{path}: no such file or directory")
        folders = find_run_folders(path)
        if not folders:
            raise NoResultsError(f"{path}: no SSBMonitor results (no ssb/<run id>/reference or epoch_* folders)")
        runs.extend(load_run(f) for f in folders)
    return runs
