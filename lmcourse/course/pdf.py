"""The whole book as one PDF, printed offline by Chromium from the built HTML.

    python -m lmcourse pdf [--html _build/html] [--out _build/pdf/lmcourse.pdf]

(``make pdf`` builds the HTML first.) How: the built book is served on
127.0.0.1 and Debian's Chromium (``/usr/bin/chromium``; Playwright drives it and
never downloads a browser) opens its root page, which loads the book's CSS and
the vendored MathJax. From that page's navigation it reads every page of the
book in the order of ``_toc.yml`` (chapters, the pages on using the course, the
API reference), fetches each one and moves its article into the root page: one
document with a title page, a table of contents, and each top-level page
starting on a new page (the API modules follow their index page, their headings
one level down). Links between pages become links inside the PDF; the
sidebars, headers, buttons and ``#`` links are dropped; code and output wrap
(``white-space: pre-wrap``) instead of running off the page. Then the pages'
scripts run again (so an interactive figure is printed as it first shows,
controls and bars included), MathJax typesets every formula, and the command
waits for the images and the fonts. It refuses to print if a formula is left
untypeset, MathJax reports an error, TeX source is left in the text (outside
code), or an image did not load.

Chromium then prints it, A4, with the book's title in each page's header and
``page / pages`` in its footer. To number the table of contents it prints
twice: the first print's named destinations (the targets of the table's links,
one per page of the book) say on which page each starts; the numbers go into
fixed-width boxes, so the second print has the same pages. The bookmarks
(outline) are added here, not by Chromium (which writes them only into a tagged
PDF, 3.5 times the size, and leaves out the chapters' titles): each heading
links to its own section, so the PDF has a destination there, and
:func:`~lmcourse.course.pdf_outline.add_outline` appends the outline as an incremental update, rewriting
nothing Chromium wrote. For this course: 51 pages of HTML, about 300 pages of
PDF, 4.5 MB, in about 20 s.

Bad input is one line on stderr and exit code 2: no built HTML ("run make book
first"), no Chromium ("apt-get install chromium"), no Playwright, or a page that
did not render as it must.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import sys
import threading
import time
from pathlib import Path

from .chromium import CHROMIUM_ARGS, QuietHandler, find_chromium
from .pdf_outline import add_outline, pdf_pages_and_destinations

DEFAULT_HTML = Path("_build/html")
DEFAULT_OUT = Path("_build/pdf/lmcourse.pdf")
# offline: no host name resolves except the local server's address
OFFLINE_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
MATHJAX_TIMEOUT_MS = 120_000
MARGIN = {"top": "16mm", "bottom": "16mm", "left": "14mm", "right": "14mm"}
SCALE = 0.8  # the book's 16 px text prints at about 9.6 pt; a 77-character code line fits A4
PRINT_WIDTH_PX = round((210 - 28) / 25.4 * 96 / SCALE)  # A4 less the margins, in CSS pixels at that scale
REDIRECT = re.compile(r'http-equiv="Refresh" content="0; url=([^"]+)"', re.IGNORECASE)
HEADER = ('<div style="width:100%;margin:0 14mm;font:8px sans-serif;color:#888;">'
          '<span class="title"></span></div>')
FOOTER = ('<div style="width:100%;text-align:center;font:9px sans-serif;color:#444;">'
          '<span class="pageNumber"></span> / <span class="totalPages"></span></div>')


class PdfError(Exception):
    """Why the PDF cannot be made, in one line."""


# The pages of the book in the order of its navigation (that is, of _toc.yml).
NAV_JS = r"""() => {
  const nav = document.querySelector('nav.bd-docs-nav') || document.querySelector('.bd-sidebar-primary nav');
  if (!nav) return null;
  const seen = new Set(), pages = [];
  let part = '';
  for (const el of nav.querySelectorAll('p.caption, a.reference')) {
    if (el.matches('p.caption')) { part = el.textContent.replace(/\s+/g, ' ').trim(); continue; }
    const url = new URL(el.getAttribute('href'), location.href);
    url.hash = '';
    if (url.origin !== location.origin || seen.has(url.href)) continue;
    seen.add(url.href);
    const li = el.closest('li'), m = li && li.className.match(/toctree-l(\d+)/);
    pages.push({url: url.href, title: el.textContent.replace(/\s+/g, ' ').trim(), level: m ? +m[1] : 1,
                part: el.closest('.bd-sidenav__home-link') ? '' : part});
  }
  const author = document.querySelector('.component-author');
  return {pages, author: author ? author.textContent.replace(/\s+/g, ' ').trim() : ''};
}"""

# Fetch every page, move its article into this one, typeset, wait for images and fonts.
ASSEMBLE_JS = r"""async ({pages, title, author, timeoutMs}) => {
  const TEX = {times: '×', to: '→', le: '≤', ge: '≥', cdot: '·', ldots: '…', infty: '∞'};
  const texToText = t => t.replace(/^\s*\\\(|\\\)\s*$/g, '').replace(/\^\{?2\}?/g, '²')
    .replace(/\\([a-zA-Z]+)/g, (_, c) => TEX[c] || c).replace(/[{}\\]/g, '').trim();
  const withTimeout = (promise, what) => Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${what} did not finish in ${timeoutMs / 1000} s`)), timeoutMs))]);
  const loaded = el => new Promise(resolve => {
    el.addEventListener('load', resolve);
    el.addEventListener('error', resolve);
  });
  if (window.MathJax && MathJax.startup) await withTimeout(MathJax.startup.promise, 'MathJax');
  const shell = document.querySelector('article.bd-article');
  if (!shell) throw new Error(`no article.bd-article in ${location.href}`);

  for (const [i, p] of pages.entries()) {
    const response = await fetch(p.url);
    if (!response.ok) throw new Error(`HTTP ${response.status} for ${p.url}`);
    p.doc = new DOMParser().parseFromString(await response.text(), 'text/html');
    p.article = p.doc.querySelector('article.bd-article');
    if (!p.article) throw new Error(`no article.bd-article in ${p.url}`);
    p.key = `lmpdf-page-${i}`;
  }

  // Every page's stylesheets (most are the same on every page).
  const sheets = [];
  const haveCss = new Set([...document.querySelectorAll('link[rel=stylesheet]')].map(l => l.href));
  const haveStyle = new Set([...document.querySelectorAll('style')].map(s => s.textContent));
  for (const p of pages) {
    for (const l of p.doc.querySelectorAll('link[rel=stylesheet]')) {
      const href = new URL(l.getAttribute('href'), p.url).href;
      if (haveCss.has(href)) continue;
      haveCss.add(href);
      const link = document.createElement('link');
      link.rel = 'stylesheet'; link.href = href;
      sheets.push(loaded(link));
      document.head.appendChild(link);
    }
    for (const s of p.doc.head.querySelectorAll('style')) {
      if (haveStyle.has(s.textContent)) continue;
      haveStyle.add(s.textContent);
      document.head.appendChild(document.importNode(s, true));
    }
  }

  // Ids that several pages use ("summary") get the page's key in front; links follow.
  const count = new Map();
  for (const p of pages) {
    for (const el of p.article.querySelectorAll('[id]')) count.set(el.id, (count.get(el.id) || 0) + 1);
  }
  for (const p of pages) {
    p.ids = new Map();
    for (const el of p.article.querySelectorAll('[id]')) {
      if (count.get(el.id) > 1 && !el.closest('.cell_output')) {
        p.ids.set(el.id, `${p.key}--${el.id}`);
        el.id = `${p.key}--${el.id}`;
      }
    }
  }
  const byUrl = new Map(pages.map(p => [p.url, p]));
  for (const p of pages) {
    const a = p.article;
    a.querySelectorAll('.headerlink, button.copybtn, .toggle-button, #searchbox').forEach(el => el.remove());
    for (const el of a.querySelectorAll('[src]')) el.setAttribute('src', new URL(el.getAttribute('src'), p.url).href);
    for (const el of a.querySelectorAll('[srcset]')) el.removeAttribute('srcset');
    for (const img of a.querySelectorAll('img')) img.setAttribute('loading', 'eager');
    for (const el of a.querySelectorAll('a[href]')) {
      const u = new URL(el.getAttribute('href'), p.url);
      if (u.origin !== location.origin) continue;  // another site: the link stays
      const fragment = decodeURIComponent(u.hash.slice(1));
      u.hash = '';
      const target = byUrl.get(u.href);
      if (!target) { el.removeAttribute('href'); continue; }  // the search page, the index, an image
      el.setAttribute('href', '#' + (fragment ? (target.ids.get(fragment) || fragment) : target.key));
    }
    // The outline: each page (its entry in the navigation), then its h2 and h3 sections.
    // Each heading links to its own section, so that the PDF has a destination there.
    p.outline = [{depth: p.level, title: p.title, dest: p.key}];
    for (const h of a.querySelectorAll('h1, h2, h3')) {
      const level = +h.tagName[1], section = h.parentElement.closest('section[id]') || h.closest('[id]');
      if (level === 1 || p.level + level - 1 > 3 || !section) continue;
      const text = h.cloneNode(true);
      text.querySelectorAll('.math').forEach(m => m.replaceWith(texToText(m.textContent)));
      p.outline.push({depth: p.level + level - 1, title: text.textContent.replace(/\s+/g, ' ').trim(),
                      dest: section.id});
      const self = p.doc.createElement('a');
      self.className = 'lmpdf-self';
      self.setAttribute('href', '#' + section.id);
      self.append(...h.childNodes);
      h.append(self);
    }
    if (p.level > 1) {  // a section of a part: its headings one level down
      for (const h of a.querySelectorAll('h1, h2, h3, h4, h5')) {
        const lower = p.doc.createElement('h' + (+h.tagName[1] + p.level - 1 > 6 ? 6 : +h.tagName[1] + p.level - 1));
        for (const at of h.attributes) lower.setAttribute(at.name, at.value);
        lower.append(...h.childNodes);
        h.replaceWith(lower);
      }
    }
  }

  // The document: title page, table of contents, the pages.
  const make = (tag, cls, text) => {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text) el.textContent = text;
    return el;
  };
  const book = make('div', 'lmpdf-book');
  const front = make('section', 'lmpdf-titlepage');
  front.append(make('p', 'lmpdf-title', title), make('p', 'lmpdf-author', author));
  const toc = make('nav', 'lmpdf-toc');
  toc.id = 'lmpdf-contents';
  const contents = make('h1');
  const self = make('a', 'lmpdf-self', 'Contents');
  self.href = '#lmpdf-contents';
  contents.append(self);
  toc.append(contents);
  let part = null;
  for (const p of pages) {
    if (p.part !== part && p.part) toc.append(make('p', 'lmpdf-toc-part', p.part));
    part = p.part;
    const link = make('a', `lmpdf-toc-entry lmpdf-toc-l${p.level}`);
    link.href = '#' + p.key;
    const number = make('span', 'lmpdf-toc-page');
    number.dataset.target = p.key;
    link.append(make('span', 'lmpdf-toc-title', p.title), number);
    toc.append(link);
  }
  book.append(front, toc);
  for (const p of pages) {
    const section = make('section', `lmpdf-page lmpdf-level-${p.level}`);
    section.id = p.key;
    section.append(...[...p.article.childNodes].map(n => document.importNode(n, true)));
    book.append(section);
  }
  shell.replaceChildren(book);
  // Only the article and what holds it: no header, sidebars, footers or dialogs.
  for (let n = shell; n && n !== document.body; n = n.parentElement) {
    for (const sibling of [...n.parentElement.children]) {
      if (sibling !== n && !['SCRIPT', 'STYLE', 'LINK'].includes(sibling.tagName)) sibling.remove();
    }
  }
  document.documentElement.dataset.theme = 'light';
  document.documentElement.dataset.mode = 'light';
  document.title = title;

  // The pages' own scripts (interactive figures) run again, in order.
  const scriptErrors = [];
  const onError = e => scriptErrors.push(String(e.message || e));
  window.addEventListener('error', onError);
  const scripts = [];
  for (const old of book.querySelectorAll('script')) {
    const type = (old.getAttribute('type') || '').toLowerCase();
    if (type && !/javascript|module/.test(type)) continue;
    const s = document.createElement('script');
    for (const at of old.attributes) s.setAttribute(at.name, at.value);
    s.textContent = old.textContent;
    if (s.src) scripts.push(loaded(s));
    old.replaceWith(s);
  }
  await Promise.all([...sheets, ...scripts]);
  window.removeEventListener('error', onError);

  // MathJax: this page's (every page of the book loads the same vendored copy).
  if (!(window.MathJax && MathJax.startup)) {
    const from = pages.find(p => p.doc.querySelector('script[src*="mathjax" i]'));
    if (!from) throw new Error('no page of the book loads MathJax');
    for (const old of from.doc.querySelectorAll('script')) {
      const src = old.getAttribute('src');
      if (!src && old.textContent.includes('MathJax')) {
        const s = document.createElement('script'); s.textContent = old.textContent; document.head.appendChild(s);
      } else if (src && /mathjax/i.test(src)) {
        const s = document.createElement('script'); s.src = new URL(src, from.url).href;
        const done = loaded(s); document.head.appendChild(s); await done;
      }
    }
    if (!(window.MathJax && MathJax.startup)) throw new Error('MathJax did not load (make book vendors it)');
  }
  await withTimeout(MathJax.startup.promise, 'MathJax');
  MathJax.typesetClear();
  await withTimeout(MathJax.typesetPromise(), 'MathJax');

  await Promise.all([...document.images].filter(i => !i.complete).map(loaded));
  await document.fonts.ready;

  const math = [...book.querySelectorAll('.math')];
  const clone = book.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, mjx-container').forEach(el => el.remove());
  const raw = clone.textContent.match(/\$\$|\\\(|\\\[|\\frac|\\begin\{/);
  return {
    pages: pages.length,
    formulas: book.querySelectorAll('mjx-container').length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).length,
    mathErrors: book.querySelectorAll('mjx-merror, [data-mjx-error]').length,
    raw: raw ? raw[0] : null,
    images: book.querySelectorAll('img').length,
    broken: [...book.querySelectorAll('img')].filter(i => !i.naturalWidth).map(i => i.src),
    interactive: book.querySelectorAll('[data-lmcourse-interactive]').length,
    scriptErrors,
    outline: [{depth: 1, title: 'Contents', dest: 'lmpdf-contents'}, ...pages.flatMap(p => p.outline)],
  };
}"""

PRINT_CSS = r"""
html, body { background: #fff !important; }
.bd-container, .bd-container__inner, .bd-page-width, .bd-main, .bd-content, .bd-article-container, .bd-article {
  max-width: none !important; width: auto !important; margin: 0 !important; padding: 0 !important;
  display: block !important; overflow: visible !important; }
.lmpdf-titlepage { height: 240mm; display: flex; flex-direction: column; justify-content: center; text-align: center; }
.lmpdf-title { font-size: 2.6rem; font-weight: 700; margin: 0 0 1rem; }
.lmpdf-author { font-size: 1.2rem; color: #555; }
.lmpdf-toc { break-before: page; }
.lmpdf-toc-part { font-weight: 700; margin: 1.2rem 0 0.3rem; font-size: 1.05rem; }
.lmpdf-toc-entry { display: flex; align-items: baseline; color: inherit !important; text-decoration: none !important;
  margin: 0.15rem 0; }
.lmpdf-toc-title { flex: 1; }
.lmpdf-toc-l2 { padding-left: 1.6rem; font-size: 0.92rem; }
.lmpdf-toc-page { width: 3em; flex: none; text-align: right; }
.lmpdf-page.lmpdf-level-1 { break-before: page; }
.lmpdf-page.lmpdf-level-2 { margin-top: 2rem; }
h1, h2, h3, h4, h5, h6 { break-after: avoid; }
.lmpdf-book h1 { display: block !important; }  /* the theme hides a page's first h1 in print */
/* A long code cell breaks across pages (the theme keeps each whole, leaving an empty box behind). */
div.highlight, div[class*=highlight-], div.literal-block-wrapper, div.cell_input {
  break-inside: auto !important; display: block !important; }
.lmpdf-book table { break-inside: auto !important; }
pre { orphans: 4; widows: 4; }
pre, .highlight pre, .cell_output pre, .output pre {
  white-space: pre-wrap !important; overflow-wrap: anywhere; word-break: normal; overflow: visible !important;
  max-height: none !important; }
.cell_output, .output, .highlight, div.cell { overflow: visible !important; max-height: none !important; }
.pst-scrollable-table-container, .table-wrapper { overflow: visible !important; }
table { font-size: 0.85em; }
tr, img, figure, .lmc-widget, mjx-container[display="true"] { break-inside: avoid; }
img { max-width: 100% !important; height: auto; }
/* Chromium prints a shadow as a picture: none (the :not(#id) outranks the theme's !important ones) */
*:not(#lmpdf-none) { box-shadow: none !important; text-shadow: none !important; }
a.lmpdf-self { color: inherit !important; text-decoration: none !important; }
mjx-container[display="true"] { overflow: visible !important; }
"""


def root_page(html: Path) -> str:
    """The path of the book's first page inside ``html`` (``index.html`` redirects to it)."""
    index = html / "index.html"
    if not index.is_file():
        raise PdfError(f"no built HTML book in {html} (no index.html): run make book first")
    redirect = REDIRECT.search(index.read_text(encoding="utf-8", errors="replace"))
    page = redirect.group(1) if redirect else "index.html"
    if not (html / page).is_file():
        raise PdfError(f"{html}/index.html points to {page}, which is missing: run make book first")
    return page


def build_pdf(html: Path, out: Path, chromium: str | None = None, *, outline: bool = True,
              exclude_parts: tuple[str, ...] = ()) -> dict:
    """Print the book built in ``html`` to ``out``; returns what it measured (pages, formulas, ...).

    ``outline``: PDF bookmarks (each page of the book, its sections and subsections).
    ``exclude_parts``: captions of parts of the navigation (``"Reference"``) to leave out.
    """
    html = Path(html)
    if not html.is_dir():
        raise PdfError(f"no built HTML book at {html}: run make book first")
    root = root_page(html)
    chromium = chromium or find_chromium()
    if not chromium or not Path(chromium).exists():
        raise PdfError("no Chromium found: apt-get install chromium (or make chromium), or pass --chromium PATH")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise PdfError("Playwright is not installed: pip install playwright (make setup installs it)") from None

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    handler = functools.partial(QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=OFFLINE_ARGS)
            try:
                page = browser.new_page(viewport={"width": PRINT_WIDTH_PX, "height": 1200})
                page.emulate_media(media="print", color_scheme="light")
                page.goto(f"{base}/{root}", wait_until="load")
                nav = page.evaluate(NAV_JS)
                if not nav or not nav["pages"]:
                    raise PdfError(f"no navigation found in {html / root}: is it a Jupyter Book build?")
                title = nav["pages"][0]["title"]
                pages = [e for e in nav["pages"] if e["part"] not in exclude_parts]
                if not pages:
                    raise PdfError("no page of the book is left to print")
                facts = page.evaluate(ASSEMBLE_JS, {"pages": pages, "title": title, "author": nav["author"],
                                                   "timeoutMs": MATHJAX_TIMEOUT_MS})
                _check(facts)
                page.add_style_tag(content=PRINT_CSS)
                page.evaluate("() => document.fonts.ready.then(() => true)")
                options = {"format": "A4", "margin": MARGIN, "scale": SCALE, "print_background": True,
                           "display_header_footer": True, "header_template": HEADER, "footer_template": FOOTER}
                # Print; read on which page each page of the book starts (the table of contents'
                # links are destinations in the PDF); put the numbers in and print again, until
                # they stay the same (the first time: they go into fixed-width boxes).
                data, starts, shown = page.pdf(**options), {}, None
                for _ in range(3):
                    try:
                        n_pages, dests = pdf_pages_and_destinations(data)
                    except (ValueError, KeyError):
                        n_pages, dests = None, {}
                    starts = {f"lmpdf-page-{i}": dests.get(f"lmpdf-page-{i}") for i in range(len(pages))}
                    if not all(starts.values()) or starts == shown:
                        break
                    page.evaluate("""numbers => document.querySelectorAll('.lmpdf-toc-page').forEach(
                        el => { el.textContent = String(numbers[el.dataset.target]); })""", starts)
                    data, shown = page.pdf(**options), starts
                facts["toc_page_numbers"] = starts == shown
                if not facts["toc_page_numbers"]:
                    print("note: the table of contents has no page numbers (the PDF's destinations could not be "
                          "read)" if shown is None else "note: the table of contents' page numbers may be off",
                          file=sys.stderr)
            finally:
                browser.close()
    except PlaywrightError as err:
        message = re.sub(r"^(\w+\.\w+: )?(Error: )?", "", str(err).strip().splitlines()[0])
        raise PdfError(f"Chromium could not print the book: {message}") from None
    finally:
        server.shutdown()
        server.server_close()
    facts["bookmarks"] = 0
    if outline:
        try:
            data, facts["bookmarks"] = add_outline(data, facts["outline"])
        except (ValueError, KeyError) as err:
            print(f"note: the PDF has no bookmarks ({err})", file=sys.stderr)
    out.write_bytes(data)
    facts.update(pdf_pages=n_pages, bytes=len(data), seconds=time.perf_counter() - start,
                 starts={e["title"]: starts[f"lmpdf-page-{i}"] for i, e in enumerate(pages)})
    return facts


def _check(facts: dict) -> None:
    """Refuse to print a book whose formulas, images or figures did not render."""
    problems = []
    if facts["untypeset"]:
        problems.append(f"{facts['untypeset']} formulas not typeset by MathJax")
    if facts["mathErrors"]:
        problems.append(f"{facts['mathErrors']} MathJax errors")
    if facts["raw"]:
        problems.append(f"raw TeX left in the text ({facts['raw']!r})")
    if facts["broken"]:
        problems.append(f"{len(facts['broken'])} images did not load (first: {facts['broken'][0]})")
    if facts["scriptErrors"]:
        problems.append(f"a page's script failed: {facts['scriptErrors'][0]}")
    if problems:
        raise PdfError("; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse pdf",
                                     description="Print the built HTML book as one PDF with Chromium, offline.")
    parser.add_argument("--html", type=Path, default=DEFAULT_HTML, help="the built HTML book (make book)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PDF to write")
    parser.add_argument("--chromium", help="the Chromium binary (default: chromium on the PATH)")
    parser.add_argument("--no-outline", action="store_true", help="no PDF bookmarks")
    parser.add_argument("--exclude-part", action="append", default=[], metavar="CAPTION",
                        help='leave out a part of the book by its caption in the navigation (e.g. "Reference")')
    args = parser.parse_args(argv)
    try:
        facts = build_pdf(args.html, args.out, chromium=args.chromium, outline=not args.no_outline,
                          exclude_parts=tuple(args.exclude_part))
    except (PdfError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pages = f"{facts['pdf_pages']} pages" if facts["pdf_pages"] else "pages not counted"
    print(f"wrote {args.out}: {pages}, {facts['bytes'] / 1e6:.1f} MB, {facts['bookmarks']} bookmarks, "
          f"in {facts['seconds']:.1f} s; from {facts['pages']} pages of the book, with {facts['formulas']} "
          f"formulas, {facts['images']} images and {facts['interactive']} interactive figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
