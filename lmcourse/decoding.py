"""Decoding: turning next-token logits into tokens.

A language model gives, at every step, logits ``z`` over the vocabulary; decoding
decides which token comes next. The filters here each take logits ``(B, V)`` and
return new logits with the removed tokens at ``-inf`` (softmax gives them
probability 0), every row on its own:

* temperature: ``softmax(z / tau)``; ``tau -> 0`` is greedy, ``tau = 1`` the model;
* top-k: keep the k largest logits (Fan et al., 2018);
* top-p, "nucleus": keep the smallest set of most likely tokens whose probability
  reaches p (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration");
* min-p: keep the tokens at least ``min_p`` times as likely as the most likely one
  (Nguyen et al., 2024, "Turning Up the Heat: Min-p Sampling"), a threshold that
  rises with the model's confidence;
* repetition penalty: push down tokens already generated. The idea is CTRL's
  (Keskar et al., 2019), which divides their logits by ``theta``; the sign-aware
  rule here is Hugging Face's fix of it (a negative logit divided by ``theta > 1``
  would *rise*, so it is multiplied instead).

:func:`filter_logits` chains the first four the usual way (temperature, then
top-k, then top-p, then min-p, Hugging Face's order): :func:`sample_next` draws
from its output and
:func:`lmcourse.widgets.filtered_distribution` plots it. :func:`beam_search`
searches for a likely sequence instead of sampling one; :func:`distinct_n`
measures repetition.
:func:`naive_top_p_filter_pooled` is a deliberately *wrong* nucleus filter that
shows a classic batch bug. Ties between equal logits always go to the lower id.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .data import check_ids

NEG_INF = float("-inf")


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")


def _check_temperature(temperature: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")


def _check_chain(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                 min_p: float | None = None) -> None:
    """The arguments of :func:`filter_logits`, checked before any work (also when greedy)."""
    _check_logits(logits)
    _check_temperature(temperature)
    if top_k is not None:
        _check_k(top_k)
    if top_p is not None:
        _check_p(top_p)
    if min_p is not None:
        _check_min_p(min_p)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got k={k}")


def _check_p(p: float) -> None:
    if not 0 < p <= 1:
        raise ValueError(f"top-p needs 0 < p <= 1, got p={p}")


def _check_min_p(min_p: float) -> None:
    if isinstance(min_p, bool) or not isinstance(min_p, (int, float)) or not 0 <= min_p <= 1:
        raise ValueError(f"min-p needs a number 0 <= min_p <= 1, got min_p={min_p!r}")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits divided by the temperature: ``softmax(z / tau)`` is sharper for ``tau < 1``.

    ``temperature = 0`` is the limit ``tau -> 0``, greedy decoding: every logit but
    each row's largest becomes ``-inf`` (of equal maxima, the lowest id is kept).

    >>> apply_temperature(torch.tensor([[1.0, 2.0, 2.0]]), 0.5)
    tensor([[2., 4., 4.]])
    >>> apply_temperature(torch.tensor([[1.0, 2.0, 2.0]]), 0)
    tensor([[-inf, 2., -inf]])
    """
    _check_logits(logits)
    _check_temperature(temperature)
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)  # (B, 1), the first maximum of each row
        return torch.full_like(logits, NEG_INF).scatter(-1, best, logits.gather(-1, best))
    return logits / temperature


