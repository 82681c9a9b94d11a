"""``parallel``: the children of a fork_map run nicer, only in the thread that asked; they end with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lightning_ssb.parallel import child_nice, children_niced, fork_map


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def test_the_children_of_a_niced_block_run_that_much_nicer_and_the_parent_does_not():
    parent = _nice()
    if parent + 5 > 19:
        pytest.fail(f"this test needs a parent nice value of at most 14, the test process has {parent}")
    assert fork_map(lambda i: _nice(), 2, 2) == [parent, parent]
    with children_niced(5):
        assert fork_map(lambda i: _nice(), 2, 2) == [parent + 5, parent + 5]
        assert _nice() == parent  # the caller keeps its priority
    assert fork_map(lambda i: _nice(), 2, 2) == [parent, parent]  # and the setting ends with the block


def test_the_setting_belongs_to_the_thread_that_made_it():
    seen = {}
    with children_niced(7):
        other = threading.Thread(target=lambda: seen.setdefault("other", child_nice()))
        other.start()
        other.join()
        seen["here"] = child_nice()
    assert seen == {"other": 0, "here": 7}


@pytest.mark.parametrize("bad", [-1, 20])
def test_an_increment_outside_0_to_19_is_refused(bad):
    with pytest.raises(ValueError, match="between 0 and 19"):
        with children_niced(bad):
            pass


CHILDREN_OF_A_KILLED_PARENT = """
import os, signal, sys, time
from lightning_ssb.parallel import fork_map

signal.signal(signal.SIGTERM, lambda *_: None)  # inherited by the children, as Lightning's handler is

def task(i):
    with open(os.path.join(sys.argv[1], f"{os.getpid()}.pid"), "w") as f:
        f.write(str(i))
    time.sleep(120)

fork_map(task, 4, 2)
"""


def _alive(pid: int) -> bool:
    """Running or sleeping: neither gone nor a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_the_children_of_a_fork_map_end_when_their_parent_is_killed(tmp_path):
    """A parent killed with SIGKILL (as torchrun's SIGTERM or the OOM killer can end a rank) takes its
    fork_map children with it, even when they inherited a SIGTERM handler that does not exit (Lightning's);
    before, they slept on, orphaned, waiting for work that never came."""
    parent = subprocess.Popen([sys.executable, "-c", CHILDREN_OF_A_KILLED_PARENT, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)   # both children at work
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:  # never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"fork_map children {left} outlived their killed parent"
