"""Copying from the context: what attention can do that counting cannot.

A held-out play brings names no training play contains (MACBETH, PROSPERO,
ANTIPHOLUS). No n-gram can predict such a word the first time, nor the tenth: its
counts come from the training text. A transformer can do better the second time,
if the first occurrence is still inside its context: an *induction head*
(Elhage et al., 2021, "A Mathematical Framework for Transformer Circuits"; Olsson
et al., 2022, "In-context Learning and Induction Heads") attends from the current
token to the token that *followed* an earlier occurrence of it, and copies that.

:func:`new_word_occurrences` finds, in order, every occurrence of a word that the
training text never contains, with its rank within its play (1 for the first
time, 2 for the second, ...) and the distance back to the previous occurrence;
:func:`occurrence_losses` splits a model's per-character loss
(:func:`lmcourse.train.stream_token_nll`) into first and later occurrences, and
into later occurrences inside and beyond a given context length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a word unseen in training, at ``text[start:end]``."""

    word: str  # lower-cased
    start: int  # character offset in the scored text
    end: int
    rank: int  # 1 for the word's first occurrence in its play, 2 for the second, ...
    gap: int | None  # characters back to the start of the previous occurrence (None for rank 1)


def known_words(text: str) -> set[str]:
    """The lower-cased words of ``text`` (as :data:`WORD` splits them)."""
    return {m.group().lower() for m in WORD.finditer(text)}


def new_word_occurrences(plays: list[str], known: set[str]) -> list[Occurrence]:
    """Every occurrence of a word not in ``known``, in the concatenation of ``plays``.

    Ranks and gaps are counted within each play (the validation stream is the
    plays one after another, so offsets run across them).

    >>> occ = new_word_occurrences(["A: Zed met Zed.\\n"], known={"a", "met"})
    >>> [(o.word, o.start, o.rank, o.gap) for o in occ]
    [('zed', 3, 1, None), ('zed', 11, 2, 8)]
    """
    out: list[Occurrence] = []
    offset = 0
    for play in plays:
        last: dict[str, tuple[int, int]] = {}  # word: (rank so far, start of the last occurrence)
        for m in WORD.finditer(play):
            word = m.group().lower()
            if word in known:
                continue
            rank, prev = last.get(word, (0, None))
            start = offset + m.start()
            out.append(Occurrence(word, start, offset + m.end(), rank + 1, None if prev is None else start - prev))
            last[word] = (rank + 1, start)
        offset += len(play)
    return out


def occurrence_losses(nll: torch.Tensor, occurrences: list[Occurrence], context_length: int) -> dict[str, dict]:
    """Mean loss (nats per character) over the characters of each kind of occurrence.

    ``nll[i]`` is the loss of character ``i + 1`` of the text (as
    :func:`lmcourse.train.stream_token_nll` returns it). The first character of a
    word is left out: before it, nothing says which word comes, so even a perfect
    copier must guess it. Kinds: ``first`` (rank 1), ``later`` (rank >= 2),
    ``later_within`` (the previous occurrence starts at most ``context_length``
    characters back, so a model with that context can see it) and
    ``later_beyond``. Each maps to ``{"nats", "chars", "words"}``.
    """
    groups: dict[str, list[torch.Tensor]] = {"first": [], "later": [], "later_within": [], "later_beyond": []}
    for o in occurrences:
        if o.end - o.start < 2 or o.start < 1:
            continue
        chars = nll[o.start:o.end - 1]  # losses of characters start+1 .. end-1 (nll[i] scores i + 1)
        if o.rank == 1:
            groups["first"].append(chars)
        else:
            groups["later"].append(chars)
            within = o.gap is not None and o.gap <= context_length
            groups["later_within" if within else "later_beyond"].append(chars)
    return {kind: {"nats": torch.cat(parts).mean().item() if parts else float("nan"),
                   "chars": int(sum(len(p) for p in parts)), "words": len(parts)}
            for kind, parts in groups.items()}


def repeated_random(ids: Sequence[int], length: int, generator: torch.Generator) -> torch.Tensor:
    """``length`` ids drawn uniformly from ``ids``, then the same ``length`` ids again: ``(2 * length,)``.

    The second half can only be predicted by copying from the first: the
    standard probe for induction heads (Olsson et al., 2022).

    >>> x = repeated_random([3, 4, 5], 4, torch.Generator().manual_seed(0))
    >>> x.shape, bool((x[:4] == x[4:]).all())
    (torch.Size([8]), True)
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    pool = torch.as_tensor(list(ids), dtype=torch.long)
    if pool.ndim != 1 or len(pool) < 2:
        raise ValueError("ids must hold at least two token ids to draw from")
    half = pool[torch.randint(len(pool), (length,), generator=generator)]
    return torch.cat([half, half])


@torch.no_grad()
def repeat_losses(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Mean loss (nats per token) of a repeated sequence ``x`` (``(B, 2L)``) on its first and second half.

    Targets are positions ``1 .. L - 1`` (first half, the first token has no
    context) and ``L + 1 .. 2L - 1`` (second half, leaving out its first token,
    which nothing in the context announces).
    """
    if x.ndim != 2 or x.shape[1] % 2 or x.shape[1] < 4:
        raise ValueError(f"x must be (B, 2L) with L >= 2, got shape {tuple(x.shape)}")
    half = x.shape[1] // 2
    logits = model(x[:, :-1])
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (B, 2L-1)
    return nll[:, :half - 1].mean().item(), nll[:, half:].mean().item()


@torch.no_grad()
def induction_scores(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(layers, heads)``: each head's mean attention from position ``t`` of the second half of ``x``
    to position ``t - L + 1``, the token after the previous occurrence of ``x[t]``.

    ``x`` is ``(B, 2L)`` with its two halves equal (:func:`repeated_random`); a
    perfect induction head scores 1, a head attending uniformly about ``1 / t``.
    The model needs an ``attention_maps(ids)`` method (:class:`lmcourse.transformer.GPT`).
    """
    if x.ndim != 2 or x.shape[1] % 2 or not bool((x[:, : x.shape[1] // 2] == x[:, x.shape[1] // 2:]).all()):
        raise ValueError("x must be (B, 2L) with its two halves equal (see repeated_random)")
    half = x.shape[1] // 2
    t = torch.arange(half, 2 * half)
    scores = [w[:, :, t, t - half + 1].mean(dim=(0, 2)) for w in model.attention_maps(x)]  # each (H,)
    return torch.stack(scores)
