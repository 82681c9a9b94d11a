"""WikipediaDataModule: the first-128-tokens rule, the seeded draw, formats, errors, caching."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import torch

from lightning_ssb.data import WikipediaDataModule
from lightning_ssb.data.wikipedia import SAMPLE_FILE, read_articles


def test_sample_articles_cut_to_first_128_tokens(wiki_sample):
    dm = wiki_sample
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (2850, 150)  # 3,000 articles, 5% held out
    lengths = dm.train_dataset.lengths
    assert lengths.max() == 128 and (lengths == 128).mean() > 0.8
    first = dm.train_dataset[0]["input_ids"]  # file order: "Anarchism" is the first article
    assert first[0] == 101 and first[-1] == 102
    text = next(read_articles(SAMPLE_FILE))  # the whole article, no character cut
    assert first == dm.tokenizer(text)["input_ids"][:127] + [102]
    assert dm.tokenizer.decode(first[1:6]) == "anarchism is a"  # title line dropped; ana ##rch ##ism


def test_contract_attributes_and_batches(wiki_sample):
    dm = wiki_sample
    assert dm.task == "mlm" and dm.vocab_size == 30522 and len(dm.label_names) == 30522
    assert dm.label_names[103] == "[MASK]" and dm.label_names[1996] == "the"
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["labels"].shape == (32, batch["attention_mask"].sum(1).max())
    assert all(v.dtype == torch.long for v in batch.values())


def _write_docs(path, texts):
    docs = "".join(f'<doc id="{i}" url="http://x?curid={i}" title="T{i}">\nT{i}\n\n{t}\n</doc>\n'
                   for i, t in enumerate(texts))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(docs)
    return path


ARTICLES = [" ".join(["article", "number", str(i), "says"] + ["word"] * (i % 7) + ["end"]) for i in range(40)]


def test_seeded_draw_and_split(tmp_path):
    src = _write_docs(tmp_path / "w.txt.gz", ARTICLES)

    def texts(seed):
        dm = WikipediaDataModule(source=str(src), num_articles=20, seed=seed, val_fraction=0.25,
                                 cache_dir=str(tmp_path))
        dm.setup("fit")
        return [[dm.tokenizer.decode(e["input_ids"][1:-1]) for e in ds] for ds in (dm.train_dataset, dm.val_dataset)]

    train, val = texts(0)
    assert (len(train), len(val)) == (15, 5)
    assert not set(train) & set(val) and set(train) | set(val) <= set(ARTICLES)
    assert texts(0) == [train, val]
    assert set(texts(1)[0]) != set(train)


def test_formats_give_the_same_articles(tmp_path):
    wikiextractor = _write_docs(tmp_path / "a.txt.gz", ARTICLES[:3])
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"text": t, "title": "x"}) + "\n" for t in ARTICLES[:3]))
    (tmp_path / "c.txt").write_text("\n\n".join(ARTICLES[:3]) + "\n")
    for path in (wikiextractor, tmp_path / "b.jsonl", tmp_path / "c.txt"):
        assert list(read_articles(path)) == ARTICLES[:3], path
    dm = WikipediaDataModule(source=[str(tmp_path / "b.jsonl"), str(tmp_path / "c.txt")], val_fraction=0.0,
                             cache_dir=str(tmp_path))
    dm.setup("fit")
    assert len(dm.train_dataset) == 6 and len(dm.val_dataset) == 0


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("open.txt", '<doc id="1" title="A">\nA\n\ntext\n', "<doc> opened at line 1 is never closed"),
        ("nested.txt", '<doc id="1">\nx\n<doc id="2">\ny\n</doc>\n', "line 3: <doc> opened before"),
        ("bad.jsonl", '{"text": "ok"}\n{"title": 1}\n', "line 2: expected an object with a string 'text' field"),
        ("notjson.jsonl", "hello\n", "line 1: not JSON"),
        ("binary.txt.gz", "plain, not gzip", "cannot read as UTF-8 text"),
    ],
)
def test_malformed_sources_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        list(read_articles(path))


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path}/none.txt.gz: Wikipedia source file does not exist"):
        WikipediaDataModule(source=str(tmp_path / "none.txt.gz"))
    with pytest.raises(ValueError, match="source='hub': set num_articles"):
        WikipediaDataModule(source="hub")  # checked before any download
    src = _write_docs(tmp_path / "w.txt.gz", ARTICLES[:5])
    dm = WikipediaDataModule(source=str(src), num_articles=6, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=f"^{src}: num_articles=6 but only 5 non-empty articles"):
        dm.prepare_data()


def test_second_setup_reads_the_cache(tmp_path, monkeypatch):
    src = _write_docs(tmp_path / "w.txt.gz", ARTICLES)
    kwargs = dict(source=str(src), num_articles=10, cache_dir=str(tmp_path / "cache"))
    first = WikipediaDataModule(**kwargs)
    first.prepare_data()
    first.setup("fit")
    assert first.cache_hit is False and first.cache_path.exists()
    second = WikipediaDataModule(**kwargs)
    monkeypatch.setattr(second, "_build_splits", lambda: pytest.fail("tokenised again despite the cache"))
    second.prepare_data()
    second.setup("fit")
    assert second.cache_hit is True and list(second.train_dataset) == list(first.train_dataset)
    # Another option, or an edited source file, is another cache entry.
    before = first.cache_path
    assert WikipediaDataModule(**{**kwargs, "max_length": 64}).cache_path != before
    os.utime(src, ns=(0, 12345))
    assert WikipediaDataModule(**kwargs).cache_path != before


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_SSB_CACHE", str(tmp_path / "env"))
    assert WikipediaDataModule().cache_path.parent == tmp_path / "env"


def test_long_characters_per_token_still_exact(tmp_path):
    """A 150-character word is one [UNK]: the quick 8-characters-per-token cut comes out
    short, and the article is tokenised again from its full text."""
    text = "a" * 150 + " the" * 40
    src = tmp_path / "long.jsonl"
    src.write_text(json.dumps({"text": text}) + "\n" + json.dumps({"text": "short one"}) + "\n")
    dm = WikipediaDataModule(source=str(src), max_length=16, val_fraction=0.0, cache_dir=str(tmp_path))
    dm.setup("fit")
    got = sorted((e["input_ids"] for e in dm.train_dataset), key=len)
    assert got[1] == dm.tokenizer(text, truncation=True, max_length=16)["input_ids"]
    assert got[1][:3] == [101, 100, 1996] and len(got[1]) == 16


@pytest.fixture
def no_shutdown_sleep(monkeypatch):
    """``datasets`` (5.x) sleeps 5 s each time a parquet stream is closed before its end, so that
    PyArrow's reader threads stop before garbage collection (apache/arrow#45214): 8 shards drawn with
    ``take`` slept 40 s of a 40.5 s call. The draw itself is what these tests check, so the pause is 0
    here, and the closed streams are collected before the test ends, while Arrow is alive."""
    import gc

    from datasets import config

    monkeypatch.setattr(config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    yield
    gc.collect()


def hub_layout(root, shards: int = 8, per_shard: int = 60):
    """A folder laid out as ``wikimedia/wikipedia`` is on the hub (a README whose metadata names the config
    ``20231101.en`` and its parquet shards), that ``datasets`` streams like the hub corpus. Every
    article says which shard it is in."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "20231101.en").mkdir(parents=True)
    (root / "README.md").write_text("---\nconfigs:\n- config_name: 20231101.en\n  data_files:\n  - split: train\n"
                                    "    path: 20231101.en/train-*\n---\n")
    for s in range(shards):
        texts = [f"shard{s} article {i} " + "words of wikipedia text " * 20 for i in range(per_shard)]
        pq.write_table(pa.table({"id": [f"{s}-{i}" for i in range(per_shard)],
                                 "title": [f"t{i}" for i in range(per_shard)], "text": texts}),
                       root / "20231101.en" / f"train-{s:05d}-of-{shards:05d}.parquet",
                       row_group_size=20)
    return root


