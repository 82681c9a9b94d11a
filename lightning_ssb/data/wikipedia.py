"""English Wikipedia for masked-language-model pre-training (docs/method.md section 1).

Each article becomes one example: its first ``max_length`` WordPiece tokens,
[CLS] and [SEP] included (the paper's first-128-tokens rule). A seeded draw picks
``num_articles`` articles and splits them into train and validation.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lightning_ssb.data.base import TokenizedDataModule
from lightning_ssb.data.cache import file_identity
from lightning_ssb.data.dataset import TokenizedDataset
from lightning_ssb.data.masking import MaskingCollator
from lightning_ssb.data.tokenizer import SAMPLES_DIR, load_tokenizer
from lightning_ssb.hub import DownloadError, quiet_retries, why_unavailable
from lightning_ssb.progress import progress

SAMPLE_FILE = SAMPLES_DIR / "enwiki_sample.txt.gz"
HUB_DATASET = "wikimedia/wikipedia"
# Characters of each article kept before tokenising: English averages ~5 characters per
# WordPiece token, so 32 per token leaves a wide margin while skipping most of the text.
CHARS_PER_TOKEN = 32
_TOKENIZE_BATCH = 1000
_DOC_OPEN = re.compile(r"^<doc\b[^>]*>$")
_DOC_TITLE = re.compile(r'\btitle="([^"]*)"')


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _cut(text: str, limit: int) -> str:
    """Keep at most ``limit`` characters, cut at whitespace (so the tokens of the kept
    prefix are exactly the first tokens of the whole text)."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(" ", 0, limit + 1), text.rfind("\n", 0, limit + 1))
    return text[: cut if cut > 0 else limit]


