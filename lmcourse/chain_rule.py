"""The chain rule of probability, with the three simplest language models.

Any distribution over sequences factorises, with no assumption at all, as

    P(x_1, ..., x_T) = prod_t P(x_t | x_1, ..., x_{t-1})

so a language model only ever has to answer one question: given the tokens so
far, how likely is each possible next token? The models here answer it by
counting, and differ in how much of the past they look at:

* uniform: none, every token has probability 1/V;
* unigram: none, but tokens have their corpus frequency;
* bigram: the previous token only (add-k smoothed so no probability is zero).

Each model is a table of next-token probabilities: ``(V,)`` for the first two,
``(V, V)`` indexed ``[previous, next]`` for the bigram. Chapter 2 generalises to
n-grams with proper smoothing (:mod:`lmcourse.ngram`).
"""

from __future__ import annotations

import torch

from .data import as_tensor, check_ids


def uniform_probs(vocab_size: int) -> torch.Tensor:
    """``(V,)`` next-token probabilities of the uniform model: all ``1 / V``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return torch.full((vocab_size,), 1.0 / vocab_size, dtype=torch.float64)


def unigram_probs(ids, vocab_size: int, k: float = 0.0) -> torch.Tensor:
    """``(V,)`` token frequencies counted on ``ids``, add-``k`` smoothed.

    >>> unigram_probs([0, 0, 1], vocab_size=3).tolist()
    [0.6666666666666666, 0.3333333333333333, 0.0]
    """
    counts = torch.bincount(_checked(ids, vocab_size), minlength=vocab_size).double() + k
    return counts / counts.sum()


def bigram_probs(ids, vocab_size: int, k: float = 1.0) -> torch.Tensor:
    """``(V, V)`` table ``P[prev, next]`` counted on ``ids``, add-``k`` smoothed.

    Each row is a distribution over the next token: ``(count(prev, next) + k) /
    (count(prev) + k V)``. With ``k = 0`` a row never seen has no distribution, so
    ``k > 0`` is required.

    >>> bigram_probs([0, 1, 0, 1], vocab_size=2, k=1.0).tolist()
    [[0.25, 0.75], [0.6666666666666666, 0.3333333333333333]]
    """
    if k <= 0:
        raise ValueError(f"k must be > 0 so that every row is a distribution, got {k}")
    t = _checked(ids, vocab_size)
    pair = t[:-1] * vocab_size + t[1:]  # one integer per (prev, next) pair
    counts = torch.bincount(pair, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)
    counts = counts.double() + k
    return counts / counts.sum(dim=1, keepdim=True)


def token_log_probs(ids, probs: torch.Tensor) -> torch.Tensor:
    """``ln P(x_t | x_<t)`` for every token after the first, shape ``(T - 1,)``.

    ``probs`` is a ``(V,)`` table (a context-free model) or a ``(V, V)`` bigram
    table. The first token is the context that starts the sequence, so it is not
    scored; every model is scored on the same ``T - 1`` predictions.
    """
    t = as_tensor(ids)
    if len(t) < 2:
        raise ValueError("need at least two tokens: one for context, one to predict")
    V = probs.shape[-1]
    check_ids(t, V)
    if probs.dim() == 1:
        p = probs[t[1:]]
    elif probs.dim() == 2 and probs.shape[0] == V:
        p = probs[t[:-1], t[1:]]
    else:
        raise ValueError(f"probs must be (V,) or (V, V), got {tuple(probs.shape)}")
    return torch.log(p)


def sequence_log_prob(ids, probs: torch.Tensor) -> float:
    """``ln P(x_2..x_T | x_1)`` by the chain rule: the *sum* of the token log-probabilities."""
    return float(token_log_probs(ids, probs).sum())


def _checked(ids, vocab_size: int) -> torch.Tensor:
    """``ids`` as a 1-D long tensor, every id checked to lie in ``0 .. vocab_size - 1``."""
    t = as_tensor(ids)
    check_ids(t, vocab_size)
    return t