def test_hub_sample_is_drawn_across_every_shard(tmp_path, capsys, no_shutdown_sleep):
    """40 articles of an 8-shard corpus: 5 from each shard (one shuffle buffer over the stream took them
    all from the first shard it read); another seed draws other articles; progress is shown."""
    import collections

    from lightning_ssb.data.wikipedia import read_hub_articles, shard_quotas

    root = hub_layout(tmp_path / "wiki")
    drawn = read_hub_articles("20231101.en", 40, seed=3, buffer_size=30, char_limit=4096, dataset=str(root))
    shards = collections.Counter(text.split()[0] for text in drawn)
    assert shards == {f"shard{s}": 5 for s in range(8)}
    assert len(set(drawn)) == 40
    assert read_hub_articles("20231101.en", 40, 4, 30, 4096, str(root)) != drawn
    err = capsys.readouterr().err
    assert f"lightning_ssb: streaming {root} 20231101.en (8 shards): 100%" in err and "40/40" in err
    assert sum(shard_quotas(43, 8, 0)) == 43 and sorted(set(shard_quotas(43, 8, 0))) == [5, 6]


def test_hub_module_tokenises_the_drawn_articles_with_progress(tmp_path, capsys, no_shutdown_sleep):
    root = hub_layout(tmp_path / "wiki")
    dm = WikipediaDataModule(source="hub", hub_dataset=str(root), num_articles=40, val_fraction=0.1,
                             cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_dataset), len(dm.val_dataset)) == (36, 4)
    err = capsys.readouterr().err
    assert "lightning_ssb: streaming" in err and "lightning_ssb: tokenising 36 articles: 100%" in err
    assert f"lightning_ssb: wikipedia: tokenised 36 train, 4 val examples, cached in {dm.cache_path}" in err
