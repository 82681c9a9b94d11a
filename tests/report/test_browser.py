"""The report renders in a real browser: headless Chromium loads every embedded figure and draws a page
that is not blank."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Appended to a copy of the page: once everything has loaded, write what the browser made of each <img>.
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "ssb-check";
  out.textContent = JSON.stringify([...document.images].map(i => ({
    alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
    shown: i.getBoundingClientRect().width})));
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, ("headless Chromium is needed for the report's browser test and was not found: "
                  "install it with `apt-get update && apt-get install -y chromium` (.ci/run does this)")
    return path


def test_a_missing_chromium_fails_with_the_install_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AssertionError, match="apt-get install -y chromium"):
        chromium()


def run_chromium(args: list[str], tmp_path) -> str:
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_every_figure_loads_in_chromium(synthetic_report, tmp_path):
    _, book = synthetic_report
    page = book.out.read_text(encoding="utf-8")
    assert "</body>" in page
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(["--dump-dom", probed.as_uri()], tmp_path)
    m = re.search(r'<pre id="ssb-check">(.*?)</pre>', dom, re.S)
    assert m, "the page's load event never fired (no result of the probe script in the DOM)"
    images = json.loads(html.unescape(m.group(1)))
    assert len(images) == len(book.figures) >= 20, "every figure of the report must be embedded once"
    for img, fig in zip(images, book.figures, strict=True):
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, f"figure not loaded: {img['alt']}"
        assert (img["w"], img["h"]) == png_size(fig.png), f"embedded image differs from {fig.png.name}"
        assert img["shown"] > 100, f"figure drawn too small to read: {img['alt']} ({img['shown']} px)"


def test_figures_are_not_blank(synthetic_report):
    _, book = synthetic_report
    for fig in book.figures:
        pixels = np.asarray(Image.open(fig.png).convert("L"), dtype=float)
        inked = (pixels < 200).mean()  # dark pixels: lines, text, image cells
        assert pixels.std() > 10 and inked > 0.01, f"{fig.png.name} looks blank (std {pixels.std():.1f})"
        svg = fig.svg.read_text()
        assert "<svg" in svg and svg.rstrip().endswith("</svg>"), f"{fig.svg.name} is not a complete SVG"


def test_screenshot_is_not_blank(synthetic_report, tmp_path):
    _, book = synthetic_report
    shot = tmp_path / "report.png"
    run_chromium([f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", book.out.as_uri()],
                 tmp_path)
    assert shot.exists(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape[:2] == (2400, 1280)
    grey = pixels.mean(2)
    assert grey.std() > 20, f"the screenshot is blank (pixel std {grey.std():.1f})"
    # the lower half of the window shows figures (coloured lines), not just text on white
    lower = pixels[1200:]
    coloured = (lower.max(2) - lower.min(2) > 60).mean()
    assert coloured > 0.005, f"no figure visible in the lower half of the page ({coloured:.4f} coloured pixels)"