def read_articles(path: str | os.PathLike, char_limit: int | None = None) -> Iterator[str]:
    """Yield the text of each non-empty article in a local file.

    Formats: WikiExtractor output (``<doc ...>`` ... ``</doc>``; the title line that opens
    each article is dropped, as in the hub corpus), ``.jsonl`` with a ``"text"`` field, or
    plain text with articles separated by blank lines; any of them optionally ``.gz``.

    Raises:
        FileNotFoundError, ValueError: ``"<path>: <what is wrong>"``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Wikipedia source file does not exist")
    limit = char_limit or None
    try:
        with _open_text(path) as f:
            name = path.name[:-3] if path.suffix == ".gz" else path.name
            if name.endswith(".jsonl"):
                readers = _read_jsonl(f, path)
            else:
                first, first_lineno = "", 0
                for lineno, line in enumerate(f, 1):  # the first non-blank line (the last line if none)
                    first, first_lineno = line, lineno
                    if line.strip():
                        break
                if first.startswith("<doc"):
                    readers = _read_wikiextractor(f, first, first_lineno, path)
                else:
                    readers = _read_blocks(f, first)
            for text in readers:
                text = text.strip()
                if text:
                    yield _cut(text, limit) if limit else text
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise ValueError(f"{path}: cannot read as UTF-8 text ({type(err).__name__}: {err})") from None


def _read_jsonl(f, path: Path) -> Iterator[str]:
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno}: not JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{path}: line {lineno}: expected an object with a string 'text' field")
        yield record["text"]


def _read_wikiextractor(f, first: str, first_lineno: int, path: Path) -> Iterator[str]:
    lines: list[str] | None = None
    title = None
    opened_at = 0
    numbered = itertools.chain([(first_lineno, first)], enumerate(f, first_lineno + 1))
    for lineno, line in numbered:
        if line.startswith("<doc"):
            if lines is not None:
                raise ValueError(f"{path}: line {lineno}: <doc> opened before the <doc> of line {opened_at} was closed")
            if not _DOC_OPEN.match(line.strip()):
                raise ValueError(f"{path}: line {lineno}: malformed <doc ...> header")
            title_match = _DOC_TITLE.search(line)
            lines, title, opened_at = [], title_match and title_match.group(1), lineno
        elif line.rstrip("\n") == "</doc>":
            if lines is None:
                raise ValueError(f"{path}: line {lineno}: </doc> without an open <doc>")
            if lines and title is not None and lines[0].strip() == title.strip():
                lines = lines[1:]  # the title line repeats the header's title
            yield "".join(lines)
            lines = None
        elif lines is not None:
            lines.append(line)
    if lines is not None:
        raise ValueError(f"{path}: <doc> opened at line {opened_at} is never closed (truncated file?)")


def _read_blocks(f, first: str) -> Iterator[str]:
    block: list[str] = [first]
    for line in f:
        if line.strip():
            block.append(line)
        elif block:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


def shard_quotas(num_articles: int, num_shards: int, seed: int) -> list[int]:
    """How many articles each shard gives: equal shares, the remainder to shards drawn with ``seed``."""
    quotas = [num_articles // num_shards] * num_shards
    for shard in np.random.default_rng(seed).permutation(num_shards)[: num_articles % num_shards]:
        quotas[shard] += 1
    return quotas


def read_hub_articles(config: str, num_articles: int, seed: int, buffer_size: int, char_limit: int,
                      dataset: str = HUB_DATASET) -> list[str]:
    """Articles of a Hugging Face dataset (``wikimedia/wikipedia`` by default), streamed, drawn across the
    whole corpus.

    The corpus comes in shards (its parquet files, in page-id order): every shard gives an equal share of
    ``num_articles``, drawn through a seeded shuffle buffer of ``buffer_size`` articles within the shard,
    so the sample spans the corpus instead of the first one or two shards a single buffer would read.
    Without network (or with ``HF_HUB_OFFLINE=1`` and nothing cached) one line says what could not be
    downloaded and how to train from local files.
    """
    from datasets import load_dataset

    what = f"data.source hub: {dataset} ({config})"
    offline_hint = ("point data.source at local files, e.g. --data.init_args.source "
                    "'[enwiki_AA.txt.gz,enwiki_AB.txt.gz]' (WikiExtractor, .jsonl or plain text)")
    texts: list[str] = []
    try:
        with quiet_retries():
            stream = load_dataset(dataset, config, split="train", streaming=True)
            shards = stream.num_shards
            with progress(total=num_articles, desc=f"streaming {dataset} {config} ({shards} shards)",
                          unit="articles") as bar:
                for index, quota in enumerate(shard_quotas(num_articles, shards, seed)):
                    if not quota:
                        continue
                    shard = stream.shard(num_shards=shards, index=index)
                    for record in shard.shuffle(seed=seed + index, buffer_size=buffer_size).take(quota):
                        text = record["text"].strip()
                        if text:
                            texts.append(_cut(text, char_limit))
                        bar.update()
    except Exception as err:  # noqa: BLE001 - datasets, huggingface_hub and the network raise many types
        raise DownloadError(why_unavailable(what, err, offline_hint)) from None
    return texts


class WikipediaDataModule(TokenizedDataModule):
    """English Wikipedia articles, each cut to its first ``max_length`` tokens, for MLM.

    Args:
        source: ``"sample"`` for the shipped 3,000-article sample; a path, or a list of
            paths, to WikiExtractor ``<doc>`` files, ``.jsonl`` files with a ``"text"``
            field, or plain-text files with blank-line-separated articles (each
            optionally ``.gz``); or ``"hub"`` to stream ``hub_dataset`` from the Hugging Face hub
            (needs network once, then cached; set ``num_articles``), drawn across all its shards.
        num_articles: how many articles to draw (the paper: 20000, 40000, 90000); None for all.
        seed: which articles are drawn and how they split into train/val; independent
            of the training seed, so runs with different training seeds see the same data.
        max_length: tokens kept per article, [CLS] and [SEP] included.
        val_fraction: fraction of the drawn articles held out for validation.
        batch_size: sequences per batch (per device).
        num_workers: DataLoader worker processes (0: load in the main process).
        tokenizer: None for the shipped bert-base-uncased vocabulary, a vocab ``.txt``,
            or a Hugging Face tokenizer directory or hub id.
        cache_dir: where tokenised data is cached; None for ``$LIGHTNING_SSB_CACHE``
            or ``~/.cache/lightning_ssb``.
        length_grouped: batch articles of similar length together (most articles reach
            ``max_length``, so this rarely helps here).
        mlm_probability: fraction of non-special tokens chosen for the MLM loss.
        hub_config: ``hub_dataset`` configuration (dump date and language) for ``source="hub"``.
        hub_shuffle_buffer: shuffle buffer within each shard of the streamed hub corpus.
        hub_dataset: the hub dataset (or a local folder laid out like one) with a ``text`` column.
    """

    name = "wikipedia"
    task = "mlm"

    def __init__(
        self,
        source: str | list[str] = "sample",
        num_articles: int | None = None,
        seed: int = 0,
        max_length: int = 128,
        val_fraction: float = 0.05,
        batch_size: int = 32,
        num_workers: int = 0,
        tokenizer: str | None = None,
        cache_dir: str | None = None,
        length_grouped: bool = False,
        mlm_probability: float = 0.15,
        hub_config: str = "20231101.en",
        hub_shuffle_buffer: int = 10_000,
        hub_dataset: str = HUB_DATASET,
    ) -> None:
        super().__init__(cache_dir)
        self.save_hyperparameters()
        if num_articles is not None and num_articles < 1:
            raise ValueError(f"num_articles must be positive or None, got {num_articles}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 ([CLS], a token, [SEP]), got {max_length}")
        self.source = source
        self.is_hub = source == "hub"
        if self.is_hub:
            if num_articles is None:
                raise ValueError("source='hub': set num_articles (the full corpus has millions of articles)")
            self.files: list[Path] = []
        else:
            paths = ([SAMPLE_FILE] if source == "sample" else [source] if isinstance(source, (str, os.PathLike))
                     else source)
            self.files = [Path(p).expanduser() for p in paths]
            for p in self.files:
                if not p.is_file():
                    raise FileNotFoundError(f"{p}: Wikipedia source file does not exist")
        self.num_articles = num_articles
        self.seed = seed
        self.max_length = max_length
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.length_grouped = length_grouped
        self.hub_config = hub_config
        self.hub_shuffle_buffer = hub_shuffle_buffer
        self.hub_dataset = hub_dataset

        self.tokenizer = load_tokenizer(tokenizer)
        self.vocab_size = len(self.tokenizer)
        self.label_names = self.tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))
        self.num_labels = self.vocab_size
        self.collate_fn = MaskingCollator(self.tokenizer, mlm_probability=mlm_probability)

    def _cache_parts(self) -> dict[str, Any]:
        if self.is_hub:
            inputs: Any = {"hub": self.hub_dataset, "config": self.hub_config, "buffer": self.hub_shuffle_buffer,
                           "draw": "per-shard"}
        else:
            inputs = [file_identity(p) for p in self.files]
        return {
            "inputs": inputs,
            "num_articles": self.num_articles,
            "seed": self.seed,
            "max_length": self.max_length,
            "val_fraction": self.val_fraction,
        }

    def _read(self) -> list[str]:
        char_limit = self.max_length * CHARS_PER_TOKEN
        if self.is_hub:
            return read_hub_articles(self.hub_config, self.num_articles, self.seed, self.hub_shuffle_buffer,
                                     char_limit, self.hub_dataset)
        articles = (text for p in self.files for text in read_articles(p, char_limit))
        return list(progress(articles, desc=f"reading {len(self.files)} Wikipedia file(s)", unit="articles"))

    def _build_splits(self) -> tuple[dict[str, TokenizedDataset], dict[str, Any]]:
        articles = self._read()
        where = "hub" if self.is_hub else ", ".join(map(str, self.files))
        if self.num_articles is not None and self.num_articles > len(articles):
            raise ValueError(f"{where}: num_articles={self.num_articles} but only {len(articles)} non-empty articles")
        drawn = np.random.default_rng(self.seed).permutation(len(articles))[: self.num_articles]
        n_val = int(round(self.val_fraction * len(drawn)))
        if self.val_fraction > 0 and len(drawn) > 1:
            n_val = min(max(n_val, 1), len(drawn) - 1)
        if len(drawn) - n_val < 1:
            raise ValueError(f"{where}: no articles left for training")
        # File order within each split, so a split reads like its source.
        index = {"val": np.sort(drawn[:n_val]), "train": np.sort(drawn[n_val:])}
        splits = {name: TokenizedDataset.from_lists(self._tokenize([articles[i] for i in idx]))
                  for name, idx in index.items()}
        return splits, {"articles": len(articles)}

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """First ``max_length`` tokens of each text. Tokenising the whole kept prefix is slow
        (the tokenizer truncates only afterwards), so a short cut (8 characters per token;
        128 tokens took at most 844 characters in 6,510 articles) goes first and only texts
        that come out short are tokenised again from the longer prefix: the same result."""
        short = self.max_length * 8
        ids = self._encode([_cut(t, short) for t in texts], show=True)
        redo = [i for i, (t, x) in enumerate(zip(texts, ids, strict=True))
                if len(x) < self.max_length and len(t) > short]
        for i, x in zip(redo, self._encode([texts[i] for i in redo]), strict=True):
            ids[i] = x
        return ids

    def _encode(self, texts: list[str], show: bool = False) -> list[list[int]]:
        ids: list[list[int]] = []
        for start in progress(range(0, len(texts), _TOKENIZE_BATCH), desc=f"tokenising {len(texts)} articles",
                              unit="batches", enabled=show):
            batch = texts[start : start + _TOKENIZE_BATCH]
            ids.extend(self.tokenizer(batch, truncation=True, max_length=self.max_length)["input_ids"])
        return ids
