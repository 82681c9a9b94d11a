"""FewRel 1.0 relation classification (docs/method.md section 1).

The official format: ``{relation_id: [{"tokens": [...], "h": [name, Qid, [[positions]]],
"t": [...]}, ...]}``. Each relation's instances are split, seeded, into
``train_per_relation`` train and ``test_per_relation`` test instances (the paper: 630/70
of ``train_wiki``'s 700). Labels are relation indices in file order.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lightning_ssb.data.base import TokenizedDataModule
from lightning_ssb.data.cache import file_identity
from lightning_ssb.data.collate import ClassificationCollator
from lightning_ssb.data.dataset import TokenizedDataset
from lightning_ssb.data.tokenizer import ENTITY_MARKERS, SAMPLES_DIR, load_tokenizer
from lightning_ssb.progress import progress

log = logging.getLogger(__name__)

SAMPLE_FILE = SAMPLES_DIR / "fewrel_sample.json.gz"
SAMPLE_PID2NAME = SAMPLES_DIR / "pid2name.json"
OFFICIAL = ("FewRel 1.0 is published at https://github.com/thunlp/FewRel (data/train_wiki.json, "
            "data/val_wiki.json); data.train_file: null uses the shipped sample (64 relations x 50 sentences)")
_TOKENIZE_BATCH = 1000


def _load_json(path: Path, what: str, hint: str = "") -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} does not exist" + (f" ({hint})" if hint else ""))
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise ValueError(f"{path}: cannot read as UTF-8 JSON ({type(err).__name__}: {err})") from None


def load_fewrel(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Read and validate a FewRel file (``.json`` or ``.json.gz``).

    Raises:
        FileNotFoundError, ValueError: ``"<path>: <what is wrong>"``.
    """
    path = Path(path).expanduser()
    data = _load_json(path, "FewRel file", OFFICIAL)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object mapping relation ids to lists of instances")
    for pid, instances in data.items():
        if not isinstance(instances, list) or not instances:
            raise ValueError(f"{path}: relation {pid}: expected a non-empty list of instances")
        for i, inst in enumerate(instances):
            where = f"{path}: relation {pid}, instance {i}"
            if not isinstance(inst, dict) or not {"tokens", "h", "t"} <= inst.keys():
                raise ValueError(f"{where}: expected an object with 'tokens', 'h' and 't'")
            tokens = inst["tokens"]
            if not isinstance(tokens, list) or not tokens or not all(isinstance(w, str) for w in tokens):
                raise ValueError(f"{where}: 'tokens' must be a non-empty list of strings")
            for key, role in (("h", "head"), ("t", "tail")):
                _check_entity(inst[key], len(tokens), f"{where}: {role} entity")
    return data


def _check_entity(entity: Any, n_tokens: int, where: str) -> None:
    if not isinstance(entity, list) or len(entity) < 3 or not isinstance(entity[2], list) or not entity[2]:
        raise ValueError(f"{where}: expected [name, Qid, [[token positions], ...]]")
    for span in entity[2]:
        if (not isinstance(span, list) or not span
                or not all(isinstance(p, int) and not isinstance(p, bool) for p in span)):
            raise ValueError(f"{where}: span {span!r} is not a non-empty list of token positions")
        bad = [p for p in span if not 0 <= p < n_tokens]
        if bad:
            raise ValueError(f"{where}: span position {bad[0]} out of range for {n_tokens} tokens")


def load_label_names(relation_ids: list[str], pid2name: str | os.PathLike | None, train_file: Path) -> list[str]:
    """Relation names from a ``pid2name.json`` (``{"P931": [name, description]}``).

    ``pid2name=None``: the ``pid2name.json`` next to ``train_file`` if there is one, else
    the shipped copy. A relation missing from the file is named by its id.
    """
    if pid2name is None:
        beside = train_file.parent / "pid2name.json"
        path = beside if beside.is_file() else SAMPLE_PID2NAME
    else:
        path = Path(pid2name).expanduser()
    table = _load_json(path, "pid2name file")
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a JSON object mapping relation ids to [name, description]")
    names = []
    for pid in relation_ids:
        entry = table.get(pid)
        name = entry[0] if isinstance(entry, list) and entry and isinstance(entry[0], str) else entry
        names.append(name if isinstance(name, str) and name else pid)
    return names


