"""`muscat report OUT.html`: the page describes the extracted dataset of tests/pieces.py, and a
real headless Chromium (Debian's, driven by Playwright) loads it offline without console errors
and shows every histogram: each figure's box in a full-page screenshot holds the bars' colour.

Set MUSCAT_SCREENSHOT=docs/report.png to keep the top of the screenshot (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import run_muscat

if TYPE_CHECKING:
    import numpy as np

BAR = (31, 119, 180)  # matplotlib's first colour (C0): every histogram's bars
WIDTH = 1280


def chromium() -> str | None:
    return os.environ.get("MUSCAT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def expected_figures(db: Path) -> set[str]:
    """Every scalar or categorical feature with a value, but key and scale (their own figure)."""
    result = run_muscat("sql", "SELECT DISTINCT feature FROM features WHERE feature NOT IN ('key', 'scale') "
                        "AND ((value IS NOT NULL AND isfinite(value)) OR text IS NOT NULL)", "--format", "json", db=db)
    return {row["feature"] for row in json.loads(result.stdout)}


def make_report(db: Path, out: Path) -> str:
    result = run_muscat("report", str(out), db=db, timeout=600)
    assert result.returncode == 0, result.stderr
    return out.read_text()


@pytest.fixture(scope="module")
def report(pieces_catalogue, tmp_path_factory) -> tuple[Path, str]:
    """The report of the pieces catalogue, made once by `muscat report` for the tests that only
    read it: (its file, its text)."""
    db, _ = pieces_catalogue
    out = tmp_path_factory.mktemp("report") / "report.html"
    return out, make_report(db, out)


def test_the_page_holds_the_dataset_and_nothing_from_elsewhere(pieces_catalogue, report):
    db, _ = pieces_catalogue
    _, page = report
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page and " src=" not in page
    assert not re.search(r"url\((?!#)", page)  # only references inside the page (clip paths)
    assert "11 present, 0 missing" in page and "9 distinct" in page
    for codec in ("flac", "mp3", "aac", "vorbis", "wav"):
        assert f"<td>{codec}</td>" in page
    assert "<td>probe</td><td>not a readable flac file (End of file)</td>" in page  # failures by reason
    names = set(re.findall(r'<figure class="histogram" data-name="([^"]+)"', page))
    assert names == expected_figures(db)
    assert "bpm (BPM)" in page and "loudness_integrated (LUFS)" in page  # units on the axes
    assert 'data-name="key_scale"' in page and 'data-name="chroma"' in page
    assert "<h2>Splits</h2>" not in page  # no splits view in this catalogue


def test_splits_are_shown_when_the_catalogue_has_them(pieces_catalogue, tmp_path):
    db, _ = pieces_catalogue
    copy = tmp_path / "with-splits.duckdb"
    shutil.copyfile(db, copy)
    made = run_muscat("split", "--by", "audio", "--ratios", "50,50", "--json", db=copy)
    assert made.returncode == 0, made.stderr
    parts = json.loads(made.stdout)["splits"]
    page = make_report(copy, tmp_path / "report.html")
    assert "<h2>Splits</h2>" in page and 'data-name="splits"' in page
    for part, files in parts.items():
        assert f'<td>default</td><td>{part}</td><td class="n">{files}</td>' in page


def test_bad_output_is_exit_2(pieces_catalogue, tmp_path):
    db, _ = pieces_catalogue
    for out, message in [(tmp_path / "report.png", "name it OUT.html"),
                         (tmp_path / "no" / "report.html", "does not exist")]:
        result = run_muscat("report", str(out), db=db)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    result = run_muscat("report", str(tmp_path / "r.html"), db=tmp_path / "none.duckdb")
    assert result.returncode == 2 and "no catalogue here yet" in result.stderr
    assert not (tmp_path / "none.duckdb").exists()


def look(page_file: Path) -> tuple[list[str], list[str], list[dict], "np.ndarray"]:
    """Open the page in Chromium, offline: what went wrong (console errors and warnings, page
    errors, failed requests), every request it made, each figure's box in page coordinates, and
    a full-page screenshot as an RGB array."""
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))

            def offline(route):  # the page must need nothing but itself
                requests.append(route.request.url)
                if route.request.url == page_file.as_uri():
                    route.continue_()
                else:
                    route.abort()

            page.route("**/*", offline)
            page.goto(page_file.as_uri(), wait_until="load")
            boxes = page.evaluate("""() => [...document.querySelectorAll('figure')].map(f => {
                const r = f.querySelector('svg').getBoundingClientRect();
                return {kind: f.className, name: f.dataset.name, x: r.x + scrollX, y: r.y + scrollY,
                        width: r.width, height: r.height};
            })""")
            shot = page_file.with_suffix(".png")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return problems, requests, boxes, np.asarray(Image.open(shot).convert("RGB")).astype(int)


def blank_figures(boxes: list[dict], image) -> list[str]:
    """The figures whose box in the screenshot does not show bars: fewer than 100 pixels of
    the bars' colour, or almost nothing but background."""
    import numpy as np

    background = image[5, 5]
    assert tuple(background) == (255, 255, 255)
    blank = []
    for box in boxes:
        x0, y0 = int(box["x"]), int(box["y"])
        region = image[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
        if box["width"] < 200 or box["height"] < 100 or not region.size:
            blank.append(box["name"])
            continue
        bars = np.all(np.abs(region - BAR) <= 3, axis=2).sum()
        drawn = np.any(region != background, axis=2).mean()
        if bars < 100 or drawn < 0.05:
            blank.append(box["name"])
    return blank


NO_CHROMIUM = pytest.mark.skipif(chromium() is None, reason="no Chromium installed (Debian: apt-get install "
                                 "chromium; .ci/run installs it)")


@NO_CHROMIUM
def test_chromium_shows_every_histogram_without_console_errors(pieces_catalogue, report):
    from PIL import Image

    db, _ = pieces_catalogue
    out, _ = report
    problems, requests, boxes, image = look(out)
    assert problems == [] and requests == [out.as_uri()], (problems, requests)
    histograms = [b for b in boxes if b["kind"] == "histogram"]
    assert {b["name"] for b in histograms} == expected_figures(db)
    assert {"key_scale", "chroma", "formats"} <= {b["name"] for b in boxes}
    assert blank_figures(boxes, image) == []
    if os.environ.get("MUSCAT_SCREENSHOT"):
        Image.fromarray(image[:2000].astype("uint8")).save(os.environ["MUSCAT_SCREENSHOT"])


@NO_CHROMIUM
def test_the_screenshot_check_sees_a_figure_that_shows_nothing(report, tmp_path):
    out = tmp_path / "report.html"
    _, page = report
    # the bars of the bpm histogram painted in the background's colour: still a figure, no bars
    start = page.index('<figure class="histogram" data-name="bpm">')
    end = page.index("</figure>", start)
    out.write_text(page[:start] + page[start:end].replace("#1f77b4", "#ffffff") + page[end:])
    problems, _, boxes, image = look(out)
    assert problems == []
    assert blank_figures(boxes, image) == ["bpm"]
