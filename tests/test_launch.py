"""The torchrun tests' launcher (tests/launch.py): a hang below a launch ends as a failure with stacks."""

import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests.launch import run_tree

# a parent that starts a child in a session of its own (as torchrun starts its workers), the child holding
# the inherited stdout and sleeping in a named function, so that its stack can be recognised
PARENT = """
import subprocess, sys, time
child = "import time\\ndef waiting_like_a_stuck_rank():\\n    time.sleep(600)\\nwaiting_like_a_stuck_rank()"
pid = subprocess.Popen([sys.executable, "-c", child], start_new_session=True).pid
print(f"child={pid}=", file=sys.stderr, flush=True)
time.sleep(600)
"""


def test_a_hang_below_a_launch_is_killed_with_its_stacks(tmp_path):
    before = time.monotonic()
    with pytest.raises(AssertionError, match="hung for 3 s") as failure:
        run_tree([sys.executable, "-c", PARENT], tmp_path, dict(os.environ), timeout=3)
    assert time.monotonic() - before < 30  # not the child's 600 s
    assert "waiting_like_a_stuck_rank" in str(failure.value)  # the stuck process's own stack
    child = int(re.search(r"child=(\d+)=", str(failure.value)).group(1))
    time.sleep(0.5)  # an orphan is reaped by init
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")")[1].split()[0] == "Z"  # gone, or a zombie


def test_a_launch_that_ends_returns_its_output_and_status(tmp_path):
    res = run_tree([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                   tmp_path, dict(os.environ), timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
