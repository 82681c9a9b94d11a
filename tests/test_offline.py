"""The paper-scale config without network: one line that says what could not be downloaded and how to run
offline, and nothing left behind that looks like a run (no untrained interrupted.ckpt, no W&B run)."""

import os
import subprocess
import sys

import pytest


@pytest.mark.slow  # builds BERT-6 (66M parameters) before the data fails
def test_bert6_without_network_is_one_line_and_leaves_no_checkpoint(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "LIGHTNING_SSB_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "lightning_ssb", "fit", "--config", "bert6.yaml"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == (
        f"lightning_ssb: error: data.source hub: wikimedia/wikipedia (20231101.en): not in the Hugging Face cache "
        f"({tmp_path / 'hf' / 'hub'}) and HF_HUB_OFFLINE is set; download it once with network (it is then cached), "
        "or point data.source at local files, e.g. --data.init_args.source '[enwiki_AA.txt.gz,enwiki_AB.txt.gz]' "
        "(WikiExtractor, .jsonl or plain text)")
    assert "Traceback" not in res.stderr and "ConnectionError" not in res.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # no interrupted.ckpt of untrained weights
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("run.json"))
