"""Fixtures for the data tests: the shipped tokenizer and a tokenised Wikipedia sample."""

from __future__ import annotations

import pytest

from lightning_ssb.data import WikipediaDataModule, load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lssb_cache")


@pytest.fixture(scope="session")
def wiki_sample(session_cache) -> WikipediaDataModule:
    """The shipped 3,000-article sample, tokenised once per session (5% validation)."""
    dm = WikipediaDataModule(cache_dir=str(session_cache))
    dm.prepare_data()
    dm.setup("fit")
    return dm
