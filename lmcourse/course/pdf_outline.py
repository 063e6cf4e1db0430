"""Bookmarks (the outline) for a PDF that Chromium printed, added without rewriting it.

Chromium writes bookmarks only into a tagged PDF (3.5 times the size, without the
chapters' titles), so :mod:`lmcourse.course.pdf` prints an untagged one and
:func:`add_outline` appends the outline here as an incremental update: new objects
and a new cross-reference section after the file's end, pointing at the named
destinations Chromium wrote for each heading's link target. Nothing Chromium
wrote is changed. :func:`pdf_pages_and_destinations` reads the page of each named
destination (the table of contents' page numbers come from it);
:func:`outline_titles` reads an outline back (the tests use it).
"""

from __future__ import annotations

import re


def _dict_at(data: bytes, start: int) -> bytes:
    """The PDF dictionary ``<< ... >>`` that begins at ``start`` (nested ones included)."""
    depth = 0
    for m in re.compile(rb"<<|>>").finditer(data, start):
        depth += 1 if m.group() == b"<<" else -1
        if depth == 0:
            return data[start:m.end()]
    return data[start:]


class _Pdf:
    """The plain-text structure of a PDF as Chromium (Skia) writes it.

    Skia writes every object but the streams as text, with a classic cross-reference
    table: the catalog, its ``/Pages`` tree, its ``/Dests`` dictionary of
    ``/name [page 0 R /XYZ x y z]`` (one for each element a link points to).
    Raises ``ValueError`` for a PDF that is not laid out so. (The last version of
    an object wins, so this also reads a PDF after :func:`add_outline`.)
    """

    def __init__(self, data: bytes):
        self.data = data
        self.starts = {int(m.group(1)): m.end() - 2 for m in re.finditer(rb"(?<![\d])(\d+) 0 obj\s*<<", data)}
        self.catalog_number = next((n for n, at in self.starts.items()
                                    if re.match(rb"<<\s*/Type\s*/Catalog\b", data[at:at + 40])), None)
        if self.catalog_number is None:
            raise ValueError("no catalog")
        self.catalog = self.object(self.catalog_number)

    def object(self, number: int) -> bytes:
        if number not in self.starts:
            raise ValueError(f"no object {number}")
        return _dict_at(self.data, self.starts[number])

    def ref(self, node: bytes, key: bytes) -> int | None:
        m = re.search(rb"/" + key + rb"\s+(\d+)\s+0\s+R", node)
        return int(m.group(1)) if m else None

    def pages(self) -> list[int]:
        """The object numbers of the pages, in order."""
        pages: list[int] = []

        def walk(number: int, depth: int) -> None:
            node = self.object(number)
            if depth > 32:
                raise ValueError("page tree too deep")
            if re.search(rb"/Type\s*/Pages\b", node):
                kids = re.search(rb"/Kids\s*\[([^\]]*)\]", node)
                for kid in re.findall(rb"(\d+)\s+0\s+R", kids.group(1) if kids else b""):
                    walk(int(kid), depth + 1)
            else:
                pages.append(number)

        root = self.ref(self.catalog, b"Pages")
        if root is None:
            raise ValueError("no page tree")
        walk(root, 0)
        return pages

    def destinations(self) -> dict[str, bytes]:
        """Each named destination: its name (an element's id) and its ``[page 0 R /XYZ x y z]``."""
        number = self.ref(self.catalog, b"Dests")
        if number is None:
            return {}
        dests = {}
        for name, array in re.findall(rb"/([^\s/\[\]<>()]+)\s*(\[[^\]]*\])", self.object(number)):
            text = re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), name)
            dests[text.decode("utf-8", "replace")] = array
        return dests


def pdf_pages_and_destinations(data: bytes) -> tuple[int, dict[str, int]]:
    """The page count of a PDF that Chromium wrote, and the 1-based page of each named destination.

    >>> pdf = (b"1 0 obj <</Type /Catalog /Pages 2 0 R /Dests 5 0 R>> endobj "
    ...        b"2 0 obj <</Type /Pages /Count 2 /Kids [3 0 R 4 0 R]>> endobj "
    ...        b"3 0 obj <</Type /Page /Parent 2 0 R>> endobj 4 0 obj <</Type /Page /Parent 2 0 R>> endobj "
    ...        b"5 0 obj <</a#2Db [4 0 R /XYZ 0 0 0]>> endobj")
    >>> pdf_pages_and_destinations(pdf)
    (2, {'a-b': 2})
    """
    pdf = _Pdf(data)
    index = {number: i + 1 for i, number in enumerate(pdf.pages())}
    dests = {}
    for name, array in pdf.destinations().items():
        page = re.match(rb"\[\s*(\d+)\s+0\s+R", array)
        if page and int(page.group(1)) in index:
            dests[name] = index[int(page.group(1))]
    return len(index), dests


def _text_string(text: str) -> bytes:
    """A PDF text string: UTF-16BE with its byte-order mark, in hex."""
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode("ascii") + b">"


