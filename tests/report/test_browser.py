"""End to end: the paper06 report opened in headless Chromium loads, shows its figures and logs
no console error. Skipped only when Debian's chromium is not installed (.ci/install-chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stagewise.report.html import write_report

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
OKABE_BLUE = (0, 114, 178)


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
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/install-chromium)")
def test_report_in_headless_chromium(paper06: Path, tmp_path: Path) -> None:
    out = tmp_path / "R"
    result = write_report(paper06, out)
    url = (out / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,9000", url)
    assert shot.is_file(), proc.stderr[-2000:]
    # Chromium logs console messages as "INFO:CONSOLE:<line>" whatever their level
    # (console.error included); the report runs no script, so there must be none at all.
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert "Failed to load resource" not in proc.stderr

    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 9000)
        rgb = img.convert("RGB")
        small = rgb.resize((320, 2250))
        colours = small.getcolors(maxcolors=1 << 20) or []
        # A blank or error page has a handful of colours; a rendered report has thousands.
        assert len(colours) > 500
        # The figures are drawn: a large area in the Okabe-Ito blue of the bars and lines.
        blue = sum(
            n
            for n, c in colours
            if all(abs(a - b) < 20 for a, b in zip(c, OKABE_BLUE, strict=True))
        )
        assert blue > 2000, blue

    # The DOM as loaded: every drawn figure is an <img> with a data URI, and the key sections.
    dom = _chromium(tmp_path, "--dump-dom", url).stdout
    drawn = [f for f in result.figures if f.png is not None]
    assert dom.count("<img ") == len(drawn) == 5
    for section in ("Gates: frozen rules", "Published summaries (not recomputed)", "Budget"):
        assert section in dom
