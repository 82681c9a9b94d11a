"""``analyze`` (lightning_ssb/analyze.py) drives the monitor's engine as the monitor does, through public names.

A static read of the source, apart from tests/test_analyze.py, whose every test needs a fit first."""

import ast
from pathlib import Path

import lightning_ssb

ANALYZE = Path(lightning_ssb.__file__).parent / "analyze.py"


def private_accesses(source: str) -> list[str]:
    """Every ``x._name`` and ``getattr(x, "_name")`` / ``setattr(x, "_name", v)`` in ``source`` (dunders aside)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)):
            name = node.args[1].value
        else:
            continue
        if isinstance(name, str) and name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_finds_private_accesses():
    source = "monitor._log(r)\nx = getattr(monitor, '_task')\nmonitor.engine.book.penalties = p\ntype(m).__name__\n"
    assert sorted(private_accesses(source)) == ["1: monitor._log", "2: getattr(monitor, '_task')"]


def test_analyze_touches_no_private_attribute():
    """No private attribute of the monitor, its engine, or anything else (the Trainer's set-up included)."""
    assert private_accesses(ANALYZE.read_text()) == []
