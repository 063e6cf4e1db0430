"""Tokenizers: text to integer ids and back.

Two tokenizers share one small interface (``encode``, ``decode``, ``vocab_size``,
``save``, ``token_to_id``):

* :class:`CharTokenizer`: one id per character. Tiny vocabulary, long sequences.
* :class:`BPETokenizer`: byte-level byte-pair encoding (Sennrich et al., 2016; the
  GPT-2 variant), trained with the Hugging Face ``tokenizers`` library by
  :func:`train_bpe`. Larger vocabulary, fewer tokens per character, and no
  character is ever out of vocabulary because the base alphabet is the 256 bytes.

Both accept optional *special tokens* such as ``"[MASK]"`` (chapter 10): strings
that are never split and always map to one reserved id.

:func:`learn_bpe` is the merge loop of BPE (Gage, 1994, for compression;
Sennrich et al., 2016, for subword units) written out in plain Python, for
reading: it learns the same merges, in the same order, as :func:`train_bpe`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Iterable, NamedTuple, Protocol, Sequence

from .data import load_shakespeare


class Tokenizer(Protocol):
    """What every course tokenizer offers."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def token_to_id(self, token: str) -> int: ...

    def save(self, path: str | Path) -> None: ...


def _check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{vocab_size - 1})")
    return out


class CharTokenizer:
    """One token per character, plus optional special tokens.

    Special tokens take the first ids, then the characters in sorted order.

    >>> tok = CharTokenizer("hello world")
    >>> tok.vocab_size
    8
    >>> tok.encode("hello")
    [3, 2, 4, 4, 5]
    >>> tok.decode([3, 2, 4, 4, 5])
    'hello'
    """

    kind = "char"

    def __init__(
        self,
        text: str | None = None,
        *,
        vocab: Iterable[str] | None = None,
        special_tokens: Sequence[str] = (),
    ) -> None:
        if (text is None) == (vocab is None):
            raise ValueError("give exactly one of `text` (to build the vocabulary) or `vocab`")
        chars = sorted(set(text)) if text is not None else list(vocab)  # type: ignore[arg-type]
        specials = list(dict.fromkeys(special_tokens))
        for s in specials:
            if len(s) < 2:
                raise ValueError(f"special token {s!r} must be at least two characters long")
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary lists a character twice")
        self.special_tokens: list[str] = specials
        self.itos: list[str] = specials + chars
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        self.vocab_size = len(self.itos)
        self._split = (
            re.compile("(" + "|".join(re.escape(s) for s in specials) + ")") if specials else None
        )

    def _encode_plain(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            ch = err.args[0]
            pos = text.index(ch)
            raise ValueError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {pos} is not in the "
                f"vocabulary of {self.vocab_size} tokens"
            ) from None

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (special tokens kept whole)."""
        if self._split is None:
            return self._encode_plain(text)
        ids: list[int] = []
        for piece in self._split.split(text):
            if piece in self.stoi and piece in self.special_tokens:
                ids.append(self.stoi[piece])
            elif piece:
                ids.extend(self._encode_plain(piece))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of a list of ids."""
        return "".join(self.itos[i] for i in _check_ids(ids, self.vocab_size))

    def token_to_id(self, token: str) -> int:
        """The id of one token (a character or a special token)."""
        if token not in self.stoi:
            raise ValueError(f"{token!r} is not a token of this vocabulary")
        return self.stoi[token]

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON; :func:`load_tokenizer` reads it back."""
        chars = self.itos[len(self.special_tokens) :]
        data = {"kind": self.kind, "special_tokens": self.special_tokens, "chars": chars}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        data = _read_json(path, cls.kind)
        return cls(vocab=data["chars"], special_tokens=data["special_tokens"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class BPETokenizer:
    """A byte-level BPE tokenizer (wraps a ``tokenizers.Tokenizer``).

    Build one with :func:`train_bpe`; load a saved one with :func:`load_tokenizer`.
    """

    kind = "bpe"

    def __init__(self, tokenizer) -> None:  # a tokenizers.Tokenizer
        self._tok = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size()
        self.special_tokens: list[str] = [
            t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special
        ]

    def encode(self, text: str) -> list[int]:
        """Ids of the BPE tokens of ``text``."""
        return self._tok.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of a list of ids (special tokens included)."""
        return self._tok.decode(_check_ids(ids, self.vocab_size), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int:
        """The id of one token string (for example a special token)."""
        i = self._tok.token_to_id(token)
        if i is None:
            raise ValueError(f"{token!r} is not a token of this vocabulary")
        return i

    def id_to_token(self, i: int) -> str:
        """The token string of one id, as the byte-level vocabulary stores it (space = 'Ġ')."""
        return self._tok.id_to_token(_check_ids([i], self.vocab_size)[0])

    def merges(self) -> list[tuple[str, str]]:
        """The learned merges in the order they were learned (byte-level symbols, space = 'Ġ')."""
        return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)  # type: ignore[misc]
                for m in json.loads(self._tok.to_str())["model"]["merges"]]

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON; :func:`load_tokenizer` reads it back."""
        data = {"kind": self.kind, "tokenizer": json.loads(self._tok.to_str())}
        Path(path).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        data = _read_json(path, cls.kind)
        return cls(HFTokenizer.from_str(json.dumps(data["tokenizer"])))

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def train_bpe(text: str, vocab_size: int, special_tokens: Sequence[str] = ()) -> BPETokenizer:
    """Train a byte-level BPE tokenizer on ``text`` with the ``tokenizers`` library.

    The vocabulary starts from the 256 byte symbols plus ``special_tokens`` and
    grows by merges until it holds ``vocab_size`` tokens (or no pair is left).

    >>> tok = train_bpe("to be or not to be " * 50, vocab_size=270)
    >>> tok.decode(tok.encode("to be, or not"))
    'to be, or not'
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    base = 256 + len(set(special_tokens))
    if vocab_size < base:
        raise ValueError(
            f"vocab_size must be at least {base} (256 bytes + {base - 256} special tokens), "
            f"got {vocab_size}"
        )
    if not text:
        raise ValueError("cannot train a tokenizer on empty text")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(dict.fromkeys(special_tokens)),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Feed lines rather than one huge string: the pre-tokenizer splits on spaces anyway.
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return BPETokenizer(tok)


