"""The method ships with the project: docs/method.md (the package's method.md) exists, ships in the wheel,
and every reference to it names a section it has."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import lightning_ssb

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
TEXT_FILES = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".yaml", ".toml", ".sh", ".txt")
              and p.is_file() and not any(part.startswith(".") or part in ("build", "runs") or "egg-info" in part
                                          for part in p.relative_to(ROOT).parts)]


def sections() -> set[str]:
    """Section numbers of the method's headings: '## 3. ...' is 3, '### 3.2 ...' is 3.2."""
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", METHOD.read_text(), flags=re.M))


def test_the_method_is_the_packages_own_file():
    shipped = Path(lightning_ssb.__file__).parent / "method.md"
    assert METHOD.resolve() == shipped.resolve() and shipped.is_file()
    assert {str(n) for n in range(1, 10)} | {"3.1", "3.2", "3.3", "3.4"} <= sections()


def test_no_reference_to_a_method_file_the_project_does_not_have():
    stale = [str(p.relative_to(ROOT)) for p in TEXT_FILES if "METHOD" + ".md" in p.read_text(errors="ignore")]
    assert not stale, stale


def test_every_cited_section_exists():
    have = sections()
    cited = []
    for p in TEXT_FILES:
        for match in re.finditer(r"docs/method\.md,?\s+(?:sections?\s+)?(\d+(?:\.\d+)?)"
                                 r"(?:\s*(?:-|to)\s*(\d+(?:\.\d+)?))?", p.read_text(errors="ignore")):
            cited += [(str(p.relative_to(ROOT)), n) for n in match.groups() if n]
    assert len(cited) > 40
    missing = [(f, n) for f, n in cited if n not in have]
    assert not missing, missing


def test_the_wheel_carries_the_method(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("lightning_ssb-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("lightning_ssb/method.md") == METHOD.read_bytes()
