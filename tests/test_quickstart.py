"""The quick start shows symmetry breaking: measured at its end from its own disk results.

Last layer, own read-out, at the penalties the rule chose (k-fold cross-validation on probe-train at
the start, kept for every state): after one fine-tuning epoch at least 90% of the nodes are live
(docs/method.md 8, measured independently: 97-100%), clearly more than before, where the rule's
penalty leaves what the pre-trained model has (about 30% there); the both-splits null reads about 0
at every state it ran; the probe-train null far below the real count; random init, the start and the
epoch each in their own folder; the fine-tuned model well above chance on FewRel; the command prints
where its report is, and the report is a page with the run's figures.
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
    assert list(scalars) == ["epoch_000", "init", "reference"]
    key = f"ssb/{LAST}/own/node/live_fraction"
    assert scalars["epoch_000"][key] >= 0.9
    assert scalars["reference"][key] <= scalars["epoch_000"][key] - 0.3
    for state in ("init", "reference", "epoch_000"):       # null_mode "ends": every state of a one-epoch run
        assert scalars[state][f"ssb/{LAST}/own/null_both/node/live_fraction"] <= 0.01
        assert scalars[state][f"ssb/{LAST}/own/null_train/node/live_fraction"] <= 0.25
    # one penalty per part for the whole run, chosen by the rule at the start
    for part in ("own/node/l2", "own/head/l2", "shared/site/l2"):
        assert len({s[f"ssb/{LAST}/{part}"] for s in scalars.values()}) == 1
    assert all(s[f"ssb/{LAST}/own/site/fit_unconverged"] == 0 for s in scalars.values())
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
