"""Speculative decoding: a cheap draft model proposes, the large model verifies.

Generating with a large model costs one forward per token, and on most hardware
that forward costs about the same for 1 token as for 5 (the weights are read once
either way). Speculative decoding (Leviathan, Kalman & Matias, 2023, "Fast
Inference from Transformers via Speculative Decoding"; Chen et al., 2023,
"Accelerating Large Language Model Decoding with Speculative Sampling") spends
that slack. Each round:

1. a small **draft** model proposes ``k`` tokens ``d_1..d_k``, one at a time,
   drawn from its own distributions ``q_1..q_k``;
2. the **target** model runs *once* on the last accepted token and the ``k``
   drafts, which gives its distributions ``p_1..p_{k+1}`` at all those positions;
3. draft ``d_i`` is accepted with probability ``min(1, p_i(d_i) / q_i(d_i))``, in
   order; at the first rejection the round ends with a token drawn from the
   residual ``max(0, p_i - q_i)`` (normalised); if all ``k`` are accepted, a bonus
   token is drawn from ``p_{k+1}``.

Every round emits between 1 and ``k + 1`` tokens for one target forward, and the
tokens are distributed **exactly** as if the target had sampled them one by one
(Leviathan et al., Appendix A.1): ``P(emit x) = min(p, q)(x) + (1 - sum min(p, q))
* residual(x) = p(x)``. With greedy decoding ``p`` and ``q`` are one-hot, a draft
is accepted iff it is the target's argmax, and the replacement is that argmax:
the output equals the target's greedy output token for token. With acceptance
rate ``alpha = E[sum_x min(p(x), q(x))]`` a round emits ``(1 - alpha^(k+1)) /
(1 - alpha)`` tokens on average (Leviathan et al., eq. 1).

Any model that gives next-token probabilities can draft: a smaller GPT (cached),
an n-gram model (:class:`NGramDraft`, a table lookup), or a plain callable
``ids (1, T) -> logits (1, T, V)``. Both models see one sequence (batch 1).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from .data import check_ids
from .decoding import filter_logits
from .device import eval_mode
from .generation import KVCache
from .ngram import NGramLM


class Scorer(Protocol):
    """A model seen as a sequence it extends and rolls back (what :func:`speculative_generate` drives)."""

    def feed(self, ids: torch.Tensor, keep: int, last: int) -> torch.Tensor:
        """Forget all but the first ``keep`` tokens seen, append ``ids`` ``(1, m)``, return the
        logits ``(1, last, V)`` of the last ``last`` positions (each predicts the token after it)."""
        ...


class _CachedGPT:
    """A causal :class:`~lmcourse.transformer.GPT` with a key/value cache that rolls back on rejection."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.cache = KVCache.for_model(model, batch_size=1)
        self.context_length = model.config.context_length
        self.vocab_size = model.config.vocab_size

    def feed(self, ids: torch.Tensor, keep: int, last: int) -> torch.Tensor:
        self.cache.truncate(keep)  # the keys and values of rejected drafts are forgotten
        return self.model(ids, offset=keep, cache=self.cache)[:, -last:]  # (1, last, V)


