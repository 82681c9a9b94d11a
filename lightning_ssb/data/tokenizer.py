"""Tokenizer loading: the shipped bert-base-uncased WordPiece vocabulary by default.

Entity markers ``[E1] [/E1] [E2] [/E2]`` reuse the ``[unused0..3]`` slots of a BERT
vocabulary (ids 1..4), so turning them on keeps the vocabulary at 30522 and a
pre-trained MLM checkpoint stays compatible with the fine-tuning tokenizer. Only a
vocabulary without ``[unused0..3]`` gets four new ids appended instead.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from pathlib import Path

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

from lightning_ssb.hub import DownloadError, looks_like_hub_id, why_unavailable

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
DEFAULT_VOCAB = SAMPLES_DIR / "bert-base-uncased-vocab.txt"
ENTITY_MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")


def load_tokenizer(path: str | os.PathLike | None = None, entity_markers: bool = False) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer.

    Args:
        path: None for the shipped bert-base-uncased vocabulary; a ``.txt`` WordPiece
            vocabulary (one token a line, lower-cased BERT rules); a local directory with
            a saved Hugging Face tokenizer; or a hub id such as ``bert-base-uncased``
            (needs internet).
        entity_markers: add ``[E1] [/E1] [E2] [/E2]`` as special tokens, in the
            ``[unused0..3]`` slots when the vocabulary has them.

    Raises:
        FileNotFoundError: ``"<path>: ..."`` when a local path does not exist.
        ValueError: ``"<path>: ..."`` when the file or directory is not a usable tokenizer.
    """
    if path is None:
        tokenizer = _from_vocab_file(DEFAULT_VOCAB, entity_markers)
    else:
        p = Path(os.path.expanduser(str(path)))
        if p.is_file():
            tokenizer = _from_vocab_file(p, entity_markers)
        elif p.is_dir():
            tokenizer = _from_directory(p, entity_markers)
        elif looks_like_hub_id(str(path)):
            tokenizer = _from_hub(str(path), entity_markers)
        else:
            raise FileNotFoundError(f"{path}: tokenizer path does not exist "
                                    "(expected a vocab .txt or a tokenizer directory)")
    return tokenizer


def _read_vocab(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: vocabulary is not UTF-8 text ({err.reason})") from None
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        token = line.rstrip("\r\n")
        if token in vocab:
            raise ValueError(f"{path}: line {i + 1}: duplicate vocabulary entry {token!r}")
        vocab[token] = i
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in vocab]
    if missing:
        raise ValueError(f"{path}: not a BERT WordPiece vocabulary (missing {', '.join(missing)})")
    return vocab


def _from_vocab_file(path: Path, entity_markers: bool) -> PreTrainedTokenizerFast:
    vocab = _read_vocab(path)
    if entity_markers and all(f"[unused{i}]" in vocab for i in range(len(ENTITY_MARKERS))):
        for i, marker in enumerate(ENTITY_MARKERS):
            vocab[marker] = vocab.pop(f"[unused{i}]")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:
        tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)  # transformers >= 5
    else:  # transformers 4.x only reads a vocab file
        with tempfile.TemporaryDirectory() as tmp:
            vocab_file = Path(tmp) / "vocab.txt"
            ordered = sorted(vocab, key=vocab.__getitem__)
            vocab_file.write_text("\n".join(ordered) + "\n", encoding="utf-8")
            tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    if entity_markers:
        _add_markers(tokenizer)
    return tokenizer


def _from_directory(path: Path, entity_markers: bool) -> PreTrainedTokenizerFast:
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as err:  # transformers raises OSError/ValueError/KeyError variously
        raise ValueError(f"{path}: not a loadable tokenizer directory ({type(err).__name__}: {err})") from None
    return _finish(tokenizer, str(path), entity_markers)


def _from_hub(name: str, entity_markers: bool) -> PreTrainedTokenizerFast:
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as err:  # noqa: BLE001 - huggingface_hub and transformers raise many types here
        raise DownloadError(why_unavailable(f"tokenizer {name}", err, "give a vocab .txt or a local tokenizer "
                                            "folder (null: the shipped bert-base-uncased vocabulary)")) from None
    return _finish(tokenizer, name, entity_markers)


def _finish(tokenizer, where: str, entity_markers: bool) -> PreTrainedTokenizerFast:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{where}: only fast (Rust-backed) tokenizers are supported")
    if entity_markers:
        _rename_unused_slots(tokenizer)
        _add_markers(tokenizer)
    return tokenizer


def _rename_unused_slots(tokenizer: PreTrainedTokenizerFast) -> None:
    """Rename ``[unused0..3]`` to the entity markers inside the backend model's vocab."""
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state.get("model", {}).get("vocab")
    if not isinstance(vocab, dict):
        return  # e.g. a Unigram model: markers get new ids
    if any(m in vocab for m in ENTITY_MARKERS):
        return  # already renamed (a tokenizer saved with markers on)
    if not all(f"[unused{i}]" in vocab for i in range(len(ENTITY_MARKERS))):
        return
    for i, marker in enumerate(ENTITY_MARKERS):
        vocab[marker] = vocab.pop(f"[unused{i}]")
    tokenizer._tokenizer = Tokenizer.from_str(json.dumps(state))


def _add_markers(tokenizer: PreTrainedTokenizerFast) -> None:
    # Special tokens are never split, lower-cased or chosen for masking.
    tokenizer.add_special_tokens({"additional_special_tokens": list(ENTITY_MARKERS)})


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """A hash that changes whenever the tokenizer's output could change (for cache keys).

    It covers vocabulary, normaliser, pre-tokeniser and added tokens, but not the
    truncation/padding state, which each call sets anew.
    """
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode("utf-8")).hexdigest()
