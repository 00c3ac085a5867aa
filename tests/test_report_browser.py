"""The HTML report in a real browser: headless Chromium (Debian's /usr/bin/chromium) via Playwright.

Loads a synthetic board's ``leaderboard.html`` from disk, sorts by a column, filters to one method,
checks every image (sample grids, per-run plots, suite plots) decoded (naturalWidth > 0), that no
request left the machine (only file:, data: and blob: URLs; everything else is aborted and
recorded), and saves a screenshot under pytest's tmp dir and ``results/test-artifacts/``.
Skipped, saying why, without /usr/bin/chromium or the playwright package (never ``playwright install``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from board_fixture import write_report

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LOCAL = ("file:", "data:", "blob:")  # blob: = itables' bundle imported from an in-page Blob, never the network

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM}: apt-get install -y chromium"),
    pytest.mark.skipif(__import__("importlib").util.find_spec("playwright") is None,
                       reason="playwright is not installed (pip install -r requirements.txt; never `playwright install`)"),
]


def broken_images(page) -> list[str]:
    """alt text of every <img> that did not decode (naturalWidth 0)."""
    return page.eval_on_selector_all("img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.alt)")


def method_column(page) -> list[str]:
    return page.eval_on_selector_all("#leaderboard tbody tr td:first-child b", "els => els.map(e => e.textContent)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, path: Path):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith(LOCAL) else route.abort())
    page.goto(path.as_uri())
    page.wait_for_selector("#leaderboard tbody tr", timeout=30_000)
    page.wait_for_load_state("load")
    return ctx, page, requests


def test_report_sorts_filters_shows_images_offline(browser, tmp_path):
    html = write_report(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    ctx, page, requests = _open(browser, html)
    try:
        assert sorted(method_column(page)) == ["vcq", "vq", "vq_evil"]
        # sort by NLL (bits/image, column 4): ascending puts vcq (20) first, descending vq_evil (30)
        head = page.locator("thead th", has_text="NLL").first
        head.click()
        page.wait_for_timeout(200)
        first = method_column(page)[0]
        head.click()
        page.wait_for_timeout(200)
        again = method_column(page)[0]
        assert {first, again} == {"vcq", "vq_evil"}, (first, again)
        # filter to one method with the search box
        page.fill("input[type=search]", "vq_evil")
        page.wait_for_timeout(300)
        assert method_column(page) == ["vq_evil"]
        # the <script> label is text, not a script (it would have set no global, but check it is shown escaped)
        assert "<script>alert('x')</script>" in page.inner_text("body")
        # images: sample grids, per-run plots, suite plots, all decoded
        assert page.locator("img.sample").count() >= 3 and page.locator("img.plot").count() >= 4
        assert broken_images(page) == []
        assert page.locator("img[alt='entropy_curves.png']").count() == 1
        # nothing left the machine
        assert requests and all(u.startswith(LOCAL) for u in requests), [u for u in requests if not u.startswith(LOCAL)]
        shot = tmp_path / "leaderboard.png"
        page.fill("input[type=search]", "")
        page.wait_for_timeout(200)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        keep = Path(__file__).resolve().parents[1] / "results" / "test-artifacts"
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / "leaderboard_browser.png")
    finally:
        ctx.close()


def test_a_missing_plot_fails_the_check(browser, tmp_path):
    """The image check can fail: a plot whose data is gone is reported (so the test above can catch it)."""
    html = write_report(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    page_text = html.read_text()
    start = page_text.index("src=\"data:image/png;base64,", page_text.index("alt=\"entropy_curves.png\""))
    html.write_text(page_text[:start] + "src=\"data:image/png;base64,AAAA" + page_text[start + 27:])
    ctx, page, _ = _open(browser, html)
    try:
        assert "entropy_curves.png" in broken_images(page)
    finally:
        ctx.close()
