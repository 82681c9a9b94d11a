"""Launching ``torchrun`` from a test without letting a hang stop the whole suite.

``torchrun`` starts every worker in a session of its own, so killing ``torchrun`` (or its process group)
on a timeout leaves the workers running; and a worker that still holds the test's stdout pipe makes
``communicate()`` wait for it for ever (a CI run once stood still here for the rest of its 90 minutes).
``run_tree`` writes the output to files instead, and on a timeout first asks every process below the launch
for its Python stacks (``PYTHONFAULTHANDLER`` dumps them on SIGABRT), then kills them all, so that the
failure says where each rank stood.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path


def free_port() -> int:
    """A port free on 127.0.0.1 now (for ``--master_port``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, found through ``/proc`` (whatever session or group it is in)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    below = descendants(proc.pid)
    for pid in below:  # the stacks first: faulthandler writes them to the inherited stderr file
        try:
            os.kill(pid, signal.SIGABRT)
        except ProcessLookupError:
            pass
    time.sleep(3)
    for pid in [proc.pid, *below, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def failure_text(stderr: str, tail: int = 3000) -> str:
    """What a failed launch's message shows: a C++ ``terminate`` line and every Python stack a crash
    dumped (the ``Fatal Python error`` sections faulthandler writes, up to their list of extension modules,
    which says nothing), then the end of the output. The end alone loses the stacks of a rank that
    aborted before the others."""
    stacks = [line for line in stderr.splitlines() if "terminate called" in line or "what():" in line]  # C++
    for block in re.findall(r"Fatal Python error.*?(?=\nExtension modules|\Z)", stderr, flags=re.S):
        stacks.append(block[:4000])
    return "\n".join([*stacks, "... the end of the output:", stderr[-tail:]]) if stacks else stderr[-tail:]


def run_tree(cmd: list[str], cwd, env: dict, timeout: float, tries: int = 1) -> subprocess.CompletedProcess:
    """``cmd`` to completion, its output read from files; on a timeout, the whole process tree killed
    after dumping its stacks. With ``tries`` > 1 a launch that hangs is started once more (a new port is
    the caller's job: ``cmd`` may be a callable returning the command); the earlier hang is reported
    as a warning with its stacks, never dropped."""
    cwd = Path(cwd)
    for attempt in range(1, tries + 1):
        args = cmd() if callable(cmd) else cmd
        out_path, err_path = cwd / f".launch{attempt}.out", cwd / f".launch{attempt}.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(args, cwd=cwd, env={**env, "PYTHONFAULTHANDLER": "1"}, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
                hung = False
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
                hung = True
        stdout, stderr = out_path.read_text(), err_path.read_text()
        if not hung:
            return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
        message = f"{' '.join(map(str, args[:6]))} ... hung for {timeout:.0f} s (try {attempt} of {tries}); " \
                  f"the stacks at the kill:\n{stderr[-6000:]}"
        if attempt == tries:
            raise AssertionError(message)
        warnings.warn(message, stacklevel=2)
    raise AssertionError("unreachable")
