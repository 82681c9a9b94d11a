"""One synthetic run and its report, built once for the report tests (figures kept for reading back)."""

from __future__ import annotations

import pytest

from lightning_ssb.report import build_report, load_runs
from tests.report.synthetic import WITH_INIT, write_run

ATTN_SITES = {"blocks.0.attn.heads": [4, 4], "blocks.1.attn.heads": [4, 4]}


@pytest.fixture(scope="session")
def synthetic_report(tmp_path_factory):
    """``(run folder, book)``: the report of a synthetic run with two attention sites, both read-outs, the null."""
    root = tmp_path_factory.mktemp("report")
    run = write_run(root / "runs" / "fewrel", sites=ATTN_SITES, epochs=WITH_INIT)
    book = build_report(load_runs([root / "runs" / "fewrel"]), root / "out" / "report.html", keep_figures=True)
    return run, book
