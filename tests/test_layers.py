"""The package's layers import one way: a layer uses only the layers below it.

From the bottom up (docs/ARCHITECTURE.md, "Layers"):

0. helpers: ``hub``, ``progress``, ``provenance``, the statistics registry ``statistics``, the process
   pool ``parallel`` and the plotting helpers ``plots`` (they import nothing of the package above layer
   0; ``results/`` and ``report/`` draw their figures with ``plots``);
1. ``data``, ``models`` (the Lightning modules, with ``RNGState``, the callback every BertTask adds),
   ``loggers``, ``run_folder``;
2. ``capture`` (forward hooks, torch only) and ``analysis`` (docs/method.md; no Lightning, no wandb);
3. ``results``: keys, epoch names, snapshot -> result, figures and tables, sinks, and the engine that runs
   them for one state (capture -> snapshot -> result -> sinks), which the monitor and ``analyze`` share;
4. ``report``: the HTML report and ``compare``, from the disk results alone (no Lightning);
5. ``callbacks`` (the monitor, probe set, resume, custom analyses) and ``probe_accuracy``;
6. the command line: ``cli``, ``analyze``, ``seed_runs`` (the ``seeds`` command), ``__main__``.

Two checks: every ``lightning_ssb`` import in the source, at module level or inside a function, points
down or sideways (a static read of the files); and importing each layer in a fresh interpreter loads no
module of a layer above it, nor the heavy libraries it promises to do without.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_ssb"

# module prefix (relative to lightning_ssb) -> layer; the longest matching prefix wins
LAYERS = {
    "hub": 0, "progress": 0, "provenance": 0, "statistics": 0, "parallel": 0, "plots": 0,
    "data": 1, "models": 1, "loggers": 1, "run_folder": 1,
    "capture": 2, "analysis": 2,
    "results": 3, "results.engine": 3,  # the engine: capture (2) -> results -> sinks, used by callbacks and analyze
    "report": 4,
    "callbacks": 5, "probe_accuracy": 5,
    "cli": 6, "analyze": 6, "seed_runs": 6, "__main__": 6,
}


def layer_of(module: str) -> int | None:
    """The layer of ``lightning_ssb.<module>`` (None: the package itself, which imports nothing)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, name relative to lightning_ssb) of every import of the package in ``path``, at any depth;
    ``from X import y`` gives ``X.y`` (y may be a submodule: ``from lightning_ssb.report import plots``)."""
    me = module_name(path).split(".") if module_name(path) else []
    package = me if path.name == "__init__.py" else me[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package, one level up per extra dot
                base = ["lightning_ssb", *package[: len(package) - node.level + 1]]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        out += [(node.lineno, n.removeprefix("lightning_ssb.")) for n in names if n.startswith("lightning_ssb.")]
    return out


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "samples" not in p.parts)


def test_every_module_of_the_package_has_a_layer():
    assert [module_name(p) for p in SOURCES if module_name(p) and layer_of(module_name(p)) is None] == []


def test_no_import_points_up():
    upward = []
    for path in SOURCES:
        me = module_name(path)
        mine = layer_of(me)
        if mine is None:
            continue
        for line, other in imported(path):
            theirs = layer_of(other)
            if theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {me} (layer {mine}) imports {other} (layer {theirs})")
    assert upward == []


# module -> what importing it (alone, in a fresh interpreter) must not load
ABOVE = {
    # report/__init__ runs first and loads the report (results.keys and .epochs with it): not Lightning
    "lightning_ssb.statistics": ["lightning", "wandb", "scipy", "matplotlib", "lightning_ssb.data",
                                 "lightning_ssb.models", "lightning_ssb.capture", "lightning_ssb.analysis",
                                 "lightning_ssb.results", "lightning_ssb.report", "lightning_ssb.callbacks",
                                 "lightning_ssb.cli"],
    "lightning_ssb.plots": ["lightning", "wandb", "lightning_ssb.data", "lightning_ssb.models", "lightning_ssb.capture",
                            "lightning_ssb.analysis", "lightning_ssb.results", "lightning_ssb.report",
                            "lightning_ssb.callbacks", "lightning_ssb.cli"],
    "lightning_ssb.data": ["lightning_ssb.capture", "lightning_ssb.analysis", "lightning_ssb.results",
                           "lightning_ssb.report", "lightning_ssb.callbacks", "lightning_ssb.cli"],
    "lightning_ssb.models": ["lightning_ssb.capture", "lightning_ssb.analysis", "lightning_ssb.results",
                             "lightning_ssb.report", "lightning_ssb.callbacks", "lightning_ssb.cli"],
    "lightning_ssb.capture": ["lightning", "transformers", "lightning_ssb.data", "lightning_ssb.models",
                              "lightning_ssb.analysis", "lightning_ssb.results", "lightning_ssb.report",
                              "lightning_ssb.callbacks", "lightning_ssb.cli"],
    "lightning_ssb.analysis": ["lightning", "wandb", "lightning_ssb.capture", "lightning_ssb.results",
                               "lightning_ssb.report", "lightning_ssb.callbacks", "lightning_ssb.cli"],
    **{f"lightning_ssb.results.{m}": ["lightning", "wandb", "matplotlib", "lightning_ssb.report",
                                      "lightning_ssb.callbacks", "lightning_ssb.cli"]
       for m in ("keys", "epochs", "build", "render", "sinks", "engine")},
    "lightning_ssb.report": ["lightning", "wandb", "lightning_ssb.callbacks", "lightning_ssb.cli"],
    "lightning_ssb.report.cli": ["lightning", "wandb", "lightning_ssb.callbacks", "lightning_ssb.cli"],
    "lightning_ssb.callbacks": ["lightning_ssb.cli", "lightning_ssb.analyze", "lightning_ssb.seed_runs"],
    "lightning_ssb.loggers": ["lightning_ssb.results", "lightning_ssb.report", "lightning_ssb.callbacks",
                              "lightning_ssb.cli"],
}

LOADED = "import importlib, json, sys; importlib.import_module(sys.argv[1]); print(json.dumps(sorted(sys.modules)))"


@pytest.mark.parametrize("module", sorted(ABOVE))
def test_importing_a_layer_loads_nothing_above_it(module):
    done = subprocess.run([sys.executable, "-c", LOADED, module], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    above = [m for m in loaded for banned in ABOVE[module] if m == banned or m.startswith(banned + ".")]
    assert above == [], f"importing {module} loaded {above}"