def split_per_relation(
    counts: dict[str, int], train_per_relation: int, test_per_relation: int, seed: int, where: str = "FewRel"
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Seeded per-relation split into ``(relation index, instance index)`` pairs.

    Each relation draws its own permutation from ``(seed, crc32(relation id))``, so a
    relation's split does not depend on the other relations in the file.

    Raises:
        ValueError: ``"<where>: relation ... has N instances, fewer than ..."``.
    """
    need = train_per_relation + test_per_relation
    train: list[tuple[int, int]] = []
    test: list[tuple[int, int]] = []
    for label, (pid, n) in enumerate(counts.items()):
        if n < need:
            raise ValueError(
                f"{where}: relation {pid} has {n} instances, fewer than train_per_relation + test_per_relation"
                f" = {train_per_relation} + {test_per_relation} = {need}; lower them (the shipped sample has 50 per"
                " relation, e.g. 40 + 10)"
            )
        perm = np.random.default_rng([seed, zlib.crc32(pid.encode("utf-8"))]).permutation(n)
        train.extend((label, int(i)) for i in perm[:train_per_relation])
        test.extend((label, int(i)) for i in perm[train_per_relation:need])
    return train, test


def mark_entities(tokens: list[str], head: list, tail: list, markers: bool) -> tuple[list[str], int, int]:
    """Words of the sentence, with ``[E1] .. [/E1]``, ``[E2] .. [/E2]`` around the first
    mention of head and tail when ``markers``.

    Returns:
        ``(words, first, last)``: the words, and the word range whose first token is the
        head position (the ``[E1]`` word with markers, else the head's words).
    """
    h_start, h_end = min(head[2][0]), max(head[2][0])
    if not markers:
        return list(tokens), h_start, h_end
    t_start, t_end = min(tail[2][0]), max(tail[2][0])
    # Openers before a word (outer span first), closers after it (inner span first).
    spans = [(h_start, h_end, ENTITY_MARKERS[0], ENTITY_MARKERS[1]),
             (t_start, t_end, ENTITY_MARKERS[2], ENTITY_MARKERS[3])]
    words: list[str] = []
    head_at = -1
    for i, word in enumerate(tokens):
        for start, _end, opener, _ in sorted(spans, key=lambda s: -s[1]):
            if start == i:
                if opener == ENTITY_MARKERS[0]:
                    head_at = len(words)
                words.append(opener)
        words.append(word)
        for _start, end, _, closer in sorted(spans, key=lambda s: -s[0]):
            if end == i:
                words.append(closer)
    return words, head_at, head_at


class FewRelDataModule(TokenizedDataModule):
    """FewRel relation classification with a seeded per-relation train/test split.

    Args:
        train_file: a FewRel JSON file (``.json`` or ``.json.gz``), e.g. ``train_wiki.json``;
            None for the shipped sample (64 relations x 50 instances).
        pid2name: relation id -> ``[name, description]`` JSON for label names; None for the
            ``pid2name.json`` next to ``train_file``, else the shipped copy.
        train_per_relation: training instances drawn per relation (the paper: 630).
        test_per_relation: test instances drawn per relation (the paper: 70); they form
            ``val_dataset``, used for validation and testing.
        seed: the split's seed; independent of the training seed.
        max_length: tokens kept per sentence, [CLS] and [SEP] included.
        entity_markers: put ``[E1] .. [/E1]`` around the head and ``[E2] .. [/E2]`` around
            the tail (the vocabulary's ``[unused0..3]``, so the size stays 30522).
        batch_size: sentences per batch (per device).
        num_workers: DataLoader worker processes (0: load in the main process).
        tokenizer: None for the shipped bert-base-uncased vocabulary, a vocab ``.txt``,
            or a Hugging Face tokenizer directory or hub id.
        cache_dir: where tokenised data is cached; None for ``$LIGHTNING_SSB_CACHE``
            or ``~/.cache/lightning_ssb``.
        length_grouped: batch sentences of similar length together for training (less padding).
    """

    name = "fewrel"
    task = "classification"

    def __init__(
        self,
        train_file: str | None = None,
        pid2name: str | None = None,
        train_per_relation: int = 630,
        test_per_relation: int = 70,
        seed: int = 0,
        max_length: int = 128,
        entity_markers: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        tokenizer: str | None = None,
        cache_dir: str | None = None,
        length_grouped: bool = True,
    ) -> None:
        super().__init__(cache_dir)
        self.save_hyperparameters()
        if train_per_relation < 1 or test_per_relation < 1:
            raise ValueError(
                "train_per_relation and test_per_relation must be positive, "
                f"got {train_per_relation}, {test_per_relation}"
            )
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 ([CLS], a token, [SEP]), got {max_length}")
        self.train_file = Path(train_file).expanduser() if train_file else SAMPLE_FILE
        self.train_per_relation = train_per_relation
        self.test_per_relation = test_per_relation
        self.seed = seed
        self.max_length = max_length
        self.entity_markers = entity_markers
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.length_grouped = length_grouped

        # Read now: models need num_labels at construction, and a bad file should fail early.
        self._data: dict[str, list[dict]] | None = load_fewrel(self.train_file)
        self.relation_ids = list(self._data)
        self.num_labels = len(self.relation_ids)
        self.label_names = load_label_names(self.relation_ids, pid2name, self.train_file)
        counts = {pid: len(v) for pid, v in self._data.items()}
        self._split = split_per_relation(counts, train_per_relation, test_per_relation, seed, str(self.train_file))

        self.tokenizer = load_tokenizer(tokenizer, entity_markers=entity_markers)
        self.vocab_size = len(self.tokenizer)
        self.collate_fn = ClassificationCollator(self.tokenizer.pad_token_id)

    def _cache_parts(self) -> dict[str, Any]:
        return {
            "inputs": file_identity(self.train_file),
            "train_per_relation": self.train_per_relation,
            "test_per_relation": self.test_per_relation,
            "seed": self.seed,
            "max_length": self.max_length,
            "entity_markers": self.entity_markers,
        }

    def _build_splits(self) -> tuple[dict[str, TokenizedDataset], dict[str, Any]]:
        data = self._data if self._data is not None else load_fewrel(self.train_file)
        instances = list(data.values())
        train, test = self._split
        splits = {"train": self._encode(instances, train), "val": self._encode(instances, test)}
        self._data = None  # the cache holds what is needed from here on
        return splits, {"relation_ids": self.relation_ids}

    def _encode(self, instances: list[list[dict]], pairs: list[tuple[int, int]]) -> TokenizedDataset:
        input_ids: list[list[int]] = []
        head_pos: list[int] = []
        lost = 0
        for start in progress(range(0, len(pairs), _TOKENIZE_BATCH), desc=f"tokenising {len(pairs)} sentences",
                              unit="batches"):
            chunk = pairs[start : start + _TOKENIZE_BATCH]
            marked = [mark_entities(**self._fields(instances[r][i])) for r, i in chunk]
            enc = self.tokenizer(
                [words for words, _, _ in marked], is_split_into_words=True, truncation=True, max_length=self.max_length
            )
            for j, (_, first, last) in enumerate(marked):
                word_ids = enc.word_ids(j)
                pos = next((p for p, w in enumerate(word_ids) if w is not None and first <= w <= last), None)
                if pos is None:  # the head was truncated away (or tokenised to nothing)
                    lost += 1
                    pos = 0  # fall back to [CLS]
                head_pos.append(pos)
            input_ids.extend(enc["input_ids"])
        if lost:
            log.warning("%s: head entity beyond max_length=%d in %d sentences; head_pos=0 ([CLS]) for those",
                        self.train_file, self.max_length, lost)
        labels = [label for label, _ in pairs]
        return TokenizedDataset.from_lists(input_ids, label=labels, head_pos=head_pos)

    def _fields(self, inst: dict) -> dict[str, Any]:
        return {"tokens": inst["tokens"], "head": inst["h"], "tail": inst["t"], "markers": self.entity_markers}

    def test_dataloader(self):
        """The test split (the same data as ``val_dataloader``)."""
        return self.val_dataloader()
