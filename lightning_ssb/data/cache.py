"""On-disk cache of tokenised splits, keyed by a hash of everything that shapes them.

The key covers each input file's absolute path, size and modification time, the
tokenizer's full serialisation (vocabulary, normaliser, added tokens) and the data
module's options, so editing a file or changing an option makes a new entry rather
than reading a stale one. Entries are ``.npz`` files written atomically (temp file,
then rename), so concurrent ranks or interrupted runs never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lightning_ssb.data.dataset import TokenizedDataset

CACHE_ENV = "LIGHTNING_SSB_CACHE"
CACHE_FORMAT = 1  # bump when the stored layout or the tokenisation rules change


def default_cache_dir() -> Path:
    """``$LIGHTNING_SSB_CACHE`` if set, else ``~/.cache/lightning_ssb``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lightning_ssb")


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Absolute path, size and mtime: changes whenever the file is replaced or edited."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def save_splits(path: Path, splits: dict[str, TokenizedDataset], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    for name, ds in splits.items():
        arrays.update(ds.to_arrays(name))
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_splits(path: Path, names: tuple[str, ...]) -> tuple[dict[str, TokenizedDataset], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"]))
    return {name: TokenizedDataset.from_arrays(arrays, name) for name in names}, meta
