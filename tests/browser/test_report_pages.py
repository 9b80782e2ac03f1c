"""Every kind of report page, rendered by harness.report from a recorded run, loaded in headless
Chromium: the page is not blank, its summary banner and a chart are visible (their boxes hold
their own pixels), every chart image decoded, and the console stayed silent (no message, no
exception, no resource that failed to load). A broken page must fail each of these checks.

Chromium is Debian's package, installed here when missing (never a harness dependency); the
recorded runs are in ``data/``: the suites (``meshproof test -k 'routing or authorization'``, with
an under-load test's chart), a ``meshproof load``, a ``chaos run`` of
``experiments/authorization-lockdown.yaml`` and an in-place ``upgrade-check`` on the local mesh.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from harness.report import html, runs, suites
from harness.report.compare import compare_files
from tests.browser import chromium

DATA = Path(__file__).with_name("data")
BANNERS = {(0x1A, 0x7F, 0x37), (0xCF, 0x22, 0x2E), (0x09, 0x69, 0xDA)}  # pass, fail, info (html.CSS)
CHART_INK = {
    (0x21, 0x8B, 0xFF),
    (0xA4, 0x75, 0xF9),
    (0x2D, 0xA4, 0x4E),
    (0xFA, 0x45, 0x49),
    (0xBF, 0x87, 0x00),
}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[chromium.Chromium]:
    with chromium.Chromium(chromium.binary(), tmp_path_factory.mktemp("chromium")) as b:
        yield b


def _json(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text())
    return doc


def build_pages(out: Path) -> dict[str, Path]:
    """One page per report kind, from the recorded runs (chart paths pointed at data/)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = _json("suites-report.json")
    for t in doc["tests"]:
        if t.get("properties", {}).get("load_chart"):
            t["properties"]["load_chart"] = str(DATA / "suites-load.png")
    pages = {"suites": html.write(out / "suites-report.html", suites.suites_page(doc))}
    load = _json("load.json")
    pages["load"] = html.write(out / "load.html", runs.load_page(load, DATA / "load.png", load.get("mesh")))
    pages["chaos"] = html.write(
        out / "chaos.html", runs.chaos_page(_json("chaos-summary.json"), _json("chaos-journal.json"))
    )
    upgrade = _json("upgrade-report.json")
    upgrade["chart"] = str(DATA / "upgrade.png")
    pages["upgrade"] = html.write(out / "upgrade-report.html", runs.upgrade_page(upgrade))
    worse = copy.deepcopy(doc)
    next(r for r in worse["checks"] if r["expected"] == "PASS")["verdict"] = "FAIL"
    (out / "before.json").write_text(json.dumps(doc))
    (out / "after.json").write_text(json.dumps(worse))
    result = compare_files(out / "before.json", out / "after.json")
    pages["compare"] = html.write(out / "compare.html", runs.compare_page(result.as_json()))
    return pages


def problems(r: chromium.Rendered) -> list[str]:
    """What keeps a rendered page from being readable; empty when it is."""
    out = [f"console: {line}" for line in r.console]
    image = Image.open(r.screenshot).convert("RGB")
    pixels = image.width * image.height
    colours = image.getcolors(maxcolors=pixels) or []
    top = max(n for n, _ in colours)
    if r.screenshot.stat().st_size < 20_000 or len(colours) < 64 or top > 0.97 * pixels:
        out.append(f"blank: {len(colours)} colours, the commonest on {top / pixels:.0%} of the page")
    facts = r.facts
    summary = facts.get("summary")
    if not summary or not summary["shown"]:
        out.append("summary: no visible #summary banner")
    else:
        box = _crop(image, summary)
        n, colour = max(box.getcolors(maxcolors=box.width * box.height) or [(0, None)])
        if colour not in BANNERS or n < 0.5 * box.width * box.height:
            out.append(f"summary: the banner's box is not banner-coloured (commonest {colour} on {n} px)")
    if not facts.get("summaryText", "").strip():
        out.append("summary: the banner says nothing")
    charts = facts.get("charts") or []
    if not charts:
        out.append("chart: the page has no chart")
    for i, chart in enumerate(charts):
        if not chart["shown"] or not chart["decoded"] or chart["w"] < 300 or chart["h"] < 100:
            out.append(f"chart {i} ({chart['tag']}): not shown or not decoded: {chart}")
            continue
        if chart["y"] + chart["h"] > image.height:
            continue  # below the 16000 px the screenshot covers
        box = _crop(image, chart)
        counts = Counter(box.get_flattened_data())
        if chart["tag"] == "svg":
            ink = sum(n for c, n in counts.items() if c in CHART_INK)
            if ink < 200:
                out.append(f"chart {i} (svg): {ink} pixels in the chart colours")
        else:
            white = counts.get((255, 255, 255), 0)
            if len(counts) < 16 or white > 0.97 * box.width * box.height:
                out.append(
                    f"chart {i} (img): {len(counts)} colours, {white} white of {box.width * box.height}"
                )
    if facts.get("tables", 0) < 1:
        out.append("no table")
    return out


def _crop(image: Image.Image, box: dict[str, Any]) -> Image.Image:
    return image.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["w"]), int(box["y"] + box["h"])))


@pytest.mark.parametrize("kind", ["suites", "load", "chaos", "upgrade", "compare"])
def test_report_page_renders_readable_in_chromium(
    browser: chromium.Chromium, tmp_path_factory: pytest.TempPathFactory, kind: str
) -> None:
    out = tmp_path_factory.getbasetemp() / "report-pages"
    pages = (
        build_pages(out)
        if not (out / "compare.html").exists()
        else {
            "suites": out / "suites-report.html",
            "load": out / "load.html",
            "chaos": out / "chaos.html",
            "upgrade": out / "upgrade-report.html",
            "compare": out / "compare.html",
        }
    )
    rendered = browser.render(pages[kind], out / f"{kind}.png")
    assert problems(rendered) == [], f"{kind}: {pages[kind]} (screenshot {rendered.screenshot})"


def test_the_checks_fail_on_a_broken_page(browser: chromium.Chromium, tmp_path: Path) -> None:
    """Negative control: a blank page with a console error, an exception, a missing image and a
    chart that does not decode fails every check (so the checks above can fail)."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><header id='summary'></header>"
        "<img class='chart' alt='x' src='data:image/png;base64,AAAA'>"
        "<img src='missing.png' alt='y'>"
        "<script>console.error('boom'); undefined_function();</script></body></html>"
    )
    found = problems(browser.render(page, tmp_path / "broken.png"))
    text = "\n".join(found)
    assert "console: console.error: boom" in text
    assert "undefined_function" in text
    assert "missing.png" in text  # the image that failed to load
    assert "blank:" in text
    assert "summary: the banner says nothing" in text
    assert "chart 0 (img): not shown or not decoded" in text
    assert "no table" in text


def test_a_page_without_its_chart_fails_the_chart_check(browser: chromium.Chromium, tmp_path: Path) -> None:
    """Negative control: the suites page with its charts removed has everything but a chart."""
    doc = _json("suites-report.json")
    for r in doc["checks"]:
        r["observed"] = []
        r["detail"] = ""
    doc["tests"] = [{**t, "properties": {}} for t in doc["tests"]]
    page = html.write(tmp_path / "no-chart.html", suites.suites_page(doc))
    assert problems(browser.render(page, tmp_path / "no-chart.png")) == ["chart: the page has no chart"]
