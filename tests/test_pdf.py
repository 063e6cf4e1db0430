"""The book as one PDF (`make pdf`, lmcourse/course/pdf.py), read back with poppler.

Prints the HTML book that the session's `html` fixture built (no second build)
with `python -m lmcourse pdf`, then reads the PDF with Debian's poppler-utils:
`pdftotext` finds every chapter's title (from the first heading of
book/NN_*.ipynb) in the table of contents, with the page the chapter starts on,
and on that page; no TeX source (a fraction, display or inline delimiters) is
left in the text; every page carries "N / total" in its footer; `pdfinfo` gives a
sensible page count; and `pdfimages` finds at least as many images as the
chapters have PNG outputs, each chapter's inside its own pages. The bookmarks
hold every chapter. Prints the page count, the size and the time taken.

Skipped, with a message, only where Chromium, Playwright or poppler-utils is not
installed (`make test` installs them when it can).
"""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmcourse.course.pdf import find_chromium
from lmcourse.course.pdf_outline import outline_titles

ROOT = Path(__file__).resolve().parent.parent
POPPLER = all(shutil.which(tool) for tool in ("pdftotext", "pdfimages", "pdfinfo"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None,
                       reason="no Chromium installed (apt-get install chromium); PDF test skipped"),
    pytest.mark.skipif(not POPPLER,
                       reason="no poppler-utils installed (apt-get install poppler-utils); PDF test skipped"),
]


def chapters() -> list[tuple[str, int]]:
    """Each chapter's title (its notebook's first heading) and how many PNG figures it outputs."""
    found = []
    for path in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        title = re.search(r"^# (.+)$", text, re.MULTILINE).group(1)
        pngs = sum("image/png" in out.get("data", {}) for c in cells if c["cell_type"] == "code"
                   for out in c.get("outputs", []))
        found.append((re.sub(r"[*_`]", "", title).strip(), pngs))
    return found


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def pdf(html, tmp_path_factory):
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    out = tmp_path_factory.mktemp("pdf") / "lmcourse.pdf"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lmcourse", "pdf", "--html", str(html), "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert out.is_file()
    print(f"\n{result.stdout.strip()}\n(the command took {seconds:.1f} s of wall time)")
    return out


def test_the_book_as_one_pdf(pdf):
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    n_pages = int(re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE).group(1))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = text.split("\f")[:n_pages]
    assert len(pages) == n_pages
    book = chapters()
    assert len(book) >= 10, book
    # About 15 to 30 pages a chapter, and the reference: a few hundred in all.
    assert 10 * len(book) < n_pages < 80 * len(book), n_pages

    # Page numbers in the footer of every page.
    unnumbered = [i for i, page in enumerate(pages, 1) if not re.search(rf"\b{i} / {n_pages}\b", page)]
    assert not unnumbered, f"pages without 'N / {n_pages}' in the footer: {unnumbered[:10]}"

    # No TeX source left: every formula was typeset.
    for raw in ("\\frac", "$$", "\\(", "\\["):
        assert raw not in text, f"raw TeX {raw!r} in the PDF's text"

    # The table of contents (after the title page) gives each chapter's first page; the
    # chapter's title is on it.
    contents = "\n".join(pages[1:4])
    starts = []
    for title, _ in book:
        entry = re.search(re.escape(title) + r"\s*\.*\s*(\d+)\s*$", contents, re.MULTILINE)
        assert entry, f"chapter {title!r} not in the table of contents"
        start = int(entry.group(1))
        assert 1 < start <= n_pages and title in flat(pages[start - 1]), (title, start)
        starts.append(start)
    assert starts == sorted(starts), "chapters out of the order of _toc.yml"

    # The figures: at least one image per PNG output, each chapter's within its pages.
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    image_pages = [int(line.split()[0]) for line in listing.splitlines()[2:] if line.strip()]
    assert len(image_pages) >= sum(pngs for _, pngs in book), listing
    ends = starts[1:] + [n_pages + 1]
    for (title, pngs), first, end in zip(book, starts, ends, strict=True):
        inside = sum(first <= p < end for p in image_pages)
        assert inside >= pngs, f"chapter {title!r}: {pngs} PNG outputs, {inside} images on its pages {first}-{end - 1}"

    # Bookmarks: every numbered chapter at the top level; a chapter's companion page
    # (a section of it in _toc.yml, its title unnumbered) bookmarked below it.
    outline = outline_titles(pdf.read_bytes())
    top = [title for depth, title in outline if depth == 1]
    numbered = [title for title, _ in book if re.match(r"\d+\. ", title)]
    assert [t for t in top if t in set(numbered)] == numbered, top
    for title in (title for title, _ in book if title not in numbered):
        assert any(depth > 1 and t == title for depth, t in outline), f"no bookmark below a chapter for {title!r}"
    print(f"{n_pages} pages, {pdf.stat().st_size / 1e6:.1f} MB, {len(image_pages)} images, "
          f"{len(top)} top-level bookmarks")
