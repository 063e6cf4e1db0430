"""The one yardstick of the course: negative log-likelihood and what it turns into.

For a model q and held-out tokens x_1..x_N,

    NLL = -(1/N) * sum_t ln q(x_t | x_<t)          (nats per token)
    perplexity = exp(NLL)                            (an "effective branching factor")
    bits per character = NLL * (tokens / characters) / ln 2

Perplexity depends on the tokenization (a BPE token carries more text than a
character), so models with different tokenizers are compared in bits per
character: convert nats per *token* to bits per *character* with the number of
characters each token covers on average.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import check_ids

LN2 = math.log(2.0)


def perplexity(nll: float) -> float:
    """Perplexity from a mean negative log-likelihood in nats: ``exp(nll)``.

    An infinite NLL (a model that gave a seen token probability 0) gives ``inf``.

    >>> round(perplexity(math.log(65)), 9)
    65.0
    """
    nll = float(nll)
    if math.isnan(nll):
        raise ValueError("the mean negative log-likelihood is NaN")
    return math.inf if nll > 709.0 else math.exp(nll)


def bits_per_char(nats_per_token: float, chars_per_token: float = 1.0) -> float:
    """Bits per character from nats per token.

    ``chars_per_token`` is the average number of characters one token covers
    (1 for a character tokenizer; ``len(text) / len(ids)`` for BPE).

    >>> round(bits_per_char(math.log(2)), 6)
    1.0
    >>> round(bits_per_char(2 * math.log(2), chars_per_token=2.0), 6)
    1.0
    """
    if chars_per_token <= 0:
        raise ValueError(f"chars_per_token must be positive, got {chars_per_token}")
    return float(nats_per_token) / chars_per_token / LN2


def mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood (nats per token) of ``targets`` under ``logits``.

    ``logits`` is ``(..., V)`` and ``targets`` the matching ``(...)`` ids. The same
    number as ``F.cross_entropy``: cross-entropy *is* the mean NLL.

    Targets on the CPU are checked against ``V`` (:func:`lmcourse.data.check_ids`);
    on a GPU the check would cost a synchronisation every training step, so there
    an out-of-range id is left to ``F.cross_entropy``.

    >>> mean_nll(torch.zeros(1, 2, 3), torch.tensor([[0, 2]]))  # uniform over 3: ln 3
    tensor(1.0986)
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not match: "
            "expected logits (..., V) for targets (...)"
        )
    if targets.device.type == "cpu":
        check_ids(targets, logits.shape[-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
