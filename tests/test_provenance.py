"""run.json and every results folder record the versions and the git commit that produced them."""

import subprocess
import tomllib
from pathlib import Path

import lightning
import torch
import transformers
import wandb

import lightning_ssb
from lightning_ssb.provenance import git_commit, provenance, versions

ROOT = Path(__file__).resolve().parents[1]


def test_versions_are_the_imported_modules_own():
    got = versions()
    assert got == {"lightning_ssb": lightning_ssb.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__, "lightning": lightning.__version__,
                   "wandb": wandb.__version__}
    assert got["lightning_ssb"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_git_commit_of_a_checkout_and_outside_one(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    head = (repo / ".git/refs/heads/main").read_text().strip()  # read from the ref file, not through git
    assert git_commit(repo) == {"commit": head, "dirty": False}
    (repo / "a.txt").write_text("b\n")
    assert git_commit(repo) == {"commit": head, "dirty": True}
    (tmp_path / "plain").mkdir()
    assert git_commit(tmp_path / "plain") is None


def test_provenance_names_this_code():
    found = provenance()
    assert found["versions"] == versions()
    if (ROOT / ".git").exists():  # a checkout (CI clones one): the commit this code is at
        assert found["git"]["commit"] == subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                                                        capture_output=True, text=True).stdout.strip()
    else:  # an installed wheel or an exported tree
        assert found["git"] is None
