"""End to end: the paper06 and demo reports opened in headless Chromium at 1400 and 800 px.

At both widths the page does not scroll sideways, the first viewport holds the outcome sentence
and the promotion funnel, every figure loads, and nothing is logged to the console. Layout is
measured by a copy of the page with a measuring script appended (the report itself runs no
script); screenshots of the first viewport are written to a temporary folder (or to
$STAGEWISE_SCREENSHOTS). Skipped only when Debian's chromium is not installed
(.ci/install-chromium).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stagewise.report.html import ReportResult, write_report

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
OKABE_BLUE = (0, 114, 178)
WIDTHS = (1400, 800)
HEIGHT = 900  # a laptop screen's first viewport

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/install-chromium)"
)

MEASURE = """<script>
window.addEventListener('load', () => {
  const d = document.documentElement, vw = window.innerWidth, vh = window.innerHeight;
  const box = (el) => { if (!el) return null; const r = el.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
  const imgs = Array.from(document.images);
  const outside = Array.from(document.body.querySelectorAll('*'))
    .filter((el) => !el.closest('.scroll') && el.getBoundingClientRect().right > vw + 0.5)
    .map((el) => el.tagName + '#' + el.id + '.' + el.className).slice(0, 5);
  const shown = (el) => !el.closest('details:not([open])');
  // Tables fit their box (no sideways scroll), ids and shortened hashes stay on one line.
  const scrolling = Array.from(document.querySelectorAll('.scroll'))
    .filter((el) => shown(el) && el.scrollWidth > el.clientWidth + 1)
    .map((el) => (el.querySelector('th') || {}).textContent).slice(0, 5);
  const broken = Array.from(document.querySelectorAll('.id, td .hash'))
    .filter((el) => shown(el) && el.getClientRects().length > 1)
    .map((el) => el.textContent).slice(0, 5);
  const out = {scrollWidth: d.scrollWidth, innerWidth: vw, innerHeight: vh,
    scrolling: scrolling, broken: broken,
    lead: box(document.getElementById('outcome-sentence')),
    leadText: (document.getElementById('outcome-sentence') || {}).textContent,
    funnel: box(document.querySelector('#fig-funnel img')),
    images: imgs.length,
    loaded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
    outside: outside};
  const pre = document.createElement('pre');
  pre.id = 'measure';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def measure(page: Path, width: int, tmp_path: Path) -> dict[str, Any]:
    """Layout facts of `page` at `width` x HEIGHT, read from a measuring copy of it."""
    copy = tmp_path / f"measure-{width}.html"
    copy.write_text(
        page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8"
    )
    proc = _chromium(
        tmp_path,
        "--dump-dom",
        "--virtual-time-budget=10000",
        f"--window-size={width},{HEIGHT}",
        copy.resolve().as_uri(),
    )
    found = re.search(r"<pre id=\"measure\">(.*?)</pre>", proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    return dict(json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")))


def screenshots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("STAGEWISE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_report(result: ReportResult, name: str, tmp_path: Path) -> None:
    drawn = [f for f in result.figures if f.png is not None]
    shots = screenshots_dir(tmp_path)
    for width in WIDTHS:
        m = measure(result.html, width, tmp_path)
        assert m["innerWidth"] == width, m
        # No horizontal page scroll, and no table shown open scrolls sideways in its box.
        assert m["scrollWidth"] <= m["innerWidth"], m
        assert not m["outside"], m
        assert m["scrolling"] == [], m
        # Ids (`ref-d2`) and shortened hashes never break across lines.
        assert m["broken"] == [], m
        # The first viewport holds the outcome sentence and the whole funnel.
        assert m["leadText"].startswith(("Last decided:", "No gate has been decided")), m
        assert m["lead"]["top"] >= 0 and m["lead"]["bottom"] <= m["innerHeight"], m
        assert m["funnel"]["top"] >= 0 and m["funnel"]["bottom"] <= m["innerHeight"], m
        assert m["funnel"]["right"] <= width, m
        # Every figure loads.
        assert m["images"] == m["loaded"] >= len(drawn), m

        shot = shots / f"{name}-{width}.png"
        proc = _chromium(
            tmp_path,
            f"--screenshot={shot}",
            f"--window-size={width},{HEIGHT}",
            result.html.resolve().as_uri(),
        )
        assert shot.is_file(), proc.stderr[-2000:]
        # Chromium logs console messages as "INFO:CONSOLE:<line>" whatever their level;
        # the report runs no script, so there must be none at all.
        console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
        assert not console, console
        assert "Failed to load resource" not in proc.stderr

        from PIL import Image

        with Image.open(shot) as img:
            assert img.size == (width, HEIGHT)
            colours = img.convert("RGB").getcolors(maxcolors=1 << 22) or []
        # A blank or error page has a handful of colours; a rendered report has hundreds (a
        # figure shown at its own size, unscaled, adds few shades), and the funnel's stage
        # bars fill a visible area in the Okabe-Ito blue.
        assert len(colours) > 200
        blue = sum(
            n
            for n, c in colours
            if all(abs(a - b) < 20 for a, b in zip(c, OKABE_BLUE, strict=True))
        )
        assert blue > 2000, blue


def test_paper06_report_in_chromium(paper06: Path, tmp_path: Path) -> None:
    result = write_report(paper06, tmp_path / "R")
    check_report(result, "paper06", tmp_path)


@pytest.mark.slow
def test_demo_report_in_chromium(quick_demo: Path, tmp_path: Path) -> None:
    result = write_report(quick_demo, tmp_path / "R")
    assert any(f.name.startswith("learning_curves_") and f.png for f in result.figures)
    check_report(result, "demo", tmp_path)
