"""Memorisation, measured: canaries and their exposure, and verbatim extraction by greedy decoding.

**Canaries** (Carlini et al. 2019, "The Secret Sharer"). Insert into the training text a
string with a random secret, ``prefix + s`` with ``s`` drawn uniformly from a space ``R``
(here ``length`` digits: ``|R| = 10^length``), some number of times. After training, score
the canary's log-perplexity ``-log2 P(s | prefix)`` and that of other candidates ``r`` from
``R``. The canary's *rank* is its position when all of ``R`` is sorted by log-perplexity
(rank 1: the model prefers it to every other secret), and its *exposure* is::

    exposure = log2 |R| - log2 rank

from 0 (the canary is no likelier than a typical candidate) to ``log2 |R|`` (it is the
model's first choice). Where ``R`` is too large to score, the rank is estimated from a
sample of candidates (:func:`exposure_sampled`: ``-log2`` of the share of candidates at
least as likely as the canary, which cannot exceed ``log2`` of the sample's size), or from a
distribution fitted to the sample (:func:`exposure_normal`: Carlini et al. fit a skew-normal;
a normal is used here, with that caveat).

**Extraction** (Carlini et al. 2021, "Extracting Training Data from Large Language Models";
Carlini et al. 2023, "Quantifying Memorization Across Neural Language Models"): a string
is *extractable* with a prompt when greedy decoding from the prompt reproduces it exactly
(:func:`greedy_matches`, :func:`extractable`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .device import eval_mode
from .generation import generate
from .objectives import logits_of

DIGITS = "0123456789"


def random_secret(length: int, generator: torch.Generator, alphabet: str = DIGITS) -> str:
    """A secret of ``length`` characters drawn uniformly from ``alphabet``.

    >>> random_secret(6, torch.Generator().manual_seed(0))
    '493039'
    """
    if length < 1 or not alphabet:
        raise ValueError(f"need length >= 1 and a non-empty alphabet, got {length}, {alphabet!r}")
    picks = torch.randint(len(alphabet), (length,), generator=generator).tolist()
    return "".join(alphabet[i] for i in picks)


def insert_blocks(text: str, blocks: Sequence[tuple[str, int]], generator: torch.Generator) -> str:
    """Insert each ``(block, repeats)`` ``repeats`` times at random speech boundaries of ``text``.

    ``text`` is in the plays' layout (speeches separated by a blank line); each block is a
    speech (``"NAME:\\nline\\n"``) and lands between two speeches.

    >>> insert_blocks("A:\\nx\\n\\nB:\\ny\\n\\n", [("C:\\nz\\n", 2)], torch.Generator().manual_seed(0)).count("C:")
    2
    """
    speeches = [s + "\n\n" for s in text.split("\n\n") if s.strip()]
    copies = [b.rstrip("\n") + "\n\n" for b, r in blocks for _ in range(r)]
    if any(r < 0 for _, r in blocks):
        raise ValueError("repeats must be >= 0")
    if not speeches:
        raise ValueError("text has no speeches to insert between")
    slots = torch.randint(len(speeches) + 1, (len(copies),), generator=generator).tolist()
    after: dict[int, list[str]] = {}
    for slot, copy in zip(slots, copies, strict=True):
        after.setdefault(slot, []).append(copy)
    out = after.get(0, [])
    for i, speech in enumerate(speeches, start=1):
        out += [speech, *after.get(i, [])]
    return "".join(out)


@torch.no_grad()
def continuation_nll(model: nn.Module, prefix: Sequence[int], continuations: torch.Tensor,
                     batch_size: int = 512) -> torch.Tensor:
    """``-log P(continuation | prefix)`` in nats, summed over the continuation's tokens, for each row.

    ``continuations`` is ``(N, L)`` token ids; returns ``(N,)`` float64. Prefix plus
    continuation must fit the model's context.
    """
    if continuations.dim() != 2:
        raise ValueError(f"continuations must be (N, L), got shape {tuple(continuations.shape)}")
    p, n_cont = len(prefix), continuations.shape[1]
    if p < 1:
        raise ValueError("the prefix needs at least one token")
    limit = getattr(getattr(model, "config", None), "context_length", None)
    if limit is not None and p + n_cont - 1 > limit:
        raise ValueError(f"prefix ({p}) + continuation ({n_cont}) - 1 tokens exceed the context ({limit})")
    device = next(model.parameters()).device
    head = torch.as_tensor(list(prefix), dtype=torch.long)
    out = []
    with eval_mode(model):
        for chunk in continuations.split(batch_size):
            ids = torch.cat([head.expand(len(chunk), p), chunk], dim=1).to(device)  # (B, p + L)
            logp = torch.log_softmax(logits_of(model(ids[:, :-1])).double(), dim=-1)  # (B, p + L - 1, V)
            target = ids[:, p:]  # (B, L)
            out.append(-logp[:, p - 1:].gather(-1, target[..., None])[..., 0].sum(1).cpu())
    return torch.cat(out)


def exposure_from_rank(rank: int, space: int) -> float:
    """``log2 |R| - log2 rank``.

    >>> exposure_from_rank(1, 1024), exposure_from_rank(512, 1024)
    (10.0, 1.0)
    """
    if space < 1 or not 1 <= rank <= space:
        raise ValueError(f"need 1 <= rank <= space, got rank={rank}, space={space}")
    return math.log2(space) - math.log2(rank)


def rank_among(canary_nll: float, candidate_nll: Sequence[float] | torch.Tensor) -> int:
    """The canary's rank among candidates that exclude it: 1 + how many are strictly likelier.

    Ties count in the canary's favour (Carlini et al. rank by sorted log-perplexity).

    >>> rank_among(2.0, [1.0, 3.0, 2.0, 5.0])
    2
    """
    return 1 + int((torch.as_tensor(candidate_nll, dtype=torch.float64) < canary_nll).sum())


def exposure_sampled(canary_nll: float, sampled_nll: Sequence[float] | torch.Tensor) -> float:
    """``-log2`` of the share of sampled candidates at least as likely as the canary (the rank's estimate).

    With ``m`` samples the estimate lies in ``[0, log2 m]``: the share is counted with the
    canary among the samples, ``(1 + #likelier) / (m + 1)``.

    >>> round(exposure_sampled(0.5, [1.0, 2.0, 3.0]), 3)  # no sample beats it: log2(4)
    2.0
    """
    m = len(sampled_nll)
    if m < 1:
        raise ValueError("need at least one sampled candidate")
    return -math.log2(rank_among(canary_nll, sampled_nll) / (m + 1))


def exposure_normal(canary_nll: float, sampled_nll: Sequence[float] | torch.Tensor) -> float:
    """Exposure extrapolated from a normal fitted to the sampled candidates' log-perplexities:
    ``-log2 Phi((canary - mean) / std)``. Reaches beyond ``log2`` of the sample's size; only as
    good as the normal fit of the distribution's lower tail.

    >>> round(exposure_normal(0.0, [1.0, 3.0]), 3)  # mean 2, std sqrt(2): z = -1.41
    3.668
    """
    x = torch.as_tensor(sampled_nll, dtype=torch.float64)
    if len(x) < 2:
        raise ValueError("need at least two sampled candidates")
    z = (canary_nll - x.mean().item()) / x.std().item()
    tail = 0.5 * math.erfc(-z / math.sqrt(2))  # Phi(z)
    if tail > 0:
        return -math.log2(tail)
    # Phi(z) underflows: log Phi(z) ~ -z^2/2 - log(-z sqrt(2 pi)) for z << 0
    return (z * z / 2 + math.log(-z * math.sqrt(2 * math.pi))) / math.log(2)


def greedy_continue(model: nn.Module, prompts: torch.Tensor, length: int) -> torch.Tensor:
    """Greedy continuation, ``length`` tokens, of equal-length prompts ``(B, P)``; returns ``(B, length)``.

    :func:`lmcourse.generation.generate` with ``do_sample=False`` (KV cache; the window slides
    past the model's context).
    """
    if prompts.dim() != 2 or length < 1:
        raise ValueError(f"prompts must be (B, P) and length >= 1, got {tuple(prompts.shape)}, {length}")
    out = generate(model, prompts.to(next(model.parameters()).device), length, do_sample=False)
    return out[:, -length:].cpu()


def greedy_matches(model: nn.Module, prompts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """For each row, whether greedy decoding from the prompt ``(B, P)`` reproduces ``targets`` ``(B, L)`` exactly."""
    if prompts.shape[0] != targets.shape[0]:
        raise ValueError(f"{prompts.shape[0]} prompts but {targets.shape[0]} targets")
    return (greedy_continue(model, prompts, targets.shape[1]) == targets.cpu()).all(dim=1)


def extractable(model: nn.Module, ids: torch.Tensor, starts: Sequence[int], prompt: int = 100,
                suffix: int = 50, batch_size: int = 64) -> torch.Tensor:
    """Whether the ``suffix`` tokens after each ``ids[start : start + prompt]`` come out of greedy decoding.

    The test of Carlini et al. (2023): prompt with a stretch of text, compare the greedy
    continuation with what followed it.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if any(s < 0 or s + prompt + suffix > len(ids) for s in starts):
        raise ValueError(f"every start needs prompt + suffix = {prompt + suffix} tokens after it")
    hits = []
    for i in range(0, len(starts), batch_size):
        chunk = list(starts[i:i + batch_size])
        p = torch.stack([ids[s:s + prompt] for s in chunk])  # (B, prompt)
        t = torch.stack([ids[s + prompt:s + prompt + suffix] for s in chunk])  # (B, suffix)
        hits.append(greedy_matches(model, p, t))
    return torch.cat(hits)


def greedy_match_length(model: nn.Module, ids: torch.Tensor, starts: Sequence[int], prompt: int,
                        suffix: int) -> torch.Tensor:
    """How many of the ``suffix`` tokens after each prompt greedy decoding gets right before its first miss.

    A graded version of :func:`extractable` (which asks for all ``suffix``): ``(len(starts),)`` longs.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if any(s < 0 or s + prompt + suffix > len(ids) for s in starts):
        raise ValueError(f"every start needs prompt + suffix = {prompt + suffix} tokens after it")
    p = torch.stack([ids[s:s + prompt] for s in starts])  # (B, prompt)
    t = torch.stack([ids[s + prompt:s + prompt + suffix] for s in starts])  # (B, suffix)
    right = (greedy_continue(model, p, suffix) == t).long()  # (B, suffix)
    return right.cumprod(dim=1).sum(dim=1)
