"""FewRelDataModule: the seeded per-relation split on the real files, entity markers, errors."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from lightning_ssb.data import FewRelDataModule
from lightning_ssb.data.fewrel import load_fewrel, split_per_relation


def _counts(path):
    return {pid: len(v) for pid, v in load_fewrel(path).items()}


def _instance(data, pair):
    """An instance as text: FewRel repeats some sentences with other entity pairs."""
    inst = list(data.values())[pair[0]][pair[1]]
    return json.dumps([inst["tokens"], inst["h"], inst["t"]])


def test_paper_split_on_val_wiki(shared_data, tmp_path):
    """630/70 per relation on the official val_wiki (16 relations x 700)."""
    path = shared_data / "val_wiki.json.gz"
    dm = FewRelDataModule(train_file=str(path), cache_dir=str(tmp_path))
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.num_labels, len(dm.train_dataset), len(dm.val_dataset)) == (16, 16 * 630, 16 * 70)
    pid2name = json.loads((shared_data / "pid2name.json").read_text())
    assert dm.label_names == [pid2name[pid][0] for pid in dm.relation_ids]
    assert dm.relation_ids[0] == "P177" and dm.label_names[0] == "crosses"
    # Labels are relation indices in file order, balanced per split.
    labels = torch.tensor([dm.train_dataset[i]["label"] for i in range(len(dm.train_dataset))])
    assert torch.bincount(labels).tolist() == [630] * 16
    assert dm.task == "classification" and dm.vocab_size == 30522


def test_split_135_15_on_train64x150(shared_data):
    path = shared_data / "fewrel_train64x150.json.gz"
    data = load_fewrel(path)
    counts = {pid: len(v) for pid, v in data.items()}
    train, test = split_per_relation(counts, 135, 15, seed=0)
    assert (len(train), len(test)) == (64 * 135, 64 * 15)
    assert not set(train) & set(test)
    # Disjoint by content too (no instance repeated across the split).
    assert not {_instance(data, p) for p in train} & {_instance(data, p) for p in test}
    assert split_per_relation(counts, 135, 15, seed=0) == (train, test)
    other_train, other_test = split_per_relation(counts, 135, 15, seed=1)
    assert set(other_test) != set(test)
    # Each relation's split depends on the seed and the relation id only.
    sub = dict(list(counts.items())[5:9])
    _, sub_test = split_per_relation(sub, 135, 15, seed=0)
    assert {(i, j) for i, j in sub_test} == {(i - 5, j) for i, j in test if 5 <= i < 9}


def _write_fewrel(path, data):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        json.dump(data, f)
    return path


PARIS = {
    "tokens": ["Paris", "is", "the", "capital", "of", "France", "."],
    "h": ["paris", "Q90", [[0]]],
    "t": ["france", "Q142", [[5]]],
}
# Tail before head, multi-word head, a word split into several WordPieces.
HUB = {
    "tokens": ["Near", "Denpasar", ",", "Ngurah", "Rai", "International", "Airport", "opened", "."],
    "h": ["ngurah rai international airport", "Q1", [[3, 4, 5, 6]]],
    "t": ["denpasar", "Q2", [[1]]],
}


def _toy(tmp_path, name="toy.json"):
    return _write_fewrel(tmp_path / name, {"P1": [PARIS, HUB], "P2": [HUB, PARIS]})


def _tokens(dm, example):
    return dm.tokenizer.convert_ids_to_tokens(example["input_ids"])


def _all(ds):
    return [ds[i] for i in range(len(ds))]


def test_entity_markers_hand_checked(tmp_path):
    dm = FewRelDataModule(train_file=str(_toy(tmp_path)), train_per_relation=1, test_per_relation=1,
                          entity_markers=True, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    seen = {tuple(_tokens(dm, e)): e["head_pos"] for e in _all(dm.train_dataset) + _all(dm.val_dataset)}
    paris = ("[CLS]", "[E1]", "paris", "[/E1]", "is", "the", "capital", "of", "[E2]", "france", "[/E2]", ".", "[SEP]")
    assert seen[paris] == 1
    hub = [t for t in seen if "near" in t][0]
    assert hub[:4] == ("[CLS]", "near", "[E2]", "den")  # denpasar -> den ##pas ##ar
    assert hub[hub.index("[/E2]") + 2 :][:2] == ("[E1]", "ng")
    assert hub[seen[hub]] == "[E1]" and hub.count("[E1]") == 1 and hub.index("[/E1]") == hub.index("[E1]") + 7


def test_head_pos_without_markers(tmp_path):
    dm = FewRelDataModule(train_file=str(_toy(tmp_path)), train_per_relation=1, test_per_relation=1,
                          cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    for e in _all(dm.train_dataset) + _all(dm.val_dataset):
        toks = _tokens(dm, e)
        assert toks[e["head_pos"]] == ("paris" if "paris" in toks else "ng")
        assert not set(toks) & {"[E1]", "[E2]"}
    assert dm.label_names == ["P1", "P2"]  # not in the shipped pid2name: named by id


def test_labels_follow_file_order_and_batches_match_contract(tmp_path):
    path = _write_fewrel(tmp_path / "toy.json.gz", {"P9": [PARIS] * 3, "P1": [HUB] * 3})
    dm = FewRelDataModule(train_file=str(path), train_per_relation=2, test_per_relation=1, batch_size=4,
                          cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    assert dm.relation_ids == ["P9", "P1"] and dm.num_labels == 2
    for e in _all(dm.train_dataset):
        assert e["label"] == (0 if "paris" in _tokens(dm, e) else 1)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "head_pos"}
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["head_pos"].dtype == torch.long
    assert batch["labels"].shape == batch["head_pos"].shape == (4,)
    assert batch["attention_mask"].sum(1).max() == batch["input_ids"].shape[1]
    assert len(list(dm.test_dataloader())) == 1


def test_max_length_truncates(tmp_path):
    dm = FewRelDataModule(train_file=str(_toy(tmp_path)), train_per_relation=1, test_per_relation=1, max_length=6,
                          entity_markers=True, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    for e in _all(dm.train_dataset):
        assert len(e["input_ids"]) == 6 and e["input_ids"][-1] == 102
        # The Hub sentence's head starts at token 8: cut away, so head_pos falls back to [CLS].
        assert e["head_pos"] == (1 if "paris" in _tokens(dm, e) else 0)


def test_shipped_sample_defaults(tmp_path):
    dm = FewRelDataModule(train_per_relation=40, test_per_relation=10, cache_dir=str(tmp_path))
    assert dm.num_labels == 64 and dm.label_names[0] == "place served by transport hub"
    with pytest.raises(ValueError, match=r"fewrel_sample.json.gz: relation P931 has 50 instances, fewer than"):
        FewRelDataModule(cache_dir=str(tmp_path))  # the paper's 630/70 needs the full file


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a non-empty JSON object"),
        ('{"P1": [{"tokens": ["a"], "h": ["a", "Q", [[0]]]}]}', "relation P1, instance 0: expected an object with"),
        ('{"P1": [{"tokens": ["a", "b"], "h": ["a", "Q", [[0]]], "t": ["b", "Q", [[7]]]}]}',
         "relation P1, instance 0: tail entity: span position 7 out of range for 2 tokens"),
        ('{"P1": [{"tokens": ["a"], "h": ["a", "Q"], "t": ["a", "Q", [[0]]]}]}', "head entity: expected \\[name, Qid"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"^{path}: .*{message}"):
        FewRelDataModule(train_file=str(path), cache_dir=str(tmp_path))


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        FewRelDataModule(train_file=str(tmp_path / "none.json"))
    assert str(missing.value) == (  # where the official data is published, and the offline alternative
        f"{tmp_path}/none.json: FewRel file does not exist (FewRel 1.0 is published at "
        "https://github.com/thunlp/FewRel (data/train_wiki.json, data/val_wiki.json); data.train_file: null uses "
        "the shipped sample (64 relations x 50 sentences))")
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path}/p.json: pid2name file does not exist"):
        FewRelDataModule(train_file=str(_toy(tmp_path)), pid2name=str(tmp_path / "p.json"),
                         train_per_relation=1, test_per_relation=1)
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path}/tok: tokenizer path does not exist"):
        FewRelDataModule(train_file=str(_toy(tmp_path)), tokenizer=str(tmp_path / "tok"),
                         train_per_relation=1, test_per_relation=1)


def test_second_setup_reads_the_cache(tmp_path, monkeypatch):
    kwargs = dict(train_file=str(_toy(tmp_path)), train_per_relation=1, test_per_relation=1,
                  cache_dir=str(tmp_path / "c"))
    first = FewRelDataModule(**kwargs)
    first.prepare_data()
    assert first.cache_hit is False and first.cache_path.exists()
    first.setup("fit")
    second = FewRelDataModule(**kwargs)
    monkeypatch.setattr(second, "_build_splits", lambda: pytest.fail("tokenised again despite the cache"))
    second.prepare_data()
    second.setup("fit")
    assert second.cache_hit is True
    assert _all(second.train_dataset) == _all(first.train_dataset)
    # Markers change the tokens, so they get their own cache entry.
    assert FewRelDataModule(**kwargs, entity_markers=True).cache_path != first.cache_path
