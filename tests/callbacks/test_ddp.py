"""Two gloo processes (torchrun) capture uneven shares of the probe; rank 0's analysis equals one process's."""

import json
import os
import sys

import pytest
import torch

from tests import launch

SCRIPT = os.path.join(os.path.dirname(__file__), "ddp_script.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOT_COMPARED = {"step", "ssb/analysis_seconds"}  # DDP takes half the steps per rank; timings differ


def _run(cmd, tmp):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "GLOO_SOCKET_IFNAME": "lo"}
    # a hang fails the test with every rank's stacks (tests/launch.py) instead of stalling the suite
    res = launch.run_tree(cmd, tmp, env, timeout=180, tries=2)
    assert res.returncode == 0, launch.failure_text(res.stderr)
    assert "SSB_DONE [-1, 0, 1]" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_two_ranks_equals_single_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")  # installed with torch
    _run([sys.executable, SCRIPT, str(single)], tmp_path)
    _run(lambda: [torchrun, "--nproc_per_node=2", f"--master_port={launch.free_port()}", SCRIPT, str(ddp)], tmp_path)
    for epoch in ("reference", "epoch_000", "epoch_001"):
        a = json.loads((single / epoch / "scalars.json").read_text())
        b = json.loads((ddp / epoch / "scalars.json").read_text())
        assert a.keys() == b.keys() and len(a) > 20
        for key in a.keys() - NOT_COMPARED:
            assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key], abs=1e-6), key
        arrays_a = torch.load(single / epoch / "arrays.pt")
        arrays_b = torch.load(ddp / epoch / "arrays.pt")
        assert arrays_a.keys() == arrays_b.keys()
        for key in arrays_a:
            torch.testing.assert_close(arrays_a[key], arrays_b[key], equal_nan=True)
        assert (single / epoch / "nodes.csv").read_text() == (ddp / epoch / "nodes.csv").read_text()
