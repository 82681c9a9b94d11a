"""One run of the shipped quick start (quickstart.yaml, MiniLM-L6 on the FewRel sample), shared by the
tests that check what it shows (test_quickstart.py) and the section-8 check on its weights
(test_real_bert.py): fine-tuning a real BERT on 2 CPU cores is the suite's most expensive step, so it
runs once. Narrowed for test time: one epoch and a short crossover; everything else as shipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from lightning_ssb.cli import resolve_config


def run_quickstart(folder: Path, cache: Path) -> tuple[Path, str]:
    """Run ``fit --config quickstart.yaml`` (as a user would, in a subprocess) in ``folder``; returns
    (the run folder, the command's output)."""
    shipped = yaml.safe_load(Path(resolve_config("quickstart.yaml")).read_text())
    assert shipped["ssb"]["init_args"]["analysis"]["crossover_draws"] == 3  # what the short run changes
    extra = folder / "short.yaml"  # only the settings it changes: the monitor group keeps the rest
    extra.write_text(yaml.safe_dump({"ssb": {"init_args": {"analysis": {"crossover_sizes": [1, 4, 32],
                                                                            "crossover_draws": 2}}},
                                     "trainer": {"max_epochs": 1, "enable_progress_bar": False}}))
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", LIGHTNING_SSB_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-m", "lightning_ssb", "fit", "--config", "quickstart.yaml",
                           "--config", str(extra)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=1500)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    return folder / "runs" / "quickstart" / "minilm", output
