"""Progress bars for the slow paper-scale steps: tokenising a corpus, streaming it from the hub, the report.

A tqdm bar on stderr, updated at most once a second (so a log file gets a few lines, not thousands);
``LIGHTNING_SSB_PROGRESS=0`` turns them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True):
    """``tqdm(iterable)`` labelled ``lightning_ssb: <desc>``; use it as an iterable or a context manager."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=f"lightning_ssb: {desc}", unit=unit, file=sys.stderr,
                mininterval=1.0, dynamic_ncols=True,
                disable=not enabled or os.environ.get("LIGHTNING_SSB_PROGRESS") == "0")
