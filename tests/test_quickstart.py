"""The quick start shows symmetry breaking (issue #9): measured at its end from its own disk results.

Last layer, own read-out: at most 1% of nodes live before training, at least 25% after, and the null
(permuted labels) at most 1% at every analysis; the fine-tuned model is well above chance on FewRel;
the command prints where its report is, and the report is a page with the run's figures.
"""

import json
import re
from pathlib import Path

import pytest

from lightning_ssb.loggers import read_wandb_run

pytestmark = pytest.mark.slow
LAST = "blocks.5.attn.heads"


def epochs(run: Path) -> dict[str, dict]:
    (results,) = [p for p in (run / "ssb").iterdir() if p.is_dir()]
    return {p.name: json.loads((p / "scalars.json").read_text()) for p in sorted(results.iterdir())
            if (p / "scalars.json").is_file()}


def test_quickstart_nodes_break_the_symmetry(quickstart):
    run, _ = quickstart
    scalars = epochs(run)
    assert list(scalars) == ["epoch_000", "reference"]
    key = f"ssb/{LAST}/own/node/live_fraction"
    null = f"ssb/{LAST}/own/null/node/live_fraction"
    assert scalars["reference"][key] <= 0.01
    assert scalars["epoch_000"][key] >= 0.25
    assert all(s[null] <= 0.01 for s in scalars.values())
    # the symmetry is broken, not just lifted: live nodes learned different labels
    assert scalars["epoch_000"][f"ssb/{LAST}/own/node/phi"] > 0.8
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    records = read_wandb_run(wandb_run, wait=30)
    val_acc = records.series("val/acc")
    assert val_acc and val_acc[-1] >= 0.15                    # 64 relations: chance is 0.016
    assert records.series("ssb/report/_type") == ["html-file"]  # the report as a W&B HTML panel


def test_quickstart_prints_its_report(quickstart):
    run, output = quickstart
    found = re.findall(r"lightning_ssb: report: (\S+)", output)
    assert len(found) == 1, output[-2000:]
    report = Path(found[0]) if Path(found[0]).is_absolute() else run.parents[2] / found[0]
    assert report.is_file() and report.stat().st_size > 100_000
    html = report.read_text()
    assert html.count("<img") >= 10 and LAST in html
    assert (run / "ssb").resolve() in report.resolve().parents