class _Recompute:
    """Any ``ids (1, T) -> logits (1, T, V)`` callable, run on the whole sequence every time."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self.ids = torch.zeros(1, 0, dtype=torch.long)
        self.context_length = self.vocab_size = None

    def feed(self, ids: torch.Tensor, keep: int, last: int) -> torch.Tensor:
        self.ids = torch.cat([self.ids[:, :keep].to(ids.device), ids], dim=1)  # (1, keep + m)
        return self.fn(self.ids)[:, -last:]


class NGramDraft:
    """An :class:`~lmcourse.ngram.NGramLM` as a draft model: next-token log-probabilities by table lookup.

    ``lm.distribution(context)`` costs a few hundred microseconds, about a tenth of
    a forward of the course's GPT, too slow for a draft. So the distribution after
    every ``(n - 1)``-token context that occurs in ``contexts_from`` (the training
    ids, say) is computed once, in one vectorised call, into a table; any other
    context is computed when first met and remembered. The values are exactly
    ``log(lm.distribution(context))``.

    >>> lm = NGramLM(2, vocab_size=3).fit([0, 1, 2, 1, 0, 1])
    >>> draft = NGramDraft(lm, contexts_from=[0, 1, 2])
    >>> logits = draft.feed(torch.tensor([[2, 1]]), keep=0, last=1)  # (1, 1, V)
    >>> torch.allclose(logits[0, -1].exp(), lm.distribution([1]))
    True
    """

    def __init__(self, lm: NGramLM, contexts_from: Sequence[int] | torch.Tensor | None = None) -> None:
        if not isinstance(lm, NGramLM):
            raise TypeError(f"lm must be an lmcourse.ngram.NGramLM, got {type(lm).__name__}")
        self.lm, self.m = lm, lm.n - 1  # m: tokens of context
        self.vocab_size = V = len(lm.distribution([]))  # raises if lm is not fitted
        self.ids: list[int] = []
        self.context_length = None
        self._row: dict[tuple[int, ...], int] = {}
        self._rows: list[torch.Tensor] = []
        self.table = torch.zeros(0, V, dtype=torch.float64)  # (N, V) log-probabilities
        if contexts_from is not None and self.m > 0:
            self._precompute(torch.as_tensor(contexts_from, dtype=torch.long).reshape(-1))

    def _precompute(self, ids: torch.Tensor) -> None:
        check_ids(ids, self.vocab_size)
        if len(ids) < self.m:
            return
        V, n = self.vocab_size, self.m + 1
        powers = V ** torch.arange(self.m - 1, -1, -1)  # (m,) a context as one base-V number
        codes = torch.unique(ids.unfold(0, self.m, 1) @ powers)  # (N,) distinct contexts, sorted
        ctx = codes[:, None] // powers % V  # (N, m) their tokens
        N = len(ctx)
        # One sequence of N * V blocks "context, w": the last position of each block is
        # scored with exactly its own context, so token_log_probs gives ln P(w | context).
        blocks = torch.cat([ctx.repeat_interleave(V, dim=0), torch.arange(V).repeat(N)[:, None]], dim=1)
        logp = self.lm.token_log_probs(blocks.reshape(-1))  # (N * V * n - 1,) position t scores token t + 1
        self.table = logp[n - 2 :: n].reshape(N, V)  # (N, V)
        self._row = {tuple(c): i for i, c in enumerate(ctx.tolist())}

    def log_probs(self, context: Sequence[int]) -> torch.Tensor:
        """``(V,)`` float64 ``ln P(next | last n - 1 tokens of context)``."""
        key = tuple(context[len(context) - self.m :]) if self.m > 0 else ()
        row = self._row.get(key)
        if row is None:  # not precomputed: compute once, remember
            extra = torch.log(self.lm.distribution(list(key)))[None]  # (1, V)
            self.table = torch.cat([self.table, extra])
            row = self._row[key] = len(self.table) - 1
        return self.table[row]

    def feed(self, ids: torch.Tensor, keep: int, last: int) -> torch.Tensor:
        self.ids = self.ids[:keep] + ids[0].tolist()
        n = len(self.ids)
        return torch.stack([self.log_probs(self.ids[: n - j]) for j in range(last - 1, -1, -1)])[None]


def as_scorer(model) -> Scorer:
    """Wrap a model for :func:`speculative_generate`.

    A causal :class:`~lmcourse.transformer.GPT` runs with a key/value cache that
    rolls back rejected drafts; an :class:`~lmcourse.ngram.NGramLM` becomes an
    :class:`NGramDraft` (no precomputed table: pass your own ``NGramDraft`` for
    one); anything with a ``feed`` method is used as it is; any other callable
    ``ids (1, T) -> logits (1, T, V)`` is run on the whole sequence every time.
    """
    if hasattr(model, "feed"):
        return model
    if isinstance(model, NGramLM):
        return NGramDraft(model)
    config = getattr(model, "config", None)
    if config is not None:
        if not (isinstance(model, nn.Module) and hasattr(config, "n_heads") and hasattr(config, "context_length")):
            raise TypeError(f"cannot draft or verify with a {type(model).__name__}: pass a GPT, an NGramLM, "
                            "an NGramDraft or a callable ids (1, T) -> logits (1, T, V)")
        if not getattr(config, "causal", True):
            raise ValueError("a bidirectional model cannot generate left to right: it needs causal=True")
        return _CachedGPT(model)
    if callable(model):
        return _Recompute(model)
    raise TypeError(f"cannot draft or verify with a {type(model).__name__}: pass a GPT, an NGramLM, "
                    "an NGramDraft or a callable ids (1, T) -> logits (1, T, V)")


def speculative_accept(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor,
    draft_ids: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One verification, for each of ``B`` rows: how many drafts to keep, and the token after them.

    ``target_probs`` ``(B, k + 1, V)`` are ``p_1..p_{k+1}``; ``draft_probs``
    ``(B, k, V)`` are ``q_1..q_k``; ``draft_ids`` ``(B, k)`` were drawn from them.
    Draft i is accepted iff ``u_i < p_i(d_i) / q_i(d_i)`` (``u_i`` uniform on
    [0, 1)) and all before it were. With ``n`` accepted the next token is drawn
    from ``max(0, p_{n+1} - q_{n+1})``, normalised, where ``q_{k+1} = 0`` (so all
    accepted means a draw from ``p_{k+1}``). Returns ``(n (B,), next_ids (B,))``.

    >>> p = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # target: token 1, then 0
    >>> q = torch.tensor([[[0.0, 1.0]]])  # the draft proposed token 1
    >>> speculative_accept(p, q, torch.tensor([[1]]))
    (tensor([1]), tensor([0]))
    """
    if target_probs.dim() != 3 or draft_probs.dim() != 3 or draft_ids.dim() != 2:
        raise ValueError("need target_probs (B, k + 1, V), draft_probs (B, k, V) and draft_ids (B, k); got shapes "
                         f"{tuple(target_probs.shape)}, {tuple(draft_probs.shape)}, {tuple(draft_ids.shape)}")
    B, k1, V = target_probs.shape
    if draft_probs.shape != (B, k1 - 1, V) or draft_ids.shape != (B, k1 - 1):
        raise ValueError(f"with target_probs {tuple(target_probs.shape)}, draft_probs must be {(B, k1 - 1, V)} and "
                         f"draft_ids {(B, k1 - 1)}; got {tuple(draft_probs.shape)} and {tuple(draft_ids.shape)}")
    check_ids(draft_ids, V, batched=True)
    p, q = target_probs.double(), draft_probs.double()
    p_d = p[:, :-1].gather(-1, draft_ids[..., None]).squeeze(-1)  # (B, k) p_i(d_i)
    q_d = q.gather(-1, draft_ids[..., None]).squeeze(-1)  # (B, k) q_i(d_i) > 0: d_i was drawn from q_i
    u = torch.rand(B, k1 - 1, dtype=torch.float64, generator=generator).to(p.device)  # (B, k)
    accept = u * q_d < p_d  # u < p / q without dividing; never when p_i(d_i) = 0
    n = accept.long().cumprod(dim=-1).sum(dim=-1)  # (B,) drafts accepted before the first rejection
    rows = torch.arange(B, device=p.device)
    q_next = torch.cat([q, q.new_zeros(B, 1, V)], dim=1)[rows, n]  # (B, V); q_{k+1} = 0
    p_next = p[rows, n]  # (B, V)
    residual = (p_next - q_next).clamp(min=0)  # (B, V)
    mass = residual.sum(dim=-1, keepdim=True)  # (B, 1)
    # mass is 0 only when p = q (then every draft is accepted); guard against round-off
    dist = torch.where(mass > 0, residual / mass.clamp(min=torch.finfo(torch.float64).tiny), p_next)
    nxt = torch.multinomial(dist.cpu(), 1, generator=generator).squeeze(-1).to(p.device)  # (B,)
    return n, nxt


