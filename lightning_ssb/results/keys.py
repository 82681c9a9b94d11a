"""The one place that builds a logged key, and the one place that parses it (docs/RESULTS.md).

``ssb/<site>/<family>[/null_<kind>]/<granularity>/<statistic>``, plus ``ssb/epoch``,
``ssb/analysis_seconds`` and ``ssb/<custom name>/<key>`` for a user's analysis. ``<kind>`` is a null:
``train`` (read-outs fitted on permuted probe-train labels, scored on the real ones) or ``both``
(probe-test labels permuted too).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "ssb"
FAMILIES = ("own", "shared")
GRANULARITIES = ("node", "head", "site")
NULLS = ("both", "train")
NULL_PREFIX = "null_"
LEGACY_NULL = "null"  # the one null of earlier versions (both splits permuted), read as "both"
RUN_KEYS = ("epoch", "analysis_seconds")


@dataclass(frozen=True)
class ParsedKey:
    """A key split into its parts. ``kind`` is ``site`` (a built-in statistic of one site),
    ``run`` (``ssb/epoch``, ``ssb/analysis_seconds``) or ``custom`` (a NodalAnalysis's key)."""

    kind: str
    statistic: str
    site: str | None = None
    family: str | None = None
    granularity: str | None = None
    null: str | None = None  # None (the real labels), "train" or "both"
    prefix: str = PREFIX


def _is_site(name: str) -> bool:
    return name.startswith("blocks.")


def null_segment(kind: str) -> str:
    """``null_train`` or ``null_both``: the key segment of a null."""
    if kind not in NULLS:
        raise ValueError(f"null must be one of {NULLS}, got {kind!r}")
    return NULL_PREFIX + kind


def scalar_key(site: str, family: str, granularity: str, statistic: str, null: str | None = None,
               prefix: str = PREFIX) -> str:
    """``ssb/<site>/<family>[/null_<kind>]/<granularity>/<statistic>``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if not _is_site(site) or "/" in site or "/" in statistic:
        raise ValueError(f"bad site or statistic name: {site!r}, {statistic!r}")
    parts = [prefix, site, family] + ([null_segment(null)] if null else []) + [granularity, statistic]
    return "/".join(parts)


def run_key(name: str, prefix: str = PREFIX) -> str:
    """``ssb/epoch`` or ``ssb/analysis_seconds``."""
    if name not in RUN_KEYS:
        raise ValueError(f"run key must be one of {RUN_KEYS}, got {name!r}")
    return f"{prefix}/{name}"


def custom_key(analysis: str, key: str, prefix: str = PREFIX) -> str:
    """``ssb/<analysis name>/<key>`` for a user's NodalAnalysis."""
    if _is_site(analysis) or analysis in RUN_KEYS:
        raise ValueError(f"a custom analysis cannot be named {analysis!r}: it would clash with built-in keys")
    return f"{prefix}/{analysis}/{key}"


def parse_key(key: str, prefix: str = PREFIX) -> ParsedKey:
    """Inverse of ``scalar_key`` / ``run_key`` / ``custom_key``; a ValueError names a key that is none."""
    parts = key.split("/")
    if len(parts) < 2 or parts[0] != prefix:
        raise ValueError(f"not a {prefix}/ key: {key!r}")
    rest = parts[1:]
    if len(rest) == 1 and rest[0] in RUN_KEYS:
        return ParsedKey("run", rest[0], prefix=prefix)
    if not _is_site(rest[0]):
        return ParsedKey("custom", "/".join(rest[1:]), site=rest[0], prefix=prefix)
    null = rest[2][len(NULL_PREFIX):] if len(rest) == 5 and rest[2].startswith(NULL_PREFIX) else None
    if len(rest) == 5 and rest[2] == LEGACY_NULL:  # results written before the two nulls: both splits permuted
        null = "both"
    if (len(rest) != (5 if null else 4) or rest[1] not in FAMILIES or rest[-2] not in GRANULARITIES
            or (null is not None and null not in NULLS)):
        raise ValueError(f"not a site key ({prefix}/<site>/<family>[/null_<kind>]/<granularity>/<statistic>): {key!r}")
    return ParsedKey("site", rest[-1], site=rest[0], family=rest[1], granularity=rest[-2], null=null, prefix=prefix)


def array_key(site: str, family: str, granularity: str, name: str) -> str:
    """A key of ``arrays.pt``: ``<site>/<family>/<granularity>/<name>`` (a scalar key without its prefix;
    ``granularity`` ``best`` for the best nodes' matrices, docs/RESULTS.md)."""
    if granularity == "best":
        if family not in FAMILIES or not _is_site(site):
            raise ValueError(f"bad site or family: {site!r}, {family!r}")
        return f"{site}/{family}/best/{name}"
    return scalar_key(site, family, granularity, name).split("/", 1)[1]


def figure_key(group: str, name: str, prefix: str = PREFIX) -> str:
    """The name of a logged image: ``ssb/<site or "heads">/<name>`` (a file ``ssb__<group>__<name>.png`` on disk)."""
    if "/" in group:
        raise ValueError(f"bad figure group {group!r}")
    return f"{prefix}/{group}/{name}"
