"""The report's HTML as an operator sees it: rendered by a real headless browser (Debian's
chromium, installed by .ci/setup), then read back as pixels and as the rendered DOM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cosyvoice_otel.tools import report as rep

from ..support.helpers import unavailable
from .test_tools import synthetic_traces

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> str:
    if CHROMIUM is None:
        unavailable("chromium is missing (.ci/setup installs Debian's chromium)",
                    "chromium is missing; run .ci/setup")
    return CHROMIUM


def render(browser: str, page: Path, tmp_path: Path) -> tuple[dict, str]:
    """(pixel counts per colour, the rendered DOM) of ``page``."""
    from PIL import Image

    shot = tmp_path / "shot.png"
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,3000"]
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    colors = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    return {f"#{r:02x}{g:02x}{b:02x}": n for n, (r, g, b) in colors}, dom


def traces_with_errors() -> list[list[dict]]:
    traces = synthetic_traces("render", "1.0", [50 + (i * 37) % 900 for i in range(60)])
    for spans in traces[::7]:  # some failed requests, spread over time
        spans[-1]["tags"] = {**spans[-1]["tags"], "error": "Boom", "error.type": "Boom"}
    return traces


def test_the_report_page_renders_its_charts(browser, tmp_path) -> None:
    page = tmp_path / "report.html"
    page.write_text(rep.to_html(rep.analyse(traces_with_errors()), "http://zipkin", "render"))
    pixels, dom = render(browser, page, tmp_path)
    assert pixels.get(rep.COLORS[0], 0) > 2000  # share bars, boxes, p95 bars
    assert pixels.get(rep.ERROR_COLOR, 0) > 100  # the error bars of the timeline
    for heading in ("Share of request time by stage", "Latency distribution per stage",
                    "Request p95 and errors over time"):
        assert heading in dom
    assert dom.count("<svg") == 3 and "p5-p95" in dom


def test_the_compare_page_renders_both_series(browser, tmp_path) -> None:
    traces = (synthetic_traces("cmp", "1.0", [100 + 3 * i for i in range(20)])
              + synthetic_traces("cmp", "1.1", [400 + 3 * i for i in range(20)]))
    groups = rep.analyse(traces, "service.version")
    page = tmp_path / "compare.html"
    page.write_text(rep.compare_html(rep.compare(groups, "1.0", "1.1"), "service.version",
                                     "1.0", "1.1", groups, "compare"))
    pixels, dom = render(browser, page, tmp_path)
    assert pixels.get(rep.COLORS[0], 0) > 200 and pixels.get(rep.COLORS[1], 0) > 200
    assert "slower" in dom and "A 1.0" in dom and "B 1.1" in dom