@dataclass
class SpeculativeStats:
    """What a :func:`speculative_generate` call did."""

    rounds: int = 0  # target forwards (one verification each)
    drafted: int = 0  # draft tokens proposed
    accepted: int = 0  # draft tokens kept
    rejected: int = 0  # rounds that ended in a rejected draft (the drafts after it were never tested)
    new_tokens: int = 0  # tokens generated: accepted drafts + one target token per round

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted drafts (``nan`` if nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def alpha(self) -> float:
        """Accepted / tested drafts: the chance that a draft is accepted once tested,
        Leviathan et al.'s ``alpha`` (each round tests drafts until the first rejection)."""
        tested = self.accepted + self.rejected
        return self.accepted / tested if tested else float("nan")

    @property
    def tokens_per_round(self) -> float:
        """New tokens per target forward (1.0 for plain decoding)."""
        return self.new_tokens / self.rounds if self.rounds else float("nan")


def expected_tokens_per_round(alpha: float, k: int) -> float:
    """Leviathan et al.'s eq. 1: ``(1 - alpha^(k+1)) / (1 - alpha)`` tokens per target forward,
    if every draft is accepted with probability ``alpha`` independently.

    >>> expected_tokens_per_round(0.5, 3), expected_tokens_per_round(1.0, 3)
    (1.875, 4.0)
    """
    if not 0 <= alpha <= 1 or isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"need 0 <= alpha <= 1 and an int k >= 0, got alpha={alpha!r}, k={k!r}")
    return float(k + 1) if alpha == 1 else (1 - alpha ** (k + 1)) / (1 - alpha)


