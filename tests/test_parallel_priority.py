"""``parallel.children_niced``: the children of a fork_map run nicer, only in the thread that asked."""

from __future__ import annotations

import os
import threading

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