# GPT-2's pre-tokenizer (the pattern `tokenizers`' ByteLevel uses), in Python's `re`:
# contractions, letters, digits, other symbols, each with at most one leading space,
# then runs of whitespace. `[^\W\d_]` is a letter and `\d` a digit; for ASCII text
# this is exactly GPT-2's `\p{L}` and `\p{N}`.
PRETOKENIZER = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def byte_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in for each of the 256 bytes (so a space shows as 'Ġ').

    Printable bytes stand for themselves; the others (control bytes, space, ...)
    get the characters from U+0100 on, in byte order.

    >>> table = byte_symbols()
    >>> table[ord("a")], table[ord(" ")], table[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def pretokenize(text: str) -> list[str]:
    """Split ``text`` into the pieces BPE merges within, line by line as :func:`train_bpe` feeds it.

    >>> pretokenize("To be, or not")
    ['To', ' be', ',', ' or', ' not']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return [piece for line in text.splitlines(keepends=True) for piece in PRETOKENIZER.findall(line)]


class Merge(NamedTuple):
    """One BPE merge: ``left + right`` becomes a token; ``count`` is how often the pair occurred."""

    left: str
    right: str
    count: int


def learn_bpe(text: str, num_merges: int) -> list[Merge]:
    """Learn ``num_merges`` byte-level BPE merges from ``text``: the merge loop, written out.

    1. Pre-tokenize (:func:`pretokenize`) and count each distinct piece; a piece
       is a tuple of byte symbols (:func:`byte_symbols`).
    2. Count every adjacent pair of symbols, weighted by the piece's count.
    3. Merge the most frequent pair everywhere (left to right) into one symbol;
       ties go to the pair whose symbols entered the vocabulary first (the 256
       bytes in the order of their symbols, then merges in order), as in
       ``tokenizers``.
    4. Repeat from 2 until ``num_merges`` merges are learned or no pair is left.

    Pairs are counted within pieces only, so no merge crosses a piece boundary:
    a token never holds the end of one word and the start of the next.

    >>> [m[:2] for m in learn_bpe("low lower lowest", 2)]
    [('l', 'o'), ('lo', 'w')]
    """
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty str")
    if not isinstance(num_merges, int) or num_merges < 0:
        raise ValueError(f"num_merges must be an integer >= 0, got {num_merges!r}")
    table = byte_symbols()
    rank = {sym: i for i, sym in enumerate(sorted(table.values()))}  # tie-break order
    words = Counter(tuple(table[b] for b in piece.encode("utf-8")) for piece in pretokenize(text))
    merges: list[Merge] = []
    while len(merges) < num_merges:
        pairs: Counter = Counter()
        for word, count in words.items():
            for pair in pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], rank[p[0]], rank[p[1]]))
        merges.append(Merge(best[0], best[1], pairs[best]))
        rank.setdefault(best[0] + best[1], len(rank))
        words = Counter({_merge_pair(word, best): count for word, count in words.items()})
    return merges


def apply_merges(piece: str, merges: Sequence[tuple[str, str]] | Sequence[Merge]) -> list[str]:
    """The byte-level BPE tokens of one pre-tokenized ``piece``: apply the merges in learned order.

    >>> apply_merges(" lowest", learn_bpe("low lower lowest", 3))
    ['Ġlow', 'e', 's', 't']
    """
    if not isinstance(piece, str):
        raise TypeError(f"piece must be a str, got {type(piece).__name__}")
    table = byte_symbols()
    word = tuple(table[b] for b in piece.encode("utf-8"))
    for m in merges:
        word = _merge_pair(word, (m[0], m[1]))
    return list(word)


def _merge_pair(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """``word`` with every occurrence of ``pair`` joined into one symbol, scanning left to right."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _read_json(path: str | Path, kind: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no tokenizer file at {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not a tokenizer file (invalid JSON: {err})") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{p} holds a tokenizer of kind {found!r}, expected {kind!r}")
    return data


def load_tokenizer(path: str | Path) -> CharTokenizer | BPETokenizer:
    """Load a tokenizer saved by ``.save(path)``, whichever kind it is."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no tokenizer file at {p}")
    try:
        kind = json.loads(p.read_text(encoding="utf-8")).get("kind")
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{p} is not a tokenizer file") from None
    classes = {"char": CharTokenizer, "bpe": BPETokenizer}
    if kind not in classes:
        raise ValueError(f"{p} holds an unknown tokenizer kind {kind!r}")
    return classes[kind].load(p)


def shakespeare_char_tokenizer(special_tokens: Sequence[str] = ()) -> CharTokenizer:
    """The course's character tokenizer: every character of the whole corpus.

    The alphabet is taken from all plays (train, validation and test) so that a
    rare character in a held-out play (a digit, a ``$``) is never out of
    vocabulary; this reveals nothing a model could learn from.
    """
    return CharTokenizer(load_shakespeare(), special_tokens=special_tokens)