@torch.no_grad()
def speculative_generate(
    target,
    draft,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    k: int = 4,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Continue ``prompt_ids`` ``(1, T)`` by ``max_new_tokens``, drafting ``k`` tokens per target forward.

    The tokens follow the target's distribution after
    :func:`lmcourse.decoding.filter_logits` (``temperature``, ``top_k``, ``top_p``,
    ``min_p``), the same filters applied to the draft; with ``do_sample=False`` or
    ``temperature=0`` they are the target's greedy tokens. ``target`` and ``draft``:
    see :func:`as_scorer`. The sequence must fit the context of both models
    (``T + max_new_tokens <= context_length``; no sliding window). ``generator``
    (a CPU ``torch.Generator``) seeds the draft draws, the acceptance tests and the
    replacement draws. Returns the ids ``(1, T + max_new_tokens)`` and a
    :class:`SpeculativeStats`.

    >>> from lmcourse.transformer import GPT, GPTConfig
    >>> from lmcourse.generation import generate
    >>> _ = torch.manual_seed(0)
    >>> big = GPT(GPTConfig(vocab_size=10, context_length=32, d_model=32, n_layers=2, n_heads=2)).eval()
    >>> small = GPT(GPTConfig(vocab_size=10, context_length=32, d_model=16, n_layers=1, n_heads=2)).eval()
    >>> prompt = torch.tensor([[1, 2, 3]])
    >>> ids, stats = speculative_generate(big, small, prompt, 12, k=3, do_sample=False)
    >>> torch.equal(ids, generate(big, prompt, 12, do_sample=False)), stats.new_tokens
    (True, 12)
    """
    if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1 \
            or prompt_ids.shape[1] < 1:
        shape = tuple(prompt_ids.shape) if isinstance(prompt_ids, torch.Tensor) else type(prompt_ids).__name__
        raise ValueError(f"prompt_ids must be one sequence of shape (1, T) with T >= 1, got {shape}")
    for name, value in (("max_new_tokens", max_new_tokens), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "k" else 0):
            raise ValueError(f"{name} must be an int >= {1 if name == 'k' else 0}, got {value!r}")
    greedy = not do_sample or temperature == 0
    filter_logits(torch.zeros(1, 2), 0 if greedy else temperature, top_k, top_p, min_p)  # check the filters now
    tgt, drf = as_scorer(target), as_scorer(draft)
    V = getattr(tgt, "vocab_size", None)
    V_draft = getattr(drf, "vocab_size", None)
    if V is not None and V_draft is not None and V != V_draft:
        raise ValueError(f"the draft's vocabulary ({V_draft} ids) must be the target's ({V} ids)")
    if V is not None:
        check_ids(prompt_ids, V, batched=True)
    total = prompt_ids.shape[1] + max_new_tokens
    for name, scorer in (("target", tgt), ("draft", drf)):
        C = getattr(scorer, "context_length", None)
        if C is not None and total > C:
            raise ValueError(f"prompt + max_new_tokens = {total} tokens do not fit the {name}'s context of {C} "
                             "(speculative_generate does not slide the window)")
    device = prompt_ids.device
    if isinstance(target, nn.Module) and any(True for _ in target.parameters()):
        device = next(target.parameters()).device

    def probs(logits: torch.Tensor) -> torch.Tensor:  # (m, V) logits -> (m, V) float64 distributions
        z = filter_logits(logits.double(), 0 if greedy else temperature, top_k, top_p, min_p)
        return torch.softmax(z, dim=-1)  # one-hot (the first argmax) when greedy

    ids = prompt_ids[0].tolist()
    stats = SpeculativeStats()
    t_kept = d_kept = 0  # tokens whose state the target / the draft holds
    modules = [m for m in (target, draft) if isinstance(m, nn.Module)]
    with ExitStack() as stack:
        for m in modules:  # no dropout; each model's mode is restored afterwards
            stack.enter_context(eval_mode(m))
        while len(ids) < total:
            k_now = min(k, total - len(ids) - 1)  # never generate past max_new_tokens
            drafts: list[int] = []
            rows: list[torch.Tensor] = []  # q_1..q_k, each (1, V)
            if k_now > 0:
                logits = drf.feed(torch.tensor([ids[d_kept:]], device=device), keep=d_kept, last=1)[0]  # (1, V)
                d_kept = len(ids)
                for i in range(k_now):
                    q = probs(logits)  # (1, V)
                    drafts.append(int(torch.multinomial(q.cpu(), 1, generator=generator)))
                    rows.append(q)
                    if i + 1 < k_now:
                        logits = drf.feed(torch.tensor([drafts[-1:]], device=device), keep=d_kept, last=1)[0]
                        d_kept += 1
            fed = torch.tensor([ids[t_kept:] + drafts], device=device)  # (1, m): pending tokens + drafts
            ps = probs(tgt.feed(fed, keep=t_kept, last=k_now + 1)[0])  # (k + 1, V) p_1..p_{k+1}
            qs = torch.cat(rows).to(ps.device) if rows else ps.new_zeros(0, ps.shape[-1])  # (k, V)
            if qs.shape[-1] != ps.shape[-1]:
                raise ValueError(f"the draft gives {qs.shape[-1]} logits, the target {ps.shape[-1]}: "
                                 "they must share one vocabulary")
            d_ids = torch.tensor([drafts], dtype=torch.long, device=ps.device).reshape(1, k_now)
            n, nxt = speculative_accept(ps[None], qs[None], d_ids, generator)
            n = int(n)
            ids += drafts[:n] + [int(nxt)]
            t_kept = len(ids) - 1  # the target holds everything but the token it just chose
            d_kept = min(d_kept, len(ids) - 1)  # the draft's state past the first rejection is dropped
            stats.rounds += 1
            stats.drafted += k_now
            stats.accepted += n
            stats.rejected += n < k_now
            stats.new_tokens += n + 1
    return torch.tensor([ids], dtype=torch.long, device=prompt_ids.device), stats