def _sorted_desc(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # A stable sort keeps equal logits in id order: ties go to the lower id.
    return torch.sort(logits, dim=-1, descending=True, stable=True)  # (B, V), (B, V)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each row's ``k`` largest logits, the rest ``-inf``.

    Exactly ``k`` tokens are kept even when logits tie at the k-th value: ties go to
    the lower token id. (Hugging Face's ``TopKLogitsWarper`` keeps every tied token
    instead.) ``k >= V`` keeps everything.

    >>> top_k_filter(torch.tensor([[1.0, 3.0, 2.0, 3.0]]), 2)
    tensor([[-inf, 3., -inf, 3.]])
    >>> top_k_filter(torch.tensor([[1.0, 2.0, 2.0]]), 2)
    tensor([[-inf, 2., 2.]])
    """
    _check_logits(logits)
    _check_k(k)
    if k >= logits.shape[-1]:
        return logits.clone()
    top = _sorted_desc(logits)[1][:, :k]  # (B, k) ids of each row's k largest
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, top, True)  # (B, V)
    return logits.masked_fill(~keep, NEG_INF)


def _nucleus_sorted(logits: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids sorted by logit, and which of them the nucleus keeps (both ``(B, V)``)."""
    _check_logits(logits)
    _check_p(p)
    sorted_logits, sorted_ids = _sorted_desc(logits)  # (B, V)
    if p == 1:  # everything; no rounding in the cumulative sum may drop a token
        return sorted_ids, torch.ones_like(sorted_ids, dtype=torch.bool)
    probs = torch.softmax(sorted_logits, dim=-1)  # (B, V), descending
    before = probs.cumsum(dim=-1) - probs  # (B, V) mass of the tokens ranked above
    # keep i iff sum_{j<i} p_(j) < p: the prefix up to and including the token that
    # crosses p. The top token has 0 < p above it, so it is always kept.
    return sorted_ids, before < p


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens with probability >= p.

    Sort each row's probabilities ``p_(1) >= p_(2) >= ...`` and keep token ``(i)``
    iff ``p_(1) + ... + p_(i-1) < p``: the prefix that reaches p, including the token
    that crosses it. Never empty; ``p = 1`` keeps all; ties go to the lower id.

    >>> z = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    >>> top_p_filter(z, 0.6).isfinite().tolist()
    [[True, False, True]]
    >>> top_p_filter(z, 0.4).isfinite().tolist()
    [[True, False, False]]
    """
    sorted_ids, keep_sorted = _nucleus_sorted(logits, p)
    # scatter along the vocabulary dimension: row b's mask goes back to row b only
    keep = torch.zeros_like(keep_sorted).scatter(-1, sorted_ids, keep_sorted)  # (B, V)
    return logits.masked_fill(~keep, NEG_INF)


def naive_top_p_filter_pooled(logits: torch.Tensor, p: float) -> torch.Tensor:
    """WRONG on purpose: the nucleus filter with a batch bug (correct only for B = 1).

    A common snippet removes ``sorted_ids[remove_sorted]``: boolean indexing of a
    ``(B, V)`` tensor flattens it, pooling the ids removed in *all* rows into one
    list, which is then removed from *every* row. A row loses tokens that another
    row dropped, and may even lose its top token (all ``-inf``, so softmax is NaN).
    Use :func:`top_p_filter`.

    >>> z = torch.log(torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]]))
    >>> naive_top_p_filter_pooled(z, 0.5).isfinite().tolist()
    [[False, False, False], [False, False, False]]
    """
    sorted_ids, keep_sorted = _nucleus_sorted(logits, p)
    removed = sorted_ids[~keep_sorted]  # (N,) token ids of all rows, pooled: the bug
    out = logits.clone()
    out[:, removed] = NEG_INF
    return out


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Min-p filter: keep the tokens with ``P(v) >= min_p * max_u P(u)``, the rest ``-inf``.

    The threshold scales with the most likely token's probability (Nguyen et al.,
    2024): a confident step (top token 0.9) keeps little, a flat one keeps many.
    Hugging Face's ``MinPLogitsWarper`` with ``min_tokens_to_keep=1``: the same
    softmax, the same comparison. ``min_p = 0`` keeps everything; the most likely
    token is always kept (``min_p <= 1``). As ``P(v) / P_max = exp(z_v - z_max)``,
    this keeps ``z_v >= z_max + ln(min_p)``: after a temperature ``tau``, the logits
    within ``tau * ln(1 / min_p)`` of the largest.

    >>> z = torch.log(torch.tensor([[0.5, 0.2, 0.04, 0.26]]))
    >>> min_p_filter(z, 0.1).isfinite().tolist()  # threshold 0.1 * 0.5 = 0.05
    [[True, True, False, True]]
    """
    _check_logits(logits)
    _check_min_p(min_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1), one per row
    remove = probs < threshold  # (B, V)
    remove.scatter_(-1, probs.argmax(dim=-1, keepdim=True), False)  # the top token stays
    return logits.masked_fill(remove, NEG_INF)


