"""Name augmentation: training plays with their characters renamed, so that copying pays.

A held-out play brings names no training play has (PROSPERO, ANTIPHOLUS). A model
trained on the plays as they are can *memorise* every training name: whenever
MACBETH speaks, the weights already know the name, and nothing rewards looking
back in the context to copy it. Renaming the characters of each training play
consistently, with a new draw of names for every copy of the training text, takes
that shortcut away: after ``ZORVANO:`` has appeared once in a window, the cheapest
way to predict it the second time is to copy it from the context. That is what a
held-out play needs.

:func:`play_names` finds a play's character names (the words of its speaker
headings that the training text does not use in lower case, so SERVANT, KING,
FIRST stay); :func:`rename` replaces every occurrence of each (in headings and
in the verse, keeping upper or title case); :func:`renamed_training_text` is the
training text followed by ``copies`` renamed copies of it.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from .data import load_play, split_plays

_HEADING = re.compile(r"^([A-Z][A-Z' .,-]*):\n", re.M)  # a speaker heading: upper case
_CAPITAL_WORD = re.compile(r"\b[A-Z][A-Za-z]+\b")
_ROMAN = re.compile(r"^[IVXLC]+$")
_ONSETS = ["b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "br", "cl", "dr", "gr", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "io", "ia", "e"]


def lower_case_counts(text: str) -> Counter:
    """How often each word occurs written in lower case (``king``, not ``King``)."""
    return Counter(re.findall(r"\b[a-z]+\b", text))


def play_names(play: str, lower: Counter, min_length: int = 3) -> list[str]:
    """The character names in ``play``'s speaker headings, upper case, in order of first use.

    A heading word counts as a name when it is at least ``min_length`` letters, not a
    Roman numeral, and ``lower`` (lower-case counts of the training text) has it
    fewer than 3 times: MACBETH is a name, KING and SERVANT are roles.

    >>> play_names("MACBETH:\\nHail.\\n\\nFIRST WITCH:\\nHail!\\n\\n", Counter({"first": 9, "witch": 5}))
    ['MACBETH']
    """
    names: list[str] = []
    for heading in _HEADING.findall(play):
        for word in heading.split():
            word = word.strip("'.,")
            if (len(word) >= min_length and word.isalpha() and not _ROMAN.match(word)
                    and lower[word.lower()] < 3 and word not in names):
                names.append(word)
    return names


def invented_name(rng: random.Random) -> str:
    """A pronounceable invented name of 2 to 4 syllables, upper case (``BRALIO``)."""
    syllables = rng.randint(2, 4)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)).upper()


def rename(play: str, mapping: dict[str, str]) -> str:
    """``play`` with each name in ``mapping`` (upper case) replaced, keeping its case.

    >>> rename("MACBETH:\\nSo, Macbeth's wife.\\n", {"MACBETH": "DORIO"})
    "DORIO:\\nSo, Dorio's wife.\\n"
    """
    if not mapping:
        return play
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, mapping), key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)

    def swap(m: re.Match) -> str:
        word, new = m.group(0), mapping[m.group(0).upper()]
        if word.isupper():
            return new.upper()
        if word[0].isupper():
            return new.capitalize()
        return new.lower()

    return pattern.sub(swap, play)


def renamed_training_text(copies: int, seed: int = 0, invented: float = 0.5) -> str:
    """The training plays, then ``copies`` more copies of them with every play's characters renamed.

    Each copy draws new names for every play: with probability ``invented`` an
    invented name (:func:`invented_name`), otherwise a name from another training
    play, so renamed text still looks like Shakespeare's.
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    plays = [load_play(p) for p in split_plays("train")]
    text = "".join(plays)
    lower = lower_case_counts(text)
    names = [play_names(p, lower) for p in plays]
    pool = sorted({n for ns in names for n in ns})
    rng = random.Random(seed)
    out = [text]
    for _ in range(copies):
        for play, own in zip(plays, names, strict=True):
            mapping: dict[str, str] = {}
            used = set(own)
            for name in own:
                new = invented_name(rng) if rng.random() < invented else rng.choice(pool)
                while new in used:
                    new = invented_name(rng)
                used.add(new)
                mapping[name] = new
            out.append(rename(play, mapping))
    return "".join(out)
