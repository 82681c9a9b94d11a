"""The one place that builds a logged key, and the one place that parses it (docs/RESULTS.md).

``ssb/<site>/<family>[/null_<kind>]/<granularity>/<statistic>``, plus ``ssb/epoch``,
``ssb/analysis_seconds`` and ``ssb/<custom name>/<key>`` for a user's analysis. ``<kind>`` is a null:
``train`` (read-outs fitted on permuted probe-train labels, scored on the real ones) or ``both``
(probe-test labels permuted too).

W&B gets the same values under keys rearranged for its workspace (``wandb_key``, inverse
``parse_wandb_key``): W&B puts a panel into the section named by the key's first ``/`` segment and
reads a ``.`` as nesting, so the W&B key leads with the statistic and names the site without dots:
``ssb-<statistic>/<family>/<granularity>/L<layer>-<site>`` (``ssb-null_<kind>/<statistic>/...`` for a
null). The disk, the report and ``compare`` keep the keys above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "ssb"
FAMILIES = ("own", "shared")
GRANULARITIES = ("node", "head", "site")
NULLS = ("both", "train")
NULL_PREFIX = "null_"
LEGACY_NULL = "null"  # the one null of earlier versions (both splits permuted), read as "both"
RUN_KEYS = ("epoch", "analysis_seconds")
HEADS_FIGURE = "heads"  # the figure group of the layers x heads accuracy map (``ssb/heads/accuracy``)
WANDB_FIGURES = "figures"  # W&B section of the images: ``ssb-figures/<name>/<site tag or "heads">``
WANDB_CUSTOM = "custom"  # W&B section of a NodalAnalysis: ``ssb-custom-<name>/<key>``
_SITE_RE = re.compile(r"^blocks\.(\d+)\.([a-z_]+(?:\.[a-z_]+)*)$")
_TAG_RE = re.compile(r"^L(\d+)-([a-z_]+(?:-[a-z_]+)*)$")


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


TABLES = ("nodes", "crossover", "sensitivity")  # ``ssb/<table>`` on W&B, ``<table>.csv`` on disk
RESERVED_NAMES = (*RUN_KEYS, HEADS_FIGURE, *TABLES, "report", WANDB_FIGURES, WANDB_CUSTOM)
_CUSTOM_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def check_custom_name(name) -> str:
    """``name`` when a custom analysis may log under it (``ssb/<name>/<key>``); otherwise a ValueError in one
    line saying which built-in it would collide with."""
    if not isinstance(name, str) or not _CUSTOM_RE.match(name):
        raise ValueError(f"a custom analysis name is a letter, then letters, digits, _ or -, got {name!r}")
    if name in RESERVED_NAMES or _is_site(name):
        raise ValueError(f"a custom analysis cannot be named {name!r}: it would collide with the built-in keys "
                         f"(reserved: {', '.join(RESERVED_NAMES)} and blocks.*)")
    return name


def custom_key(analysis: str, key: str, prefix: str = PREFIX) -> str:
    """``ssb/<analysis name>/<key>`` for a user's NodalAnalysis."""
    check_custom_name(analysis)
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


def site_tag(site: str) -> str:
    """A site without dots, for W&B: ``blocks.3.attn.heads`` -> ``L03-attn-heads``, ``blocks.3.output``
    -> ``L03-output`` (two digits, so that BERT-base's 12 layers sort in order)."""
    m = _SITE_RE.match(site)
    if not m:
        raise ValueError(f"not a site name (blocks.<layer>.<site>): {site!r}")
    return f"L{int(m.group(1)):02d}-{m.group(2).replace('.', '-')}"


def site_from_tag(tag: str) -> str:
    """Inverse of ``site_tag``."""
    m = _TAG_RE.match(tag)
    if not m:
        raise ValueError(f"not a W&B site tag (L<layer>-<site>): {tag!r}")
    return f"blocks.{int(m.group(1))}.{m.group(2).replace('-', '.')}"


def _untag(segment: str) -> str:
    return site_from_tag(segment) if _TAG_RE.match(segment) else segment


def _tag(segment: str) -> str:
    return site_tag(segment) if _SITE_RE.match(segment) else segment


def wandb_key(key: str, prefix: str = PREFIX) -> str:
    """The W&B key of a scalar key (docs/RESULTS.md, "W&B"): its first segment is the workspace section.

    - ``ssb/<site>/<family>/<granularity>/<statistic>`` -> ``ssb-<statistic>/<family>/<granularity>/<tag>``
    - ``ssb/<site>/<family>/null_<kind>/<granularity>/<statistic>`` ->
      ``ssb-null_<kind>/<statistic>/<family>/<granularity>/<tag>``
    - ``ssb/epoch``, ``ssb/analysis_seconds``: unchanged (section ``ssb``, with the tables and the report)
    - ``ssb/<custom name>/<key>`` -> ``ssb-custom-<custom name>/<key>`` (a site in it tagged)

    ``<tag>`` is ``site_tag(site)``. ``parse_wandb_key`` inverts it.
    """
    p = parse_key(key, prefix)
    if p.kind == "run":
        return key
    if p.kind == "custom":
        return f"{prefix}-{WANDB_CUSTOM}-{p.site}/" + "/".join(_tag(s) for s in p.statistic.split("/"))
    assert p.site is not None  # a site key names its site
    tail = f"{p.family}/{p.granularity}/{site_tag(p.site)}"
    if p.null:
        return f"{prefix}-{null_segment(p.null)}/{p.statistic}/{tail}"
    return f"{prefix}-{p.statistic}/{tail}"


def wandb_figure_key(key: str, prefix: str = PREFIX) -> str:
    """The W&B key of an image: a built-in figure ``ssb/<site or "heads">/<name>`` ->
    ``ssb-figures/<name>/<tag or "heads">``; a custom analysis's figure as ``wandb_key``."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == prefix and (parts[1] == HEADS_FIGURE or _SITE_RE.match(parts[1])):
        return f"{prefix}-{WANDB_FIGURES}/{parts[2]}/{_tag(parts[1])}"
    return wandb_key(key, prefix)


def parse_wandb_key(key: str, prefix: str = PREFIX) -> str:
    """The scalar (or figure) key a W&B key was built from: the inverse of ``wandb_key`` and
    ``wandb_figure_key``; a ValueError names a key that is neither."""
    section, _, rest = key.partition("/")
    parts = rest.split("/") if rest else []
    if section == prefix:
        parse_key(key, prefix)  # a run key (or a table, the report): the same on W&B
        return key
    head = f"{prefix}-"
    if not section.startswith(head) or not parts:
        raise ValueError(f"not a W&B key of this monitor ({head}<section>/...): {key!r}")
    name = section[len(head):]
    if name.startswith(WANDB_CUSTOM + "-"):
        return custom_key(name[len(WANDB_CUSTOM) + 1:], "/".join(_untag(s) for s in parts), prefix)
    if name == WANDB_FIGURES and len(parts) == 2:
        return figure_key(_untag(parts[1]), parts[0], prefix)
    null = None
    if name.startswith(NULL_PREFIX) and len(parts) == 4:
        null, name, parts = name[len(NULL_PREFIX):], parts[0], parts[1:]
    if len(parts) != 3:
        raise ValueError(f"not a W&B statistic key ({head}<statistic>/<family>/<granularity>/L<layer>-<site>): {key!r}")
    family, granularity, tag = parts
    try:
        return scalar_key(site_from_tag(tag), family, granularity, name, null, prefix)
    except ValueError as err:
        raise ValueError(f"{err}, in the W&B key {key!r}") from None
