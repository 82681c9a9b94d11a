"""load_tokenizer: the shipped vocabulary, entity markers in the [unused] slots, clear errors."""

from __future__ import annotations

import pytest

from lightning_ssb.data import ENTITY_MARKERS, load_tokenizer
from lightning_ssb.data.tokenizer import DEFAULT_VOCAB


def test_default_is_bert_base_uncased(tokenizer):
    assert len(tokenizer) == 30522
    special = (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id)
    assert special == (0, 101, 102, 103)
    assert tokenizer("The cat")["input_ids"] == [101, 1996, 4937, 102]  # lower-cased WordPiece


def test_entity_markers_reuse_unused_slots():
    tok = load_tokenizer(entity_markers=True)
    assert len(tok) == 30522  # no new ids: a pre-trained checkpoint still fits
    assert tok.convert_tokens_to_ids(list(ENTITY_MARKERS)) == [1, 2, 3, 4]
    # Markers survive lower-casing and are never split, in text and in pre-split words.
    assert tok("a [E1] b [/E1]")["input_ids"] == [101, 1037, 1, 1038, 2, 102]
    assert tok(["a", "[E2]", "b", "[/E2]"], is_split_into_words=True)["input_ids"] == [101, 1037, 3, 1038, 4, 102]
    assert set(range(1, 5)) <= set(tok.all_special_ids)


def test_directory_and_vocab_file_agree(tmp_path):
    saved = tmp_path / "tok"
    load_tokenizer().save_pretrained(saved)
    from_dir = load_tokenizer(str(saved), entity_markers=True)
    from_txt = load_tokenizer(str(DEFAULT_VOCAB), entity_markers=True)
    text = "Paris is the capital of [E1] France [/E1]."
    assert from_dir(text)["input_ids"] == from_txt(text)["input_ids"]
    assert len(from_dir) == 30522


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match=f"^{missing}: "):
        load_tokenizer(str(missing))


def test_malformed_vocab_names_it(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=f"^{bad}: not a BERT WordPiece vocabulary"):
        load_tokenizer(str(bad))


def test_directory_without_tokenizer_names_it(tmp_path):
    with pytest.raises(ValueError, match=f"^{tmp_path}: not a loadable tokenizer directory"):
        load_tokenizer(str(tmp_path))
