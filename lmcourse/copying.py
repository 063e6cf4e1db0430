"""Copying from the context: what a cache of counts does, and what attention does.

A held-out play brings names no training play contains (MACBETH, PROSPERO,
ANTIPHOLUS). A *static* n-gram cannot predict such a word better the tenth time
than the first: its counts come from the training text. Two things can:

* a **cache** model (Kuhn & De Mori, 1990, "A cache-based natural language model
  for speech recognition"): counts collected from the recent text itself, mixed
  with the static model. :func:`cache_ngram_log_probs` keeps, for the longest
  context of a few characters seen in the last ``window`` characters, what
  followed it there;
* a transformer whose earlier occurrence is still inside its context: an
  *induction head* (Elhage et al., 2021, "A Mathematical Framework for
  Transformer Circuits"; Olsson et al., 2022, "In-context Learning and Induction
  Heads") attends from the current token to the token that *followed* an earlier
  occurrence of it, and copies that. :func:`ablate_heads` zeroes a head to test
  whether it does.

:func:`new_word_occurrences` finds, in order, every occurrence of a word that the
training text never contains, with its rank within its play (1 for the first
time, 2 for the second, ...) and the distance back to the previous occurrence;
:func:`occurrence_losses` splits a model's per-character loss
(:func:`lmcourse.train.stream_token_nll`) into first and later occurrences, and
into later occurrences inside and beyond a given context length;
:func:`grouped_losses` splits it by any key, such as :func:`occurrence_kind`
(a speaker heading or not) and :func:`gap_bin`.
"""

from __future__ import annotations

import copy
import re
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

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


def occurrence_kind(text: str, o: Occurrence) -> str:
    """``"heading"`` when the occurrence sits in a speaker heading (a line in capitals ending
    with ``:``, such as ``LADY MACBETH:``), else ``"other"`` (verse, prose, stage directions).

    >>> text = "MACBETH:\\nSo foul a day, Macbeth.\\n"
    >>> occ = new_word_occurrences([text], known=set())
    >>> [(o.word, occurrence_kind(text, o)) for o in occ][:2]
    [('macbeth', 'heading'), ('so', 'other')]
    """
    line_start = text.rfind("\n", 0, o.start) + 1
    line_end = text.find("\n", o.end)
    line = text[line_start:line_end if line_end != -1 else len(text)]
    return "heading" if line.endswith(":") and line.isupper() else "other"


def gap_bin(o: Occurrence, edges: Sequence[int] = (128, 512)) -> str:
    """``"first"`` for a first occurrence, else the bin of its gap: ``"<=128"``, ``"129-512"``, ``">512"``."""
    if o.rank == 1 or o.gap is None:
        return "first"
    lo = 0
    for edge in edges:
        if o.gap <= edge:
            return f"<={edge}" if lo == 0 else f"{lo + 1}-{edge}"
        lo = edge
    return f">{edges[-1]}"


def grouped_losses(nll: torch.Tensor, occurrences: Iterable[Occurrence],
                   key: Callable[[Occurrence], object]) -> dict[object, dict]:
    """Mean loss (nats per character) of the occurrences grouped by ``key(o)``: ``{key: {"nats", "chars", "words"}}``.

    As in :func:`occurrence_losses`, ``nll[i]`` scores character ``i + 1`` and
    each word's first character is left out.
    """
    groups: dict[object, list[torch.Tensor]] = {}
    for o in occurrences:
        if o.end - o.start < 2 or o.start < 1:
            continue
        groups.setdefault(key(o), []).append(nll[o.start:o.end - 1])
    return {k: {"nats": torch.cat(parts).double().mean().item(), "chars": int(sum(len(p) for p in parts)),
                "words": len(parts)} for k, parts in groups.items()}


def cache_ngram_log_probs(ids: Sequence[int], base_log_probs: torch.Tensor, window: int = 512,
                          orders: Sequence[int] = (6, 5, 4, 3), weight: float = 0.2) -> torch.Tensor:
    """Log-probabilities of ``ids[1:]`` under a static model mixed with a cache of recent counts: ``(N - 1,)``.

    ``base_log_probs[i]`` is the static model's log-probability of ``ids[i + 1]``
    (as :meth:`lmcourse.ngram.NGramLM.token_log_probs` returns it). For target
    position ``t`` the cache takes the longest context ``c = ids[t-k:t]``, ``k``
    in ``orders``, that occurs in the last ``window`` characters with its next
    character also there (occurrences ``ids[e-k:e] == c`` with ``t - window <= e - k``
    and ``e < t``) and counts what followed it:

        p(x_t) = (1 - weight) p_base(x_t) + weight * count(c, x_t) / count(c)

    and ``p_base(x_t)`` alone where no context matches (both are distributions over
    the vocabulary, so the mixture is one). The cache idea is Kuhn & De Mori's
    (1990), whose cache held recent words; matching the longest recent context is
    that of PPM (Cleary & Witten, 1984).

    >>> base = torch.full((3,), -torch.log(torch.tensor(3.0)).item())
    >>> lp = cache_ngram_log_probs([0, 1, 0, 1], base, window=8, orders=(1,), weight=0.5)
    >>> [round(p, 4) for p in lp.exp().tolist()]  # t=3: "0" was followed by "1" -> 0.5/3 + 0.5
    [0.3333, 0.3333, 0.6667]
    """
    ids = [int(i) for i in ids]
    n = len(ids)
    if base_log_probs.shape != (n - 1,):
        raise ValueError(f"base_log_probs must have shape ({n - 1},) for {n} ids, got {tuple(base_log_probs.shape)}")
    if not 0.0 <= weight <= 1.0 or window < 2 or not orders or min(orders) < 1:
        raise ValueError("need 0 <= weight <= 1, window >= 2 and orders of at least 1")
    orders = sorted(set(orders), reverse=True)
    # per order: context -> (deque of positions e whose context ends there, Counter of ids[e])
    index: dict[int, dict[tuple[int, ...], tuple[deque, Counter]]] = {k: {} for k in orders}
    p = base_log_probs.double().exp().clone()  # (N-1,)
    for t in range(1, n):
        for k in orders:
            if t - k < 0:
                continue
            entry = index[k].get(tuple(ids[t - k:t]))
            if entry is None:
                continue
            positions, counts = entry
            while positions and positions[0] - k < t - window:  # fell out of the window
                counts[ids[positions.popleft()]] -= 1
            if positions:
                p[t - 1] = (1 - weight) * p[t - 1] + weight * counts[ids[t]] / len(positions)
                break
        for k in orders:  # position t's continuation ids[t] is now known: add it
            if t - k >= 0:
                positions, counts = index[k].setdefault(tuple(ids[t - k:t]), (deque(), Counter()))
                positions.append(t)
                counts[ids[t]] += 1
    return p.log()


def ablate_heads(model: torch.nn.Module, heads: Iterable[tuple[int, int]]) -> torch.nn.Module:
    """A copy of a :class:`lmcourse.transformer.GPT` with the given ``(layer, head)`` s zeroed.

    Zeroing the columns of the attention's output projection that read head
    ``h`` removes that head's contribution to the residual stream, and nothing
    else (its attention is still computed, and thrown away).
    """
    out = copy.deepcopy(model)
    dh = out.config.d_model // out.config.n_heads
    with torch.no_grad():
        for layer, head in heads:
            if not (0 <= layer < out.config.n_layers and 0 <= head < out.config.n_heads):
                raise ValueError(f"no head {head} in layer {layer}")
            out.blocks[layer].attn.proj.weight[:, head * dh:(head + 1) * dh] = 0
    return out
