"""The install tells the truth: every floor in pyproject.toml holds against what it rests on, checked against
the pinned versions scripts/setup.sh installs (constraints.txt); setup.sh's CPU-index probe answers fast."""

import http.server
import re
import socket
import subprocess
import threading
import time
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PINS = {Requirement(line).name.lower(): Version(str(Requirement(line).specifier).removeprefix("=="))
        for line in (ROOT / "constraints.txt").read_text().split() if line.strip()}
FLOORS = {Requirement(d).name.lower(): Version(next(s.version for s in Requirement(d).specifier if s.operator == ">="))
          for d in PROJECT["dependencies"]}
# The README's offline resume: a resumed fit continues its W&B run offline as a resumed run of the same id,
# which `wandb sync` joins. wandb.init honours resume= in offline mode from 0.31.0 on; 0.18.0-0.30.0 write a
# second file under the same id too, but log "`resume` will be ignored since W&B syncing is set to
# `offline`" and record no resume (read in the 0.29.0, 0.30.0 and 0.31.0 wheels' wandb/sdk/wandb_init.py).
WANDB_OFFLINE_RESUME = Version("0.31")


def lower_bound(spec: str) -> Version:
    """The least version a specifier such as ``>=3.11`` or ``>=3.10,<4`` admits."""
    return max((Version(s.version) for s in Requirement(f"x{spec}").specifier if s.operator in (">=", "==", "~=")),
               default=Version("0"))


def test_the_pins_are_what_is_installed():
    for name, pin in PINS.items():
        assert Version(metadata.version(name)) == pin, f"{name}: installed {metadata.version(name)}, pinned {pin}"


def test_requires_python_admits_no_python_the_pins_refuse():
    needed = {name: lower_bound(metadata.metadata(name)["Requires-Python"] or "") for name in PINS}
    floor = lower_bound(PROJECT["requires-python"])
    assert floor >= max(needed.values()), {n: str(v) for n, v in needed.items() if v > floor}
    assert floor == max(needed.values())  # and no stricter than they are


def test_torch_floor_is_what_the_pinned_libraries_need():
    needs = []
    for name in ("transformers", "lightning", "torchmetrics"):
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            extra_torch = req.marker is not None and "extra" in str(req.marker) and "torch" in str(req.marker)
            if req.name == "torch" and (req.marker is None or extra_torch):
                needs += [(name, lower_bound(str(req.specifier)))]
    assert ("transformers", Version("2.6")) in needs  # transformers 5 disables PyTorch below 2.6
    assert FLOORS["torch"] >= max(v for _, v in needs), needs


def test_no_floor_is_above_the_tested_pin_and_wandb_has_offline_resume():
    for name, floor in FLOORS.items():
        if name in PINS:
            assert floor <= PINS[name], name
    assert FLOORS["wandb"] >= WANDB_OFFLINE_RESUME
    import inspect

    from wandb.sdk import wandb_init  # the installed pin has the behaviour the floor rests on

    assert "will be ignored since W&B syncing is set to" not in inspect.getsource(wandb_init)


def test_the_docker_image_keeps_a_torch_the_floor_admits():
    base = re.search(r"^FROM pytorch/pytorch:(\d+\.\d+\.\d+)-", (ROOT / "docker/Dockerfile").read_text(), re.M)
    assert base and Version(base.group(1)) >= FLOORS["torch"], base


def reachable(url: str) -> tuple[bool, float]:
    start = time.perf_counter()
    done = subprocess.run(["bash", "-c", f'source scripts/setup.sh && index_reachable "{url}"'], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    return done.returncode == 0, time.perf_counter() - start


def test_setup_probes_the_cpu_index_and_falls_back_fast(tmp_path):
    """An index that answers for torch is used; a closed port is given up at once (so setup.sh falls back
    to the default index on a machine that reaches only a PyPI mirror)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<a href='torch-2.13.0+cpu.whl'>torch</a>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ok, _ = reachable(f"http://127.0.0.1:{server.server_port}/")
        assert ok
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        ok, seconds = reachable(f"http://127.0.0.1:{closed}/whl/cpu")
        assert not ok and seconds < 10
    finally:
        server.shutdown()
