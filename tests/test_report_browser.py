"""The report in a real browser: headless Chromium loads it with the network off, logs no
console message, and every plot draws. A screenshot is kept in the test's temp dir.

Chromium (Debian package `chromium`, installed by .ci/run) is needed; the test skips with a
message where it is absent.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drgdip.synth.demo import run_demo

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000")
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not found (Debian: apt-get install chromium); browser check of the report skipped")


def _run(browser: str, page: Path, profile: Path, *extra: str) -> tuple[str, list[str]]:
    """(stdout, console messages) of one headless Chromium run on a local page."""
    r = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, [m.group(1) for m in CONSOLE.finditer(r.stderr)]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "demo"
    return run_demo(out, seed=3, progress=False, records_per_month=200, hospitals=6)["report"]


def test_the_console_check_catches_errors(tmp_path):
    browser = _browser()
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("boom");missing();</script></body></html>',
                   encoding="utf-8")
    _, console = _run(browser, bad, tmp_path / "profile", "--dump-dom")
    assert any("boom" in m for m in console) and any("missing" in m for m in console), console


def test_report_loads_without_console_messages_and_every_plot_renders(report, tmp_path):
    browser = _browser()
    dom, console = _run(browser, report, tmp_path / "profile", "--dump-dom")
    assert console == [], f"console messages: {console}"
    body = re.search(r"<body([^>]*)>", dom).group(1)
    expected = int(re.search(r'data-plots-expected="(\d+)"', body).group(1))
    rendered = re.search(r'data-plots-rendered="(\d+)"', body)
    assert rendered is not None, "the page's load handler did not run"
    figures = report.read_text(encoding="utf-8").count('<figure class="plot">')
    assert figures >= 6, "the demo's report has lost a plot"   # point value, payment, CMI, trend, loss groups, deviation
    assert expected == figures and int(rendered.group(1)) == expected
    shot = tmp_path / "report.png"
    _, console = _run(browser, report, tmp_path / "profile2", "--window-size=1200,4200", f"--screenshot={shot}")
    assert console == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
