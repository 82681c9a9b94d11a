"""Forward hooks that capture per-site activations of a Hugging Face BERT, pooled at capture time.

The sites are declared once, in ``SITE_TABLE`` (the hooked module, pre or post hook, heads or not);
snapshot names are built by ``snapshot_name`` and parsed by ``parse_snapshot_name`` here only.
Snapshot names (stable; see docs/ARCHITECTURE.md and ``snapshot_names``):

- ``blocks.{l}.attn.heads``: the input of layer ``l``'s attention output projection
  (``layer[l].attention.output.dense``), i.e. the per-head context vectors, ``[N, H, d]``;
- ``blocks.{l}.output``: layer ``l``'s hidden-state output, ``[N, 1, D]``.

The hooks sit on ``nn.Linear`` / ``BertLayer`` modules rather than inside the attention
function, so they see the same tensor with the eager and the SDPA implementations.
Every captured tensor is pooled by a position rule (docs/method.md section 2), detached, cast to
float32 and moved to the CPU inside the hook, so no activation outlives the forward pass
on the accelerator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Site:
    """One capturable site of an encoder layer: which module is hooked and how (TransformerLens' hook
    points, for Hugging Face BERT).

    Attributes:
        name: the site's name in snapshot names (``blocks.{l}.<name>``) and in ``SSBMonitor.sites``.
        description: what the tensor is.
        module: the hooked module, from the layer's ``BertLayer``.
        hook: ``pre`` (the module's input) or ``post`` (its output; the first element of a tuple).
        heads: split the D hidden dimensions into the model's attention heads (``[N, H, d]``); otherwise
            one head of D nodes (``[N, 1, D]``).
        order: where the hook fires in the layer's forward pass (the pass may stop after the deepest one).
    """

    name: str
    description: str
    module: Callable[[nn.Module], nn.Module]
    hook: Literal["pre", "post"]
    heads: bool
    order: int


SITE_TABLE: dict[str, Site] = {site.name: site for site in (
    Site("attn.heads", "per-head attention context vectors: the input of the attention output projection",
         lambda layer: layer.attention.output.dense, "pre", heads=True, order=0),
    Site("output", "the layer's hidden-state output", lambda layer: layer, "post", heads=False, order=1),
)}
SITES = tuple(SITE_TABLE)
POSITION_RULES = ("cls", "head_entity", "masked")
_NAME_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def snapshot_name(layer: int, site: str) -> str:
    """The stable name of one captured tensor, e.g. ``blocks.3.attn.heads``."""
    if site not in SITE_TABLE:
        raise ValueError(f"unknown site {site!r}; expected one of {SITES}")
    return f"blocks.{layer}.{site}"


def parse_snapshot_name(name: str) -> tuple[int, str]:
    """``(layer, site)`` of a snapshot name (``blocks.3.attn.heads`` -> ``(3, "attn.heads")``); a ValueError
    names anything else."""
    m = _NAME_RE.match(name)
    if not m or m.group(2) not in SITE_TABLE:
        raise ValueError(f"not a snapshot name (blocks.<layer>.<site>, site one of {SITES}): {name!r}")
    return int(m.group(1)), m.group(2)


def layer_of(name: str) -> int | None:
    """The layer of a snapshot name, None for anything else."""
    try:
        return parse_snapshot_name(name)[0]
    except ValueError:
        return None


def has_heads(name: str) -> bool:
    """Whether the snapshot ``name`` is split into attention heads (False for anything else)."""
    try:
        return SITE_TABLE[parse_snapshot_name(name)[1]].heads
    except ValueError:
        return False


def snapshot_names(layers: list[int], sites: list[str]) -> list[str]:
    """All names captured for ``layers`` x ``sites``, layer-major (the order results are logged in)."""
    return [snapshot_name(layer, site) for layer in layers for site in sites]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """``model.bert.encoder.layer`` of a BertFor* model (or ``model.encoder.layer`` of a BertModel)."""
    base = getattr(model, "bert", model)
    return base.encoder.layer


def select_positions(batch: dict, rule: str, class_of_token: torch.Tensor | None = None,
                     mask_token_id: int | None = None):
    """Which ``(row, position)`` pairs of a batch become examples, and their labels.

    Args:
        batch: a collated batch (docs/ARCHITECTURE.md): ``input_ids`` ``[B, T]``, ``labels``
            (``[B]`` for classification, ``[B, T]`` with -100 for MLM), ``head_pos`` ``[B]``.
        rule: ``"cls"`` (position 0), ``"head_entity"`` (``head_pos``), or ``"masked"``: every
            position whose input is ``[MASK]`` (and whose MLM label is not -100) is one example.
            Chosen positions that the 80/10/10 rule left unchanged or replaced by a random token
            are not: their input already shows a token, so they measure something else.
        class_of_token: MLM only, ``[V]`` long, the class index of each token id or -1 for
            tokens outside the probe's label set; such positions are dropped.
        mask_token_id: MLM only (required there): the id of ``[MASK]``.

    Returns:
        ``(rows [n], positions [n], labels [n])``, long tensors on the batch's device.
    """
    labels = batch["labels"]
    if rule == "cls":
        rows = torch.arange(labels.shape[0], device=labels.device)
        return rows, torch.zeros_like(rows), labels
    if rule == "head_entity":
        rows = torch.arange(labels.shape[0], device=labels.device)
        return rows, batch["head_pos"].to(rows.device), labels
    if rule == "masked":
        if mask_token_id is None:
            raise ValueError("the 'masked' position rule needs mask_token_id")
        masked = (labels != -100) & (batch["input_ids"].to(labels.device) == mask_token_id)
        rows, positions = masked.nonzero(as_tuple=True)
        tokens = labels[rows, positions]
        if class_of_token is None:
            return rows, positions, tokens
        classes = class_of_token.to(tokens.device)[tokens]
        keep = classes >= 0
        return rows[keep], positions[keep], classes[keep]
    raise ValueError(f"unknown position rule {rule!r}; expected one of {POSITION_RULES}")


class SiteCapture:
    """Collects pooled activations of chosen sites while hooks are installed.

    Use through ``capture_sites``; before each forward pass call ``select(rows, positions)``
    with the output of ``select_positions``. After the passes, ``tensors()`` returns
    ``{name: [N, H, d]}`` in the order the examples were seen.
    """

    def __init__(self, model: nn.Module, layers: list[int], sites: list[str]) -> None:
        self.model = model
        self.layers = list(layers)
        self.sites = list(sites)
        self.names = snapshot_names(self.layers, self.sites)
        self._chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        self._rows: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._handles: list = []
        config = model.config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads

    def select(self, rows: torch.Tensor, positions: torch.Tensor) -> None:
        """Set the ``(row, position)`` pairs that the next forward pass contributes."""
        self._rows, self._positions = rows, positions

    def _store(self, name: str, hidden: torch.Tensor, heads: int) -> None:
        if self._rows is None:
            raise RuntimeError("SiteCapture.select(rows, positions) must be called before each forward pass")
        rows = self._rows.to(hidden.device)
        positions = self._positions.to(hidden.device)
        pooled = hidden.detach()[rows, positions]  # [n, D]
        pooled = pooled.reshape(pooled.shape[0], heads, -1).float().cpu()
        self._chunks[name].append(pooled)

    def install(self) -> None:
        layer_modules = encoder_layers(self.model)
        for layer in self.layers:
            for site in self.sites:
                spec = SITE_TABLE[site]
                name, heads = snapshot_name(layer, site), self.num_heads if spec.heads else 1
                module = spec.module(layer_modules[layer])
                if spec.hook == "pre":
                    def pre_hook(_mod, args, _name=name, _heads=heads):
                        self._store(_name, args[0], _heads)

                    self._handles.append(module.register_forward_pre_hook(pre_hook))
                else:
                    def hook(_mod, _args, output, _name=name, _heads=heads):
                        self._store(_name, output[0] if isinstance(output, tuple) else output, _heads)

                    self._handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{name: [N, H, d]}`` (H=1, d=D for ``output`` sites), float32 on the CPU."""
        out = {}
        for name, chunks in self._chunks.items():
            if chunks:
                out[name] = torch.cat(chunks)
            else:  # no example selected: keep the shape so downstream code can concatenate
                heads = self.num_heads if has_heads(name) else 1
                out[name] = torch.zeros(0, heads, self.num_heads * self.head_dim // heads)
        return out


@contextmanager
def capture_sites(model: nn.Module, layers: list[int], sites: list[str]) -> Iterator[SiteCapture]:
    """Install capture hooks for ``layers`` x ``sites`` on a Hugging Face BERT; always removes them."""
    capture = SiteCapture(model, layers, sites)
    capture.install()
    try:
        yield capture
    finally:
        capture.remove()


class _StopForward(Exception):
    """Raised by a hook after the deepest captured layer: the layers above it are not needed."""


def _raise_stop(*_):
    raise _StopForward


@torch.no_grad()
def capture_batches(
    model: nn.Module,
    batches: list,
    layers: list[int],
    sites: list[str],
    device: torch.device | str = "cpu",
    autocast=None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run ``batches`` (``ProbeBatch``) through ``model``'s encoder in eval mode and capture the sites.

    The encoder alone runs (no task head), it stops after the deepest capture, and the
    model's training mode is restored afterwards, also on error.

    Args:
        model: a Hugging Face BertFor* model (the unwrapped module, never a DDP wrapper).
        batches: ``ProbeBatch`` objects; only examples they select are captured.
        layers, sites: what to capture (see ``snapshot_names``).
        device: where the forward pass runs.
        autocast: optional context-manager factory (the trainer's precision context).

    Returns:
        ``({name: [N, H, d]}, labels [N])`` on the CPU, in batch order.
    """
    base = getattr(model, "bert", model)
    was_training = model.training
    model.eval()
    labels = []
    stop = None
    try:
        with capture_sites(model, layers, sites) as capture:
            # registered after the capture hooks, on the module of the deepest layer's last site in the
            # forward order, so that capture runs first and nothing after it is computed (with attn.heads
            # alone, that layer's output projection and feed-forward block never run)
            last = max((SITE_TABLE[s] for s in sites), key=lambda spec: spec.order)
            module = last.module(encoder_layers(model)[max(layers)])
            stop = (module.register_forward_pre_hook(_raise_stop) if last.hook == "pre"
                    else module.register_forward_hook(_raise_stop))
            for batch in batches:
                inputs = {k: v.to(device, non_blocking=True) for k, v in batch.inputs.items()}
                capture.select(batch.rows, batch.positions)
                labels.append(batch.labels)
                try:
                    with (autocast or nullcontext)():
                        base(**inputs)
                except _StopForward:
                    pass
        tensors = capture.tensors()
    finally:
        if stop is not None:
            stop.remove()
        model.train(was_training)
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    return tensors, y


def capture_share(model: nn.Module, batches: Sequence, layers: list[int], sites: list[str], rank: int = 0,
                  world: int = 1, device: torch.device | str = "cpu",
                  autocast=None) -> list[tuple[int, dict, torch.Tensor]]:
    """This rank's share of ``batches`` (every ``world``-th from ``rank``), captured in one pass.

    The hooks are installed once for the whole share. Returns one chunk per batch,
    ``(batch index, {name: [n, H, d]}, labels [n])``, so that ``join_chunks`` restores the
    single-process order whatever the world size.
    """
    indices = list(range(rank, len(batches), world))
    mine = [batches[i] for i in indices]
    tensors, labels = capture_batches(model, mine, layers, sites, device, autocast)
    sizes = [b.num_examples for b in mine]
    split = {name: x.split(sizes) for name, x in tensors.items()}
    y = labels.split(sizes)
    return [(index, {name: parts[j] for name, parts in split.items()}, y[j]) for j, index in enumerate(indices)]


def gather_to_zero(obj, rank: int, world: int) -> list:
    """Every rank's ``obj`` (picklable), one entry per rank, on rank 0; ``[obj]`` on the others."""
    if world == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    gathered = [None] * world if rank == 0 else None
    torch.distributed.gather_object(obj, gathered, dst=0)
    return gathered if rank == 0 else [obj]


def join_chunks(chunks, names: list[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({name: [N, H, d]}, labels [N])`` from chunks, in batch-index (single-process) order."""
    chunks = sorted(chunks, key=lambda c: c[0])
    return {n: torch.cat([c[1][n] for c in chunks]) for n in names}, torch.cat([c[2] for c in chunks])


class ProbeCapture(NamedTuple):
    """The probe's activations of one state: ``{snapshot name: [N, H, d]}`` and labels ``[N]`` per split,
    float32 / long on the CPU, in the probe's batch order."""

    x_train: dict[str, Tensor]
    y_train: Tensor
    x_test: dict[str, Tensor]
    y_test: Tensor


def capture_probe(model: nn.Module, probe, layers: list[int], sites: list[str], rank: int = 0, world: int = 1,
                  device: torch.device | str = "cpu", autocast=None) -> ProbeCapture | None:
    """Capture-and-gather of one analysed epoch: every rank captures its share of the probe batches
    (one hook install per split), rank 0 gathers them back into the single-process order.

    Returns the ``ProbeCapture`` on rank 0, None elsewhere.
    """
    parts = [capture_share(model, batches, layers, sites, rank, world, device, autocast)
             for batches in (probe.train_batches, probe.test_batches)]
    parts = gather_to_zero(parts, rank, world)  # rank 0: [[train chunks, test chunks] of each rank]
    if rank != 0:
        return None
    names = snapshot_names(layers, sites)
    (x_train, y_train), (x_test, y_test) = (join_chunks([c for p in parts for c in p[i]], names) for i in (0, 1))
    return ProbeCapture(x_train, y_train, x_test, y_test)