def add_outline(data: bytes, entries: list[dict]) -> tuple[bytes, int]:
    r"""``data`` with an outline (bookmarks) appended as an incremental update; and how many it holds.

    ``entries``: in document order, ``{"depth": 1.., "title": str, "dest": id}``; an
    entry whose id has no destination in the PDF is left out (its sections go under
    the entry before it). Each bookmark with sections starts closed. Nothing of the
    original is rewritten: new objects, a new catalog (``/Outlines``,
    ``/PageMode /UseOutlines``), a cross-reference section and a trailer whose
    ``/Prev`` points to the old one are added at the end.

    >>> pdf = (b"%PDF-1.4\n1 0 obj\n<</Type /Catalog /Pages 2 0 R /Dests 4 0 R>>\nendobj\n"
    ...        b"2 0 obj\n<</Type /Pages /Count 1 /Kids [3 0 R]>>\nendobj\n"
    ...        b"3 0 obj\n<</Type /Page /Parent 2 0 R>>\nendobj\n4 0 obj\n<</a [3 0 R /XYZ 0 700 0]>>\nendobj\n"
    ...        b"xref\n0 5\n0000000000 65535 f \n0000000009 00000 n \n0000000074 00000 n \n"
    ...        b"0000000131 00000 n \n0000000181 00000 n \ntrailer\n<</Size 5 /Root 1 0 R>>\nstartxref\n222\n%%EOF\n")
    >>> out, n = add_outline(pdf, [{"depth": 1, "title": "One", "dest": "a"}, {"depth": 2, "title": "x", "dest": "b"}])
    >>> n, outline_titles(out)
    (1, [(1, 'One')])
    """
    pdf = _Pdf(data)
    if b"/Outlines" in pdf.catalog:
        raise ValueError("the PDF has an outline already")
    dests = pdf.destinations()
    root: dict = {"children": []}
    stack: list[tuple[int, dict]] = [(0, root)]
    for entry in entries:
        if entry["dest"] not in dests:
            continue
        depth = max(1, int(entry["depth"]))
        while stack[-1][0] >= depth:
            stack.pop()
        node = {"title": entry["title"], "dest": dests[entry["dest"]], "children": [], "parent": stack[-1][1]}
        stack[-1][1]["children"].append(node)
        stack.append((depth, node))
    if not root["children"]:
        raise ValueError("no destinations for an outline")
    at = data.rfind(b"trailer")
    startxref = re.findall(rb"startxref\s+(\d+)", data)
    if at < 0 or not startxref:
        raise ValueError("no trailer")
    trailer = _dict_at(data, data.index(b"<<", at))
    size = int(re.search(rb"/Size\s+(\d+)", trailer).group(1))

    numbers = iter(range(size, 10**9))
    nodes = []

    def number(node: dict) -> None:
        node["num"] = next(numbers)
        nodes.append(node)
        for child in node["children"]:
            number(child)

    number(root)
    out = bytearray(data if data.endswith(b"\n") else data + b"\n")
    offsets: dict[int, int] = {}

    def write(num: int, body: bytes) -> None:
        offsets[num] = len(out)
        out.extend(b"%d 0 obj\n%s\nendobj\n" % (num, body))

    for node in nodes[1:]:
        parent = node["parent"]
        kids = parent["children"]
        i = kids.index(node)
        fields = [b"/Title " + _text_string(node["title"]), b"/Parent %d 0 R" % parent["num"],
                  b"/Dest " + node["dest"]]
        if i:
            fields.append(b"/Prev %d 0 R" % kids[i - 1]["num"])
        if i + 1 < len(kids):
            fields.append(b"/Next %d 0 R" % kids[i + 1]["num"])
        if node["children"]:
            fields += [b"/First %d 0 R" % node["children"][0]["num"], b"/Last %d 0 R" % node["children"][-1]["num"],
                       b"/Count -%d" % len(node["children"])]
        write(node["num"], b"<<" + b"\n".join(fields) + b">>")
    write(root["num"], b"<</Type /Outlines /First %d 0 R /Last %d 0 R /Count %d>>"
          % (root["children"][0]["num"], root["children"][-1]["num"], len(root["children"])))
    write(pdf.catalog_number, pdf.catalog[:-2] + b"\n/Outlines %d 0 R\n/PageMode /UseOutlines>>" % root["num"])
    xref = len(out)
    out.extend(b"xref\n0 1\n0000000000 65535 f \n%d 1\n%010d 00000 n \n%d %d\n"
               % (pdf.catalog_number, offsets[pdf.catalog_number], size, len(nodes)))
    out.extend(b"".join(b"%010d 00000 n \n" % offsets[node["num"]] for node in nodes))
    extra = b"".join(b" " + m.group() for m in [re.search(rb"/Info\s+\d+\s+\d+\s+R", trailer),
                                                 re.search(rb"/ID\s*\[[^\]]*\]", trailer)] if m)
    out.extend(b"trailer\n<</Size %d /Root %d 0 R%s /Prev %d>>\nstartxref\n%d\n%%%%EOF\n"
               % (size + len(nodes), pdf.catalog_number, extra, int(startxref[-1]), xref))
    return bytes(out), len(nodes) - 1


def outline_titles(data: bytes) -> list[tuple[int, str]]:
    """The outline (bookmarks) of a PDF that Chromium wrote (and :func:`add_outline` added to): (depth, title)."""
    pdf = _Pdf(data)
    found: list[tuple[int, str]] = []
    first = pdf.ref(pdf.catalog, b"Outlines")
    stack = [(pdf.ref(pdf.object(first), b"First"), 1)] if first is not None else []
    while stack:
        number, depth = stack.pop()
        if number is None or len(found) > 100_000:
            continue
        node = pdf.object(number)
        title = re.search(rb"/Title\s*<FEFF([0-9A-Fa-f]*)>", node)
        found.append((depth, bytes.fromhex(title.group(1).decode()).decode("utf-16-be") if title else ""))
        stack.append((pdf.ref(node, b"Next"), depth))
        stack.append((pdf.ref(node, b"First"), depth + 1))
    return found
