"""report.html really renders: headless Chromium takes a screenshot and the PNG is not blank.

Needs Chromium (Debian: `apt-get install -y chromium`); skipped with the reason when absent.
The flags keep the browser offline and stateless: no sandbox (root in a container), no GPU, no
background networking, updates or sync, and a throw-away profile directory.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from advisor.report import write_reports

pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path, profile: Path, size=(1280, 2400)) -> None:
    exe = _chromium()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}",
           f"--window-size={size[0]},{size[1]}", html.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=180)


@pytest.mark.skipif(_chromium() is None,
                    reason="headless Chromium not installed (apt-get install -y chromium)")
@pytest.mark.parametrize("variant", ["report", "unverified_report", "nothing_report"])
def test_report_html_renders_in_chromium(variant, request, tmp_path):
    from PIL import Image

    files = write_reports(request.getfixturevalue(variant), tmp_path / "out")
    png = tmp_path / "report.png"
    screenshot(files["report_html"], png, tmp_path / "profile")
    assert png.exists() and png.stat().st_size > 50_000, "screenshot missing or trivially small"
    with Image.open(png) as im:
        assert im.size == (1280, 2400)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, "the page rendered as (almost) one colour"
        top = rgb.crop((0, 0, 1280, 1200))
        lo, hi = zip(*top.getextrema(), strict=True)
        assert min(lo) < 60 and max(hi) > 200, "no dark text on a light page in the first screen"
