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

Texts of different lengths need an *end-of-text* event: with a token ``eot`` that
both starts and ends every text (GPT-2's ``<|endoftext|>``), the probabilities of
all texts of all lengths sum to 1 (:func:`length_distribution`); without it they
sum to 1 *per length*, and so to infinity over all lengths.

Why the negative log-likelihood is the right score: for the true distribution
``p`` and a model ``q``, cross-entropy = entropy + KL divergence,
``H(p, q) = H(p) + KL(p || q)`` (:func:`cross_entropy`, :func:`entropy`,
:func:`kl_divergence`), and the KL term is >= 0 with equality only at ``q = p``.
"""

from __future__ import annotations

import math

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


def bigram_counts(ids, vocab_size: int) -> torch.Tensor:
    """``(V, V)`` int64 table ``C[prev, next]``: how often ``next`` followed ``prev`` in ``ids``.

    >>> bigram_counts([0, 1, 0, 1], vocab_size=2).tolist()
    [[0, 2], [1, 0]]
    """
    t = _checked(ids, vocab_size)
    pair = t[:-1] * vocab_size + t[1:]  # one integer per (prev, next) pair
    return torch.bincount(pair, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)


def bigram_probs(ids, vocab_size: int, k: float = 1.0) -> torch.Tensor:
    """``(V, V)`` table ``P[prev, next]`` counted on ``ids``, add-``k`` smoothed.

    Each row is a distribution over the next token: ``(count(prev, next) + k) /
    (count(prev) + k V)``. With ``k = 0`` (maximum likelihood) a row never seen has
    no distribution, so ``k > 0`` is required (divide :func:`bigram_counts` by its
    row sums for the maximum-likelihood table).

    >>> bigram_probs([0, 1, 0, 1], vocab_size=2, k=1.0).tolist()
    [[0.25, 0.75], [0.6666666666666666, 0.3333333333333333]]
    """
    if k <= 0:
        raise ValueError(f"k must be > 0 so that every row is a distribution, got {k}")
    counts = bigram_counts(ids, vocab_size).double() + k
    return counts / counts.sum(dim=1, keepdim=True)


def sample(probs: torch.Tensor, first: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Generate ``length`` tokens after the token ``first`` by drawing each from the model.

    ``probs`` is a ``(V,)`` table (every draw the same distribution) or a ``(V, V)``
    bigram table (each draw from the row of the token before it): the chain rule run
    forwards. Returns the drawn tokens, shape ``(length,)``.

    >>> sample(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), first=0, length=4).tolist()
    [1, 0, 1, 0]
    """
    if not isinstance(probs, torch.Tensor) or probs.dim() not in (1, 2):
        raise ValueError("probs must be a (V,) or (V, V) tensor of probabilities")
    V = probs.shape[-1]
    if probs.dim() == 2 and probs.shape[0] != V:
        raise ValueError(f"probs must be (V,) or (V, V), got {tuple(probs.shape)}")
    if not isinstance(first, int) or not 0 <= first < V:
        raise ValueError(f"first must be a token id in 0 .. {V - 1}, got {first!r}")
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be an integer >= 0, got {length!r}")
    if probs.dim() == 1:  # no context: all draws at once
        return torch.multinomial(probs.double(), length, replacement=True, generator=generator)
    out, prev = torch.empty(length, dtype=torch.long), first
    for t in range(length):
        prev = int(torch.multinomial(probs[prev].double(), 1, generator=generator))
        out[t] = prev
    return out


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


def length_distribution(probs: torch.Tensor, eot: int, max_length: int) -> torch.Tensor:
    """``P(length = L)`` for ``L = 0 .. max_length`` when ``eot`` starts and ends every text.

    A text of length ``L`` is ``L`` tokens other than ``eot`` followed by ``eot``,
    generated after the context ``eot``. Its probability is the chain rule's
    product, end included; summing over all ``(V - 1)**L`` texts of each length
    is a forward recursion in float64: ``alpha`` holds the probability of every
    unfinished prefix of length ``L`` by its last token,
    ``alpha_{L+1}[w] = sum_v alpha_L[v] P(w | v)`` over ``v != eot``, and the text
    ends at length ``L`` with probability ``sum_v alpha_L[v] P(eot | v)``.
    ``probs`` is a ``(V,)`` table (every step the same: a geometric length) or a
    ``(V, V)`` bigram table. The result sums to 1 as ``max_length`` grows whenever
    every token can reach ``eot``.

    >>> length_distribution(torch.tensor([0.5, 0.5]), eot=0, max_length=3).tolist()
    [0.5, 0.25, 0.125, 0.0625]
    """
    if not isinstance(probs, torch.Tensor) or probs.dim() not in (1, 2):
        raise ValueError("probs must be a (V,) or (V, V) tensor of probabilities")
    V = probs.shape[-1]
    if probs.dim() == 2 and probs.shape[0] != V:
        raise ValueError(f"probs must be (V,) or (V, V), got {tuple(probs.shape)}")
    if not isinstance(eot, int) or not 0 <= eot < V:
        raise ValueError(f"eot must be a token id in 0 .. {V - 1}, got {eot!r}")
    if not isinstance(max_length, int) or max_length < 0:
        raise ValueError(f"max_length must be an integer >= 0, got {max_length!r}")
    P = probs.double()
    table = P.expand(V, V) if P.dim() == 1 else P  # (V, V) [previous, next]
    keep = torch.ones(V, dtype=torch.bool)
    keep[eot] = False  # the tokens a text can continue with
    alpha = table[eot].clone()  # (V,) P(first token | start)
    out = torch.empty(max_length + 1, dtype=torch.float64)
    for L in range(max_length + 1):
        out[L] = alpha[eot]  # the text stops here: L tokens, then eot
        alpha = alpha[keep] @ table[keep]  # (V,) sum over the unfinished prefixes
    return out


def entropy(p: torch.Tensor) -> float:
    """``H(p) = -sum_x p(x) ln p(x)`` in nats, in float64 (``0 ln 0 = 0``).

    >>> round(entropy(torch.tensor([0.5, 0.5])) / math.log(2), 12)
    1.0
    """
    p = _distribution(p, "p")
    return float(-torch.special.xlogy(p, p).sum())


def cross_entropy(p: torch.Tensor, q: torch.Tensor) -> float:
    """``H(p, q) = -sum_x p(x) ln q(x)`` in nats, in float64; ``inf`` if ``q`` misses ``p``'s support.

    The negative log-likelihood of a long sample of ``p`` under ``q`` tends to this.
    """
    p, q = _distribution(p, "p"), _distribution(q, "q", like=p)
    return float(-torch.special.xlogy(p, q).sum())


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """``KL(p || q) = sum_x p(x) ln(p(x) / q(x))`` in nats, in float64; ``>= 0``, 0 only at ``q = p``."""
    p, q = _distribution(p, "p"), _distribution(q, "q", like=p)
    if ((q == 0) & (p > 0)).any():
        return math.inf
    return float((torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum())


def _distribution(p, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """``p`` as a 1-D float64 tensor, checked to be a probability distribution."""
    if not isinstance(p, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(p).__name__}")
    t = p.double()
    if t.dim() != 1 or len(t) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(p.shape)}")
    if like is not None and t.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)} but p has {tuple(like.shape)}")
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"{name} must hold finite probabilities >= 0")
    if abs(float(t.sum()) - 1.0) > 1e-6:  # float32 input rounds its sum by ~1e-7
        raise ValueError(f"{name} must sum to 1, sums to {float(t.sum())!r}")
    return t


def _checked(ids, vocab_size: int) -> torch.Tensor:
    """``ids`` as a 1-D long tensor, every id checked to lie in ``0 .. vocab_size - 1``."""
    t = as_tensor(ids)
    check_ids(t, vocab_size)
    return t
