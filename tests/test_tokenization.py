import json

import pytest

from lmcourse.tokenization import BPETokenizer, CharTokenizer, load_tokenizer, shakespeare_char_tokenizer, train_bpe

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20


def test_char_roundtrip_and_sorted_ids():
    tok = CharTokenizer(TEXT)
    assert tok.itos == sorted(set(TEXT))
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.encode("be") == [tok.itos.index("b"), tok.itos.index("e")]


def test_char_unknown_character_is_named():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([3])


def test_char_special_tokens(tmp_path):
    tok = CharTokenizer("abc", special_tokens=["[MASK]"])
    mask = tok.token_to_id("[MASK]")
    assert mask == 0 and tok.vocab_size == 4
    assert tok.encode("a[MASK]c") == [1, mask, 3]
    assert tok.decode(tok.encode("a[MASK]c")) == "a[MASK]c"
    tok.save(tmp_path / "t.json")
    back = load_tokenizer(tmp_path / "t.json")
    assert isinstance(back, CharTokenizer) and back.itos == tok.itos and back.encode("a[MASK]") == [1, 0]


def test_char_needs_text_or_vocab():
    with pytest.raises(ValueError):
        CharTokenizer()
    with pytest.raises(ValueError, match="twice"):
        CharTokenizer(vocab=["a", "a"])


def test_bpe_roundtrip_any_text_and_compresses(tmp_path):
    tok = train_bpe(TEXT, vocab_size=300)
    assert tok.vocab_size == 300
    for s in (TEXT, "Café — naïve ✓", ""):
        assert tok.decode(tok.encode(s)) == s
    assert len(tok.encode(TEXT)) < len(TEXT) / 2
    tok.save(tmp_path / "b.json")
    back = load_tokenizer(tmp_path / "b.json")
    assert isinstance(back, BPETokenizer) and back.encode(TEXT) == tok.encode(TEXT)


def test_bpe_special_tokens_and_errors(tmp_path):
    tok = train_bpe(TEXT, vocab_size=300, special_tokens=["[MASK]"])
    mask = tok.token_to_id("[MASK]")
    ids = tok.encode("to be [MASK] not")
    assert mask in ids and tok.decode(ids) == "to be [MASK] not"
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe(TEXT, vocab_size=256, special_tokens=["[MASK]"])
    with pytest.raises(ValueError, match="not a token"):
        tok.token_to_id("[CLS]")
    CharTokenizer("ab").save(tmp_path / "c.json")
    with pytest.raises(ValueError, match="kind 'char'"):
        BPETokenizer.load(tmp_path / "c.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizer"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.json")


def test_shakespeare_vocabulary_covers_every_split():
    from lmcourse.data import SPLITS, load_shakespeare

    tok = shakespeare_char_tokenizer()
    assert tok.vocab_size == 75
    # plain characters only: single printable characters (and the newline), no special tokens
    assert tok.special_tokens == []
    assert all(len(c) == 1 and (c == "\n" or c.isprintable()) for c in tok.itos)
    assert json.loads(json.dumps(tok.itos)) == tok.itos
    for split in SPLITS:  # every character of every split is in the vocabulary
        assert set(load_shakespeare(split)) <= set(tok.itos), split
    assert set(tok.itos) == set(load_shakespeare())  # and nothing else
