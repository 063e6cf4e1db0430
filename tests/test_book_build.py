"""The book builds with warnings as errors, and its pages load nothing from other hosts."""

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds the whole book

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = re.compile(r"""(?:https?:)?//(?!www\.w3\.org/)[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")


class _Resources(HTMLParser):
    """Collects what a page loads: script/img/iframe sources, stylesheets, inline scripts and styles."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "video", "audio") and a.get("src"):
            self.urls.append(a["src"])
        rel = set((a.get("rel") or "").split())
        if tag == "link" and a.get("href") and rel & {"stylesheet", "preload", "icon", "modulepreload"}:
            self.urls.append(a["href"])
        self._in = tag if tag in ("script", "style") else None

    def handle_data(self, data):
        if self._in:
            self.inline.append(data)

    def handle_endtag(self, tag):
        self._in = None


def test_every_toc_page_is_built_and_no_solutions_are_published(html):
    toc = (ROOT / "_toc.yml").read_text()
    for name in re.findall(r"file:\s*(\S+)", toc) + [re.search(r"root:\s*(\S+)", toc).group(1)]:
        assert (html / f"{name}.html").is_file(), name
    published = {p.relative_to(html).as_posix() for p in html.rglob("*.html")}
    assert not any(p.startswith(("solutions/", "exercises/", "tests/")) for p in published), published


def test_pages_load_nothing_from_other_hosts(html):
    pages = sorted(html.rglob("*.html"))
    assert pages
    for page in pages:
        parser = _Resources()
        parser.feed(page.read_text(encoding="utf-8"))
        external = [u for u in parser.urls if EXTERNAL.match(u)]
        assert not external, f"{page.relative_to(html)} loads {external}"
        for body in parser.inline:
            named = EXTERNAL.search(body)
            assert not named, f"{page.relative_to(html)}: inline script/style names {named.group()}"


def test_mathjax_is_the_local_copy(html):
    page = (html / "book" / "01_chain_rule.html").read_text(encoding="utf-8")
    assert re.search(r'src="[./]*_static/mathjax/tex-chtml\.js', page), "MathJax must load from _static/mathjax"
    if (ROOT / "book" / "_static" / "mathjax" / "tex-chtml.js").exists():  # vendored by `make book`
        assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
