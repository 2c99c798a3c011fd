"""Open an HTML file in Debian's headless Chromium (Playwright, no downloaded browser)."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def open_in_chromium(html_path, screenshot_path):
    """Load a report headless; return (all images loaded, console errors, page errors, facts)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed (make test installs Debian's chromium)"
    console_errors: list[str] = []
    page_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else
                    page_errors.append(f"network request {r.url}"))
            page.goto(html_path.resolve().as_uri(), wait_until="load")
            images_ok = page.evaluate(
                "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            facts = page.evaluate("""() => ({
                images: document.images.length,
                summaryRows: document.querySelectorAll('#summary table tbody tr').length,
                firstHeading: document.querySelector('main section h2').textContent,
            })""")
            # What a reader sees first, then: sorting a table by its header must not raise.
            page.screenshot(path=str(screenshot_path), full_page=False)
            header = page.query_selector("#results th")
            if header is not None:
                header.click()
        finally:
            browser.close()
    return images_ok, console_errors, page_errors, facts