def apply_repetition_penalty(logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Repetition penalty: make every token already in the row less likely.

    For each token id in row b of ``previous_ids`` ``(B, T)``:
    ``z -> z / penalty`` if ``z > 0`` else ``z * penalty``. An id that occurs several
    times is penalised once; ``penalty = 1`` changes nothing, ``< 1`` favours repeats.
    This is Hugging Face's ``RepetitionPenaltyLogitsProcessor``, a fix of CTRL's
    rule (Keskar et al., 2019), which divides every such logit by ``penalty``:
    that raises a negative logit (``-2 / 1.3 = -1.54``) and so makes a repeat
    *more* likely; multiplying the negative ones pushes them all down.

    >>> apply_repetition_penalty(torch.tensor([[2.0, -1.0, 3.0]]), torch.tensor([[0, 1, 0]]), 2.0)
    tensor([[ 1., -2.,  3.]])
    """
    _check_logits(logits)
    if not penalty > 0:
        raise ValueError(f"the repetition penalty must be > 0 (1.0 = no change), got {penalty}")
    if previous_ids.dim() != 2 or previous_ids.shape[0] != logits.shape[0]:
        raise ValueError(
            f"previous_ids must be (B, T) with B = {logits.shape[0]} rows like the logits, "
            f"got shape {tuple(previous_ids.shape)}"
        )
    check_ids(previous_ids, logits.shape[-1])
    ids = previous_ids.long()
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, ids, True)  # (B, V)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """The sampling filter chain: temperature, then top-k, top-p and min-p; logits ``(B, V)``.

    Returns new logits ``(B, V)``, the removed tokens at ``-inf``; their softmax is
    the distribution :func:`sample_next` draws from. ``None`` skips a filter.
    ``temperature = 0`` is greedy: the result is :func:`apply_temperature`'s, every
    logit but each row's first maximum at ``-inf`` (so its softmax is one-hot and
    its argmax the greedy token); the other filters are not applied then (none
    could remove that token), but their arguments are still checked.

    >>> z = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    >>> filter_logits(z, temperature=0.5, top_k=2)
    tensor([[-inf, 6., 4., -inf]])
    >>> filter_logits(z, temperature=0)
    tensor([[-inf, 3., -inf, -inf]])
    """
    _check_chain(logits, temperature, top_k, top_p, min_p)
    z = apply_temperature(logits, temperature)  # (B, V)
    if temperature == 0:
        return z
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    if min_p is not None:
        z = min_p_filter(z, min_p)
    return z


def sample_next(
    logits: torch.Tensor,
    *,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    min_p: float | None = None,
) -> torch.Tensor:
    """Next token ids ``(B,)``: :func:`filter_logits` (temperature, top-k, top-p, min-p), then a draw.

    Greedy (each row's argmax, lowest id on ties) when ``do_sample=False`` or
    ``temperature == 0``; otherwise ``torch.multinomial`` on the filtered softmax,
    which never draws a ``-inf`` token. ``generator`` must be on the logits' device.
    The arguments are checked in both cases.

    >>> sample_next(torch.tensor([[0.0, 5.0, 1.0]]), do_sample=False)
    tensor([1])
    >>> sample_next(torch.tensor([[0.0, 5.0, 1.0]]), top_k=1, generator=torch.Generator().manual_seed(0))
    tensor([1])
    """
    if not do_sample or temperature == 0:
        _check_chain(logits, temperature, top_k, top_p, min_p)
        return logits.argmax(dim=-1)  # (B,); no filter can drop the argmax
    z = filter_logits(logits, temperature, top_k, top_p, min_p)  # (B, V); checks shape and arguments
    probs = torch.softmax(z, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


def beam_search(
    model: Callable[[torch.Tensor], torch.Tensor],
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float = 1.0,
    eos_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``num_beams`` best continuations of one prompt ``(1, T)``, best first.

    ``model(ids (N, T)) -> logits (N, T, V)``. A hypothesis with new tokens
    ``y_1..y_n`` scores ``sum_i ln P(y_i | prompt, y_<i) / n ** length_penalty``,
    Hugging Face's form (not GNMT's ``((5 + n) / 6) ** alpha``), with ``n`` counting
    every new token, the EOS included. ``length_penalty > 0`` favours longer outputs.

    The beam holds ``num_beams`` hypotheses (Jurafsky & Martin's textbook version):
    each step extends the live ones by every token, keeps the best ``num_beams -
    finished`` extensions by log-probability (all live ones have the same length,
    so this is also the order by score), and retires those ending in ``eos_id``:
    each finished hypothesis takes a slot, so the live beam shrinks. Hugging Face's
    ``generate(num_beams=...)`` keeps the live beam at ``num_beams`` instead: it
    takes the best ``2 * num_beams`` extensions, files those ending in EOS (if they
    rank in the first ``num_beams``) in a separate list of the ``num_beams`` best
    finished ones, continues the best ``num_beams`` unfinished ones, and stops
    when no live one can (by a heuristic) beat the worst finished one.
    ``num_beams = 1`` is greedy decoding; ``num_beams >= V ** max_new_tokens`` is
    exhaustive search. Returns ``sequences (num_beams, T + n_max)`` (prompt
    included; shorter ones padded with ``eos_id``) and their ``scores (num_beams,)``
    (float64); fewer rows if fewer hypotheses exist. For a batch, call it per row.
    The model (in eval mode) runs on the full sequences each step (no key/value cache).
    The prompt's ids are checked (:func:`lmcourse.data.check_ids`) against
    ``model.config.vocab_size`` when the model has one, else against the ``V`` of
    the first logits.

    >>> table = torch.log(torch.tensor([[0.1, 0.9], [0.6, 0.4]]))  # P(next | last token)
    >>> seqs, scores = beam_search(lambda ids: table[ids], torch.tensor([[0]]), 2, num_beams=2)
    >>> seqs.tolist(), torch.exp(2 * scores).round(decimals=6).tolist()  # 0.9*0.6, 0.9*0.4
    ([[0, 1, 0], [0, 1, 1]], [0.54, 0.36])
    """
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1 or prompt_ids.shape[1] < 1:
        raise ValueError(
            f"beam_search decodes one prompt of shape (1, T) with T >= 1, got {tuple(prompt_ids.shape)}; "
            "for a batch, call it once per row"
        )
    if max_new_tokens < 1 or num_beams < 1:
        raise ValueError(f"need max_new_tokens >= 1 and num_beams >= 1, got {max_new_tokens} and {num_beams}")
    config_V = getattr(getattr(model, "config", None), "vocab_size", None)
    if config_V is not None:
        check_ids(prompt_ids, config_V, batched=True)
    beams = prompt_ids.long()  # (N, T + t) the live hypotheses
    sums = torch.zeros(1, dtype=torch.float64, device=beams.device)  # (N,) sum of new log-probs
    done: list[tuple[float, torch.Tensor]] = []  # (score, sequence) of finished hypotheses
    t = 0
    with torch.no_grad():
        for t in range(1, max_new_tokens + 1):
            logp = torch.log_softmax(model(beams)[:, -1, :].double(), dim=-1)  # (N, V)
            V = logp.shape[-1]
            if t == 1 and config_V is None:
                check_ids(prompt_ids, V, batched=True)
            cand = (sums[:, None] + logp).flatten()  # (N * V,) candidate (beam, token) pairs
            width = min(num_beams - len(done), int(torch.isfinite(cand).sum()))
            best = _sorted_desc(cand[None])[1][0, :width]  # (width,) ties to the lower index
            seqs = torch.cat([beams[best // V], (best % V)[:, None]], dim=1)  # (width, T + t)
            finished = seqs[:, -1] == eos_id if eos_id is not None else torch.zeros_like(best, dtype=torch.bool)
            done += [
                (cand[i].item() / t**length_penalty, s)
                for i, s in zip(best[finished], seqs[finished], strict=True)
            ]
            beams, sums = seqs[~finished], cand[best[~finished]]
            if len(beams) == 0:
                break
    hyps = done + [(s.item() / t**length_penalty, b) for s, b in zip(sums, beams, strict=True)]
    if not hyps:
        raise ValueError("the model gave every next token probability 0: no hypothesis to return")
    hyps.sort(key=lambda h: -h[0])  # stable: equal scores keep the order they were found in
    length = max(len(s) for _, s in hyps)
    pad = eos_id if eos_id is not None else 0
    sequences = torch.full((len(hyps), length), pad, dtype=torch.long, device=prompt_ids.device)
    for row, (_, s) in enumerate(hyps):
        sequences[row, : len(s)] = s
    scores = torch.tensor([score for score, _ in hyps], dtype=torch.float64, device=prompt_ids.device)
    return sequences, scores


def distinct_n(ids: Sequence[int] | torch.Tensor, n: int) -> float:
    """Distinct-n (Li et al., 2016): distinct n-grams / all n-grams of a sequence.

    1.0 when no n-gram repeats; near 0 for a text stuck in a loop.

    >>> distinct_n([1, 2, 1, 2, 1], 2)  # (1,2) (2,1) (1,2) (2,1): 2 distinct of 4
    0.5
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seq = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if isinstance(ids, torch.Tensor) and ids.dim() != 1:
        raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
    if len(seq) < n:
        raise ValueError(f"a sequence of {len(seq)} tokens has no {n}-grams")
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams)
