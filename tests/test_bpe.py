"""The teaching BPE (lmcourse.tokenization.learn_bpe) against Hugging Face `tokenizers`:
the same merges in the same order, the same tokens, the same pre-tokenization."""

import itertools

import pytest
from tokenizers import pre_tokenizers

from lmcourse.data import load_shakespeare
from lmcourse.tokenization import (
    apply_merges,
    byte_symbols,
    learn_bpe,
    pretokenize,
    train_bpe,
)

TIES = "aaaa aaa aa a\n!!!! ... ----\n   x  y \n\n\nab ba ab ba\n" * 5
UNICODE = "Café — naïve über 2023 __init__ x_y ✓ 'S it's I'll we've\n" * 3


def hf_merges(text, num_merges):
    return train_bpe(text, vocab_size=256 + num_merges).merges()


@pytest.mark.parametrize("text, num_merges", [(TIES, 25), (UNICODE, 40)])
def test_same_merges_as_tokenizers_on_small_texts(text, num_merges):
    ours = [(m.left, m.right) for m in learn_bpe(text, num_merges)]
    assert ours == hf_merges(text, num_merges)[: len(ours)]
    assert len(ours) > 10


def test_same_merges_and_tokens_as_tokenizers_on_shakespeare():
    text = load_shakespeare("val")[:20_000]
    merges = learn_bpe(text, 150)
    hf = train_bpe(text, vocab_size=256 + 150)
    assert [(m.left, m.right) for m in merges] == hf.merges()
    assert all(a.count >= b.count for a, b in itertools.pairwise(merges))  # most frequent first
    other = load_shakespeare("test")[:5_000]  # text the merges never saw
    ours = [t for piece in pretokenize(other) for t in apply_merges(piece, merges)]
    assert ours == [hf.id_to_token(i) for i in hf.encode(other)]


def test_merge_counts_by_hand():
    # pieces "low", " lower", " lowest": (l o) 3 times and (o w) 3 times, a tie that goes to
    # the symbols first in the vocabulary; then (lo w) 3, (Ġ low) 2, (Ġlow e) 2
    merges = learn_bpe("low lower lowest", 4)
    assert [tuple(m) for m in merges] == [("l", "o", 3), ("lo", "w", 3), ("Ġ", "low", 2), ("Ġlow", "e", 2)]
    assert apply_merges(" lowest", merges[:3]) == ["Ġlow", "e", "s", "t"]
    assert apply_merges(" lowest", merges) == ["Ġlowe", "s", "t"]


def test_no_merge_crosses_a_piece_boundary():
    text = "of the state of the king of the realm\n" * 30
    merges = learn_bpe(text, 60)
    space = byte_symbols()[ord(" ")]
    for m in merges:
        token = m.left + m.right
        # a space may only open a token (" the"), or the token is all spaces
        assert space not in token[1:] or set(token) == {space}, token
    assert "Ġof" + "Ġthe" not in {m.left + m.right for m in merges}


def test_pretokenize_matches_tokenizers_byte_level_on_ascii():
    text = load_shakespeare("val")[:3_000] + "It's 1623, isn't it?  I'll say  _x_ -- \n\n end"
    symbols = byte_symbols()
    ours = ["".join(symbols[b] for b in piece.encode()) for piece in pretokenize(text)]
    hf = pre_tokenizers.ByteLevel(add_prefix_space=False)
    theirs = [p for line in text.splitlines(keepends=True) for p, _ in hf.pre_tokenize_str(line)]
    assert ours == theirs
    assert "".join(pretokenize(text)) == text


def test_byte_symbols_are_tokenizers_alphabet():
    table = byte_symbols()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"


def test_bad_input():
    with pytest.raises(ValueError, match="non-empty str"):
        learn_bpe("", 3)
    with pytest.raises(ValueError, match="non-empty str"):
        learn_bpe(b"abc", 3)
    with pytest.raises(ValueError, match="num_merges"):
        learn_bpe("abc", -1)
    with pytest.raises(TypeError, match="piece must be a str"):
        apply_merges(3, [])
    with pytest.raises(TypeError, match="text must be a str"):
        pretokenize(None)
    assert learn_bpe("a", 5) == []  # no pair left: stops early
