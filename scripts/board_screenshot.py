"""Open a written leaderboard.html in headless Chromium (Debian's /usr/bin/chromium via Playwright),
sort by a column, filter by a method, count decoded images and external requests, save screenshots.

    .venv/bin/python scripts/board_screenshot.py results/fmnist/leaderboard.html --out results/fmnist/shots

Prints one line per check; exits 1 when an image did not decode or a request left the machine.
Nothing is downloaded (never `playwright install`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LOCAL = ("file:", "data:", "blob:")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="screenshot folder (default: next to the HTML)")
    ap.add_argument("--filter", default="vq", help="text typed into the table's search box")
    ap.add_argument("--sort", default="gFD", help="text of the column header to sort by (clicked twice)")
    a = ap.parse_args()
    out = a.out or a.html.parent
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = b.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        external: list[str] = []
        ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(LOCAL)
                  else (external.append(r.request.url), r.abort()))
        page.goto(a.html.resolve().as_uri())
        page.wait_for_selector("#leaderboard tbody tr", timeout=30_000)
        page.wait_for_load_state("load")
        rows = lambda: page.eval_on_selector_all("#leaderboard tbody tr", "els => els.length")  # noqa: E731
        imgs = page.eval_on_selector_all("img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
        print(f"rows: {rows()}; images: {sum(imgs)}/{len(imgs)} decoded")
        page.screenshot(path=str(out / "leaderboard_full.png"), full_page=True)
        head = page.locator("thead th", has_text=a.sort).first
        for order in ("first click", "second click"):
            head.click()
            page.wait_for_timeout(300)
            print(f"sorted by {a.sort!r} ({order}):", page.eval_on_selector_all(
                "#leaderboard tbody tr td:first-child b", "els => els.map(e => e.textContent)"))
        page.fill("input[type=search]", a.filter)
        page.wait_for_timeout(300)
        print(f"filter {a.filter!r}: {rows()} rows")
        page.screenshot(path=str(out / "leaderboard_filtered.png"))
        print(f"external requests: {len(external)}; screenshots in {out}")
        b.close()
    return 0 if all(imgs) and not external else 1


if __name__ == "__main__":
    sys.exit(main())
