"""Read a local W&B run file (``run-*.wandb``) back: history rows, config, summary, metric definitions
and logged artifacts.

W&B 0.19+ writes an offline run as a single record log (no ``wandb-summary.json``), in the
LevelDB log format: a 7-byte header (``:W&B``, magic 0xBEE1, version), then 32 KiB blocks of
records, each with a 7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last)
around a protobuf ``Record``. This reader lets tests and users inspect offline runs without
syncing them.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 32768
HEADER = 7


@dataclass
class WandbRunRecords:
    """What a run file holds: ``history`` rows (dicts), the merged ``config`` and ``summary``, the run's
    ``name`` and ``group``, ``step_metrics`` (``{metric: its x axis}`` from ``define_metric``) and
    ``artifacts`` (``{name, type, metadata, files}`` per logged artifact; ``files``: path in the artifact
    -> the local file it was taken from)."""

    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    name: str = ""
    group: str = ""
    step_metrics: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)
    finished: bool = False  # the run's exit record is in the file

    def series(self, key: str) -> list:
        """The values logged under ``key``, in order."""
        return [row[key] for row in self.history if key in row]

    def keys(self) -> set[str]:
        return {k for row in self.history for k in row}


def _payloads(raw: bytes):
    if raw[:4] != b":W&B":
        raise ValueError("not a W&B run file (bad header)")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        data = raw[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == 1:
            yield data
        elif kind == 2:
            pending = data
        elif kind == 3:
            pending += data
        elif kind == 4:
            yield pending + data
            pending = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_wandb_run(path: str | Path, wait: float = 0.0) -> WandbRunRecords:
    """Parse ``run-*.wandb`` (or the run folder containing it) into :class:`WandbRunRecords`.

    The wandb-core service writes the file asynchronously, also after ``run.finish()`` returns:
    ``wait`` seconds (polled) lets a finished run's last records arrive (until its exit record is
    there). ``wait=0`` reads whatever is there now, e.g. from a run still in progress.
    """
    deadline = time.monotonic() + wait
    while True:
        records = _read_once(path)
        if records.finished or time.monotonic() >= deadline:
            return records
        time.sleep(0.2)


def _read_once(path: str | Path) -> WandbRunRecords:
    from wandb.proto import wandb_internal_pb2 as pb  # wandb is only needed when reading

    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if not files:
            raise FileNotFoundError(f"{path}: no run-*.wandb file in this folder")
        path = files[0]
    out = WandbRunRecords()
    for data in _payloads(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind in ("config", "run"):  # config given to wandb.init travels in the run record
            if kind == "run":
                out.name, out.group = rec.run.display_name, rec.run.run_group
            updates = rec.config.update if kind == "config" else rec.run.config.update
            for i in updates:
                if _key(i) != "_wandb":
                    out.config[_key(i)] = json.loads(i.value_json)
        elif kind == "summary":
            for i in rec.summary.update:
                out.summary[_key(i)] = json.loads(i.value_json)
        elif kind == "metric" and rec.metric.name:
            out.step_metrics[rec.metric.name] = rec.metric.step_metric
        elif kind == "artifact":
            art = rec.artifact
            out.artifacts.append({"name": art.name, "type": art.type,
                                  "metadata": json.loads(art.metadata) if art.metadata else {},
                                  "files": {e.path: e.local_path for e in art.manifest.contents}})
        elif kind == "exit":
            out.finished = True
    return out
