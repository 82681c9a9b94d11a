"""What produced a run: the versions of the packages that shape its numbers, and the code's git commit.

Written into ``run.json`` and every results folder's ``meta.json``, so a number can be traced to the code
and libraries that computed it, long after the environment is gone.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("lightning_ssb", "torch", "transformers", "lightning", "wandb")


def versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES` (None when one is not installed)."""
    import lightning_ssb

    found: dict[str, str | None] = {}
    for name in PACKAGES:
        if name == "lightning_ssb":
            found[name] = lightning_ssb.__version__  # the code that runs, also from a checkout on PYTHONPATH
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit(folder: str | Path | None = None) -> dict | None:
    """The commit of the git checkout that holds ``folder`` (default: this package's source) and whether its
    tracked files differ from it; None outside a checkout or without git."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """``{"versions": {...}, "git": {"commit", "dirty"} or None}``, computed once per process."""
    return {"versions": versions(), "git": git_commit()}
