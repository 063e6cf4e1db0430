"""Every page of the built book in a real browser (headless Chromium), offline.

Serves the HTML on 127.0.0.1 and opens each page with Playwright driving the
Debian package's /usr/bin/chromium (Playwright never downloads a browser here).
For every page: no request to any other host, no HTTP error, no console error
beyond ALLOWED_CONSOLE_ERRORS, every formula typeset by MathJax (no raw `$$` or
`\\(` left, no MathJax error), every image loaded, and every interactive figure
with its controls. A screenshot of chapter 1 is saved to
_build/test-artifacts/chapter01.png. And on every chapter, in a 1280-pixel-wide
window, no code cell scrolls sideways (book/ruff.toml holds the notebooks' code
lines to the 77 characters that fit).

Skipped, with a message, only where Chromium or Playwright is not installed
(`make test` installs both when it can).
"""

import functools
import http.server
import re
import threading
from pathlib import Path

import pytest

from lmcourse.course.chromium import CHROMIUM_ARGS, QuietHandler, find_chromium

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "_build" / "test-artifacts"
CHROMIUM = find_chromium()
# Console errors that are not the book's fault:
# - pydata-sphinx-theme logs this with console.error on a browser's first visit,
#   when no light/dark choice is stored yet; it then uses "auto", as intended.
ALLOWED_CONSOLE_ERRORS: tuple[str, ...] = ("Got invalid theme mode: . Resetting to auto.",)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None,
                       reason="no Chromium installed (apt-get install chromium); browser check skipped"),
]


@pytest.fixture(scope="module")
def site(html):
    if not (html / "_static" / "mathjax" / "tex-chtml.js").is_file():
        pytest.fail("MathJax is not vendored: run `make book` (or `make test`), "
                    "which fetches it into book/_static/mathjax")
    handler = functools.partial(QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()



@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api",
                                     reason="Playwright is not installed (pip install playwright)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


REDIRECT = re.compile(r'http-equiv="Refresh" content="0; url=([^"]+)"', re.IGNORECASE)


def _pages(html: Path) -> list[str]:
    """Every page except redirects (whose targets must exist)."""
    pages = []
    for p in sorted(html.rglob("*.html")):
        if "_static" in p.parts:
            continue
        redirect = REDIRECT.search(p.read_text(encoding="utf-8"))
        if redirect:
            assert (p.parent / redirect.group(1)).is_file(), f"{p.name} redirects to a missing page"
        else:
            pages.append(p.relative_to(html).as_posix())
    return pages


def open_page(browser, base: str, page_path: str):
    """Start loading a page, with listeners that collect its problems; :func:`finish_page` checks it."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("request", lambda r: r.url.startswith((base, "data:", "blob:", "about:"))
            or problems.append(f"request to another host: {r.url}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status} for {r.url}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and not any(a in m.text for a in ALLOWED_CONSOLE_ERRORS)
            and problems.append(f"console error: {m.text}"))
    page.goto(f"{base}/{page_path}", wait_until="commit")
    return page, problems


def finish_page(page, problems: list[str], screenshot: Path | None = None) -> dict:
    """Wait until the page has loaded, MathJax has typeset and the network is idle; then check it."""
    page.wait_for_load_state("load")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise.then(() => true) : true")
    page.wait_for_load_state("networkidle")
    facts = page.evaluate("""() => {
        const math = document.querySelectorAll('.math').length;
        const typeset = document.querySelectorAll('.math mjx-container, mjx-container').length;
        const errors = document.querySelectorAll('mjx-merror, [data-mjx-error]').length;
        const clone = document.body.cloneNode(true);
        clone.querySelectorAll('pre, code, script, style, .highlight, textarea').forEach(e => e.remove());
        const text = clone.innerText;
        const images = [...document.images].map(
            i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
        const interactive = [...document.querySelectorAll('[data-lmcourse-interactive]')].map(
            f => ({name: f.dataset.lmcourseInteractive, controls: f.querySelectorAll('input, select, button').length}));
        return {math, typeset, errors, text, images, interactive};
    }""")
    if facts["typeset"] < facts["math"]:
        problems.append(f"{facts['math']} formulas but {facts['typeset']} typeset by MathJax")
    if facts["errors"]:
        problems.append(f"{facts['errors']} MathJax error nodes")
    raw = re.search(r"\$\$|\\\(|\\\[|(?<![\w$])\$[^$\s][^$]*\$(?![\w$])", facts["text"])
    if raw:
        problems.append(f"raw TeX left in the text: {raw.group()[:40]!r}")
    problems += [f"image not loaded: {i['src']}" for i in facts["images"] if not i["ok"]]
    problems += [f"interactive figure {f['name']!r} has no controls" for f in facts["interactive"] if not f["controls"]]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=False)
    page.close()
    return {"problems": problems, **facts}


def check_page(browser, base: str, page_path: str, screenshot: Path | None = None) -> dict:
    return finish_page(*open_page(browser, base, page_path), screenshot)


def test_every_page_in_a_real_browser(site, browser):
    html, base = site
    pages = _pages(html)
    assert "book/01_chain_rule.html" in pages
    # a few pages load at once: each waits half a second of network silence, and those waits overlap
    report = {}
    for i in range(0, len(pages), 6):
        opened = {p: open_page(browser, base, p) for p in pages[i:i + 6]}
        report.update({p: finish_page(*page) for p, page in opened.items()})
    bad = {p: r["problems"] for p, r in report.items() if r["problems"]}
    assert not bad, bad
    assert sum(r["typeset"] for r in report.values()) > 20, "the book's formulas were typeset"
    print(f"\nchecked {len(pages)} pages in Chromium: "
          f"{sum(r['typeset'] for r in report.values())} formulas, "
          f"{sum(len(r['images']) for r in report.values())} images, "
          f"{sum(len(r['interactive']) for r in report.values())} interactive figures")


def test_screenshot_of_a_chapter(site, browser):
    html, base = site
    shot = ARTIFACTS / "chapter01.png"
    result = check_page(browser, base, "book/01_chain_rule.html", screenshot=shot)
    assert not result["problems"], result["problems"]
    assert shot.is_file() and shot.stat().st_size > 10_000


# A 1280-pixel-wide window, the narrow end of a laptop screen. There a chapter's
# code cell is 684 px wide, 652 px inside its padding: 77 characters of the 14 px
# monospace font, the line length that book/ruff.toml holds the notebooks to.
NARROW_WINDOW = {"width": 1280, "height": 800}


def test_no_code_cell_scrolls_sideways_in_a_1280_pixel_window(site, browser):
    html, base = site
    chapters = sorted(p for p in _pages(html) if re.fullmatch(r"book/\d\d_\w+\.html", p))
    assert len(chapters) >= 10, chapters
    wide: list[str] = []
    for chapter in chapters:
        page = browser.new_page(viewport=NARROW_WINDOW)
        page.goto(f"{base}/{chapter}", wait_until="load")
        page.evaluate("() => document.fonts.ready.then(() => true)")
        cells = page.evaluate("""() => [...document.querySelectorAll('.cell .cell_input pre')].map(
            pre => ({scroll: pre.scrollWidth, client: pre.clientWidth, first: pre.innerText.split('\\n')[0]}))""")
        page.close()
        assert cells, f"{chapter}: no code cells found (has the theme's markup changed?)"
        wide += [f"{chapter}: {c['first']!r} ({c['scroll']} px in a {c['client']} px cell)"
                 for c in cells if c["scroll"] > c["client"]]
    assert not wide, ("code cells that scroll sideways at 1280 px (break the lines; see book/ruff.toml):\n"
                      + "\n".join(wide))
