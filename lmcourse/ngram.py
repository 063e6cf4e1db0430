"""n-gram language models: counting, smoothing, and Kneser-Ney.

An n-gram model makes the Markov assumption that only the last ``n - 1`` tokens
matter, ``P(x_t | x_<t) ~ P(x_t | x_{t-n+1} .. x_{t-1})``, and estimates that
probability from counts. With ``h`` the context and ``c(.)`` a training count:

* ``"mle"``: maximum likelihood, ``c(h w) / c(h)``; zero for anything unseen.
* ``"add_k"``: ``(c(h w) + k) / (c(h) + k V)`` (Laplace for ``k = 1``).
* ``"interpolated"``: Jelinek-Mercer, ``lam_m P_ML(w | h) + (1 - lam_m) P(w | h')``
  where ``h'`` drops the oldest token, recursively down to the uniform ``1 / V``.
* ``"kneser_ney"``: interpolated Kneser-Ney (Kneser & Ney, 1995; Chen & Goodman,
  1998). Subtract a discount ``D`` from every seen count and give the freed mass,
  ``D N1+(h .) / c(h)``, to the lower order, whose "counts" are *continuation
  counts* ``N1+(. h' w)``: in how many distinct contexts ``h' w`` appeared.
* ``"modified_kneser_ney"``: the same with three discounts ``D1, D2, D3+`` for
  counts 1, 2 and 3 or more (Chen & Goodman's modified Kneser-Ney).
* ``"absolute_discounting"``: interpolated absolute discounting (Ney, Essen &
  Kneser, 1994): Kneser-Ney's recursion with the raw counts at every order instead
  of continuation counts; the ablation that isolates what continuation counts add.

Every smoothed distribution sums to 1 over the vocabulary for every context. An
unseen context falls through to the next lower order.

How it scales: every m-gram is one int64, the base-``V`` number of its tokens
(oldest token most significant), so counting is one sort per order (runs of equal
codes are the counts) and lookup is ``torch.searchsorted`` in the sorted codes.
The context of code ``g`` is ``g // V``; dropping its oldest token is
``g % V**(m - 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import metrics
from .data import check_ids

SMOOTHINGS = ("mle", "add_k", "interpolated", "kneser_ney", "modified_kneser_ney", "absolute_discounting")
DISCOUNTED = ("kneser_ney", "modified_kneser_ney", "absolute_discounting")


@dataclass
class _Order:
    """The counts of one order m: sorted m-gram codes and their context statistics."""

    keys: torch.Tensor  # (G,) sorted int64 codes of the m-grams
    counts: torch.Tensor  # (G,) float64: raw counts, or continuation counts (Kneser-Ney)
    ctx_keys: torch.Tensor  # (H,) sorted int64 codes of the contexts (m - 1 tokens)
    ctx_total: torch.Tensor  # (H,) sum of counts over the next token: c(h)
    ctx_gamma: torch.Tensor  # (H,) Kneser-Ney mass freed by discounting: sum_w D(c(h w))
    discounts: tuple[float, float, float]  # D for counts 1, 2 and >= 3


def _count(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted distinct ``codes`` and how often each occurs (``torch.unique`` with counts,
    but through NumPy's sort, which is several times faster on int64 on the CPU)."""
    s = torch.from_numpy(np.sort(codes.numpy()))  # (G_all,)
    if len(s) == 0:
        return s, torch.zeros(0, dtype=torch.float64)
    first = torch.ones(len(s), dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]  # True where a new code starts
    starts = first.nonzero().squeeze(1)  # (G,)
    counts = torch.diff(starts, append=torch.tensor([len(s)]))
    return s[starts], counts.double()


def _lookup(keys: torch.Tensor, values: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``values`` at the position of each ``query`` in sorted ``keys``; 0 where absent."""
    if len(keys) == 0:
        return torch.zeros(query.shape, dtype=values.dtype)
    idx = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
    return torch.where(keys[idx] == query, values[idx], torch.zeros((), dtype=values.dtype))


def _discounts(counts: torch.Tensor, modified: bool) -> tuple[float, float, float]:
    """Discounts from the count-of-counts n_r = #{grams with count r}.

    ``D = n1 / (n1 + 2 n2)`` is the upper bound that Ney, Essen & Kneser (1994) derive
    for the discount that maximises the leave-one-out likelihood (see
    :func:`leave_one_out_log_likelihood`). Chen & Goodman's modified Kneser-Ney uses
    ``D_r = r - (r + 1) Y n_{r+1} / n_r`` with ``Y = D`` for r = 1, 2, 3+; it needs
    n1 .. n4 all positive (with ``n_{r+1} = 0`` the estimate says a gram seen r times
    keeps nothing: ``D_r = r``). Where one is zero (tiny counts, such as the 75
    continuation counts of single characters) this falls back to the single ``D``.
    """
    n = [float((counts == r).sum()) for r in range(1, 5)]
    if n[0] == 0 or n[1] == 0:  # too little data for the estimate: a classic default
        return (0.5, 0.5, 0.5) if n[0] + n[1] == 0 else (1.0, 1.0, 1.0)
    y = n[0] / (n[0] + 2 * n[1])  # D = n1 / (n1 + 2 n2)
    if not modified or min(n) == 0:  # modified KN's estimates are undefined or degenerate
        return (y, y, y)
    d = [1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]]
    # Keep 0 < D(r) <= r: c - D(c) >= 0, so the freed mass is exactly sum D, and it is
    # positive, so no token ever gets probability 0 (a non-positive estimate falls back to y).
    return tuple(min(di if di > 0 else y, r) for r, di in zip((1, 2, 3), d, strict=True))  # type: ignore[return-value]


def leave_one_out_log_likelihood(count_of_counts: torch.Tensor, discount: float) -> float:
    """The part of absolute discounting's leave-one-out log-likelihood that depends on ``D``.

    Take each training occurrence out in turn and predict it from the rest
    (Ney, Essen & Kneser, 1994). A gram seen r >= 2 times is then seen r - 1 times
    and gets ``(r - 1 - D) / c(h)``; a gram seen once is then unseen and gets only
    the freed mass, proportional to ``D``. Summed over all occurrences, up to terms
    free of ``D``: ``F(D) = n1 ln D + sum_{r >= 2} r n_r ln(r - 1 - D)``, with
    ``count_of_counts[r] = n_r`` (entry 0 unused). ``dF/dD = 0`` gives
    ``n1 / D = sum_{r >= 2} r n_r / (r - 1 - D) >= 2 n2 / (1 - D)``, so the best ``D``
    is at most ``n1 / (n1 + 2 n2)``, the estimate Kneser-Ney uses.

    >>> nr = torch.tensor([0.0, 10.0, 5.0])  # n1 = 10, n2 = 5: the bound is 0.5
    >>> f = [leave_one_out_log_likelihood(nr, d) for d in (0.4, 0.5, 0.6)]
    >>> f[1] > max(f[0], f[2])
    True
    """
    nr = torch.as_tensor(count_of_counts, dtype=torch.float64)
    if nr.dim() != 1 or len(nr) < 3 or (nr < 0).any():
        raise ValueError("count_of_counts must be a 1-D tensor n_r >= 0 for r = 0, 1, 2, ... (length >= 3)")
    if not 0 < discount < 1:
        raise ValueError(f"discount must be in (0, 1), got {discount!r}")
    r = torch.arange(len(nr), dtype=torch.float64)
    rest = (r[2:] * nr[2:] * torch.log(r[2:] - 1 - discount)).sum()
    return float(nr[1] * math.log(discount) + rest)


def good_turing_counts(count_of_counts: torch.Tensor) -> torch.Tensor:
    """Good-Turing adjusted counts ``r* = (r + 1) n_{r+1} / n_r`` for r = 1 .. len - 2 (Good, 1953).

    ``count_of_counts[r] = n_r`` (entry 0 unused). Estimated from one sample: how
    often a gram seen ``r`` times will be seen in a new sample of the same size.
    Entry ``r - 1`` of the result is ``r*``; ``nan`` where ``n_r = 0``. Modified
    Kneser-Ney's discount is ``D_r = r - Y r*`` with ``Y = n1 / (n1 + 2 n2)``.

    >>> good_turing_counts(torch.tensor([0.0, 8.0, 2.0, 1.0])).tolist()
    [0.5, 1.5]
    """
    nr = torch.as_tensor(count_of_counts, dtype=torch.float64)
    if nr.dim() != 1 or len(nr) < 3 or (nr < 0).any():
        raise ValueError("count_of_counts must be a 1-D tensor n_r >= 0 for r = 0, 1, 2, ... (length >= 3)")
    r = torch.arange(1, len(nr) - 1, dtype=torch.float64)
    n_r = nr[1:-1]
    return torch.where(n_r > 0, (r + 1) * nr[2:] / n_r.clamp(min=1), torch.full_like(r, math.nan))


def held_out_counts(tokens_a, tokens_b, order: int, vocab_size: int, max_count: int = 5) -> torch.Tensor:
    """For r = 1 .. ``max_count``: the mean count, in ``tokens_b``, of the ``order``-grams seen r times in ``tokens_a``.

    Church and Gale's (1991) held-out estimate of what a count of r is worth on new
    text (make the two samples the same length). Good-Turing (:func:`good_turing_counts`)
    estimates the same thing from one sample.

    >>> # a's bigrams 01, 11, 10 are seen once each; b holds them 2, 0 and 1 times
    >>> held_out_counts([0, 1, 1, 0], [0, 1, 0, 1], order=2, vocab_size=2, max_count=1).tolist()
    [1.0]
    """
    if not isinstance(order, int) or order < 1 or not isinstance(max_count, int) or max_count < 1:
        raise ValueError(f"order and max_count must be integers >= 1, got {order!r}, {max_count!r}")
    a = NGramLM(order, "mle", vocab_size=vocab_size).fit(tokens_a)._raw[-1]  # (codes, counts) in a
    b = NGramLM(order, "mle", vocab_size=vocab_size).fit(tokens_b)._raw[-1]
    in_b = _lookup(b[0], b[1], a[0])  # (G_a,) count in b of every gram of a
    out = torch.full((max_count,), math.nan, dtype=torch.float64)
    for r in range(1, max_count + 1):
        sel = a[1] == r
        if sel.any():
            out[r - 1] = in_b[sel].mean()
    return out


def zipf_fit(counts: torch.Tensor, min_rank: int = 1, max_rank: int | None = None) -> tuple[float, float]:
    """Least-squares line through ``ln frequency`` against ``ln rank``: ``(slope, intercept)``.

    Zipf's law says frequency ~ rank**(-1), a slope near -1. ``counts`` are the
    counts of the distinct items (any order); ranks ``min_rank .. max_rank``
    (1-based, inclusive; default all) enter the fit.

    >>> ranks = torch.arange(1, 101, dtype=torch.float64)
    >>> [round(x, 6) for x in zipf_fit(1000 / ranks)]
    [-1.0, 6.907755]
    """
    c = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    c = torch.sort(c[c > 0], descending=True).values  # (K,) frequency by rank
    hi = len(c) if max_rank is None else max_rank
    if not (isinstance(min_rank, int) and 1 <= min_rank < hi <= len(c)):
        raise ValueError(f"need 1 <= min_rank < max_rank <= {len(c)} (the number of items counted), "
                         f"got min_rank={min_rank!r}, max_rank={max_rank!r}")
    x = torch.log(torch.arange(min_rank, hi + 1, dtype=torch.float64))
    y = torch.log(c[min_rank - 1 : hi])
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return slope, float(y.mean() - slope * x.mean())


def _check_discounts(discounts, n: int, smoothing: str) -> list[tuple[float, float, float]]:
    """``discounts`` as n triples ``(D1, D2, D3+)``, each checked: ``0 < D_r <= r``."""
    if smoothing not in DISCOUNTED:
        raise ValueError(f"discounts are for Kneser-Ney smoothing only (and absolute discounting), not {smoothing!r}")
    if isinstance(discounts, (str, bytes)) or not hasattr(discounts, "__len__") or len(discounts) != n:
        raise ValueError(f"discounts must hold one entry per order 1..{n}, got {discounts!r}")
    out = []
    for d in discounts:
        triple = (d, d, d) if isinstance(d, (int, float)) else tuple(d)
        if len(triple) != 3 or not all(isinstance(x, (int, float)) for x in triple):
            raise ValueError(f"each discount must be one number or (D1, D2, D3+), got {d!r}")
        if not all(0 < x <= r for r, x in zip((1, 2, 3), triple, strict=True)):
            raise ValueError(f"discounts must satisfy 0 < D1 <= 1, 0 < D2 <= 2, 0 < D3+ <= 3, got {d!r}")
        out.append(tuple(float(x) for x in triple))
    return out  # type: ignore[return-value]


class NGramLM:
    """An n-gram language model over integer token ids.

    ``vocab_size`` defaults to ``max(training ids) + 1``; pass it to score text that
    holds ids never seen in training. ``k`` is the add-k pseudo-count, ``lam`` the
    Jelinek-Mercer weight of each order (one float, or ``n`` floats for orders 1..n).
    ``discounts`` (Kneser-Ney only) fixes the discounts of each order 1..n instead of
    estimating them from the counts: ``n`` entries, each one ``D`` or ``(D1, D2, D3+)``
    with ``0 < D_r <= r``.

    >>> lm = NGramLM(2, smoothing="mle").fit([0, 1, 0, 1, 1])
    >>> lm.prob([0], 1), lm.prob([1], 0)
    (1.0, 0.5)
    >>> round(float(NGramLM(3, vocab_size=4).fit([0, 1, 2, 0, 1]).distribution([0, 1]).sum()), 12)
    1.0
    """

    def __init__(self, n: int, smoothing: str = "kneser_ney", *, vocab_size: int | None = None,
                 k: float = 1.0, lam: float | Sequence[float] = 0.7,
                 discounts: Sequence[float | Sequence[float]] | None = None) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        if smoothing == "add_k" and not k > 0:
            raise ValueError(f"add-k smoothing needs k > 0, got k={k}")
        lams = [float(lam)] * n if isinstance(lam, (int, float)) else [float(x) for x in lam]
        if len(lams) != n or not all(0.0 <= x < 1.0 for x in lams):
            raise ValueError(f"lam must be one weight or {n} weights, each in [0, 1), got {lam!r}")
        if vocab_size is not None and vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self._fixed = None if discounts is None else _check_discounts(discounts, n, smoothing)
        self.n, self.smoothing, self.k, self.lam = n, smoothing, float(k), lams
        self.vocab_size = vocab_size
        self._orders: list[_Order] = []
        self._raw: list[tuple[torch.Tensor, torch.Tensor]] = []  # (codes, counts) of orders 1..n
        self._cont: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # continuation counts, by order

    def __repr__(self) -> str:
        return f"NGramLM(n={self.n}, smoothing={self.smoothing!r}, vocab_size={self.vocab_size})"

    # ------------------------------------------------------------------ checks
    def _ids(self, tokens, what: str, allow_empty: bool = False) -> torch.Tensor:
        """``tokens`` as a 1-D long tensor, checked against ``vocab_size`` once it is known."""
        t = torch.as_tensor(tokens, dtype=torch.long).reshape(-1) if len(tokens) else torch.zeros(0, dtype=torch.long)
        if not allow_empty and len(t) == 0:
            raise ValueError(f"{what} is empty: need at least one token")
        if self.vocab_size is not None:  # unknown before fit() infers it: nothing to check against
            try:
                check_ids(t, self.vocab_size)
            except ValueError as e:  # say which argument held the bad id
                raise ValueError(f"in {what}: {e}") from None
        return t

    def _fitted(self) -> int:
        if not self._orders:
            raise ValueError("the model is not fitted yet: call fit(tokens) first")
        return self.vocab_size  # type: ignore[return-value]

    # --------------------------------------------------------------------- fit
    def fit(self, tokens: Sequence[int] | torch.Tensor) -> "NGramLM":
        """Count every m-gram, m = 1..n, of ``tokens`` (a 1-D sequence of ids)."""
        if self.vocab_size is None:
            t = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
            if len(t) == 0:
                raise ValueError("the training sequence is empty: need at least one token")
            if int(t.min()) < 0:
                raise ValueError(f"token id {int(t.min())} in the training sequence is negative")
            self.vocab_size = int(t.max()) + 1
        x = self._ids(tokens, "the training sequence")
        V, n = self.vocab_size, self.n
        if V ** n > 2**63 - 1:
            raise ValueError(f"V**n = {V}**{n} does not fit in int64: use a smaller n or vocabulary")
        raw: list[tuple[torch.Tensor, torch.Tensor]] = []
        g = x.clone()  # (T,) codes of the 1-grams starting at each position
        for m in range(1, n + 1):
            if m > 1:
                g = g[:-1] * V + x[m - 1 :]  # (T - m + 1,) codes of the m-grams
            raw.append(_count(g))
        self._raw, self._cont = raw, {}
        self._build()
        return self

    def restricted(self, n: int, smoothing: str | None = None, **kwargs) -> "NGramLM":
        """The model of order ``n <= self.n`` (and maybe another smoothing) from the same counts.

        No recounting: the m-gram counts of an n-gram fit are those of every lower order.
        ``kwargs`` (``k``, ``lam``) go to the new model's constructor.
        """
        self._fitted()
        if not isinstance(n, int) or not 1 <= n <= self.n:
            raise ValueError(f"n must be between 1 and the fitted order {self.n}, got {n!r}")
        new = NGramLM(n, smoothing or self.smoothing, vocab_size=self.vocab_size, **kwargs)
        new._raw, new._cont = self._raw[:n], self._cont  # shared: counts and a cache
        new._build()
        return new

    def _build(self) -> None:
        """Turn the shared counts into the per-order tables this smoothing needs."""
        V, kn = self.vocab_size, self.smoothing in DISCOUNTED
        self._orders = []
        for m in range(1, self.n + 1):
            keys, counts = self._raw[m - 1]
            # continuation count N1+(. g): distinct left extensions of g (Kneser-Ney only)
            if kn and m < self.n and self.smoothing != "absolute_discounting":
                if m not in self._cont:
                    self._cont[m] = _count(self._raw[m][0] % V**m)
                keys, counts = self._cont[m]
            self._orders.append(self._order(keys, counts, V, kn, m))

    def _order(self, keys: torch.Tensor, counts: torch.Tensor, V: int, kn: bool, m: int) -> _Order:
        ctx, inv = torch.unique_consecutive(keys // V, return_inverse=True)  # keys are sorted
        total = torch.zeros(len(ctx), dtype=torch.float64).index_add_(0, inv, counts)
        if not kn:
            d = (0.0, 0.0, 0.0)
        elif self._fixed is not None:
            d = self._fixed[m - 1]
        else:
            d = _discounts(counts, self.smoothing == "modified_kneser_ney")
        d_of = torch.tensor(d, dtype=torch.float64)[(counts.long().clamp(max=3) - 1).clamp(min=0)]
        gamma = torch.zeros(len(ctx), dtype=torch.float64).index_add_(0, inv, d_of)
        return _Order(keys, counts, ctx, total, gamma, d)

    @property
    def discounts(self) -> list[tuple[float, float, float]]:
        """Discounts (D1, D2, D3+) of each order 1..n (zeros for smoothings that do not discount)."""
        return [o.discounts for o in self._orders]

    def count_of_counts(self, order: int) -> torch.Tensor:
        """``n_r`` for r = 0, 1, ..., max(4, max count): how many ``order``-grams have count r.

        The counts are those this smoothing uses at that order: raw counts, or
        continuation counts below the top order for Kneser-Ney. Entry 0 is 0.
        """
        self._fitted()
        if not isinstance(order, int) or not 1 <= order <= self.n:
            raise ValueError(f"order must be between 1 and n = {self.n}, got {order!r}")
        counts = self._orders[order - 1].counts.long()
        return torch.bincount(counts, minlength=5).double() if len(counts) else torch.zeros(5, dtype=torch.float64)

    @property
    def stored_ngrams(self) -> list[int]:
        """How many distinct m-grams (with a count) the model stores, for m = 1..n."""
        self._fitted()
        return [len(o.keys) for o in self._orders]

    @property
    def stored_numbers(self) -> int:
        """Every number the model keeps: a code and a count per m-gram, code, total and freed mass per context."""
        self._fitted()
        return sum(2 * len(o.keys) + 3 * len(o.ctx_keys) for o in self._orders)

    # ----------------------------------------------------------------- scoring
    def _probs(self, ctx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``P(w_i | ctx_i)`` for a batch: ``ctx`` (N, n - 1) padded with -1 on the left, ``w`` (N,)."""
        V = self._fitted()
        N = len(w)
        if self.smoothing == "mle":
            p = torch.zeros(N, dtype=torch.float64)
        else:
            p = torch.full((N,), 1.0 / V, dtype=torch.float64)
        h = torch.zeros(N, dtype=torch.long)  # (N,) code of the context of the current order
        for m, o in enumerate(self._orders, start=1):
            if m > 1:
                oldest = ctx[:, -(m - 1)]  # (N,) the token that order m adds to the context
                valid = oldest >= 0  # False near the start of a sequence: shorter context
                h = h + oldest.clamp(min=0) * V ** (m - 2)
            else:
                valid = torch.ones(N, dtype=torch.bool)
            c = _lookup(o.keys, o.counts, h * V + w)  # (N,) c(h w)
            ctx_idx = torch.searchsorted(o.ctx_keys, h).clamp_(max=max(len(o.ctx_keys) - 1, 0))
            seen = o.ctx_keys[ctx_idx] == h if len(o.ctx_keys) else torch.zeros(N, dtype=torch.bool)
            ch = torch.where(
                seen, o.ctx_total[ctx_idx] if len(o.ctx_keys) else 0.0, torch.zeros((), dtype=torch.float64)
            )
            safe = ch.clamp(min=1.0)
            if self.smoothing == "mle":
                new = c / safe  # 0 for an unseen context: MLE has no estimate there
                seen = torch.ones_like(seen)
            elif self.smoothing == "add_k":
                new = (c + self.k) / (ch + self.k * V)
                seen = torch.ones_like(seen)
            elif self.smoothing == "interpolated":
                new = self.lam[m - 1] * c / safe + (1 - self.lam[m - 1]) * p
            else:  # (c - D(c)) / c(h) + gamma(h) / c(h) * P_lower
                d = torch.tensor(o.discounts, dtype=torch.float64)[(c.long().clamp(max=3) - 1).clamp(min=0)]
                gamma = o.ctx_gamma[ctx_idx] if len(o.ctx_keys) else torch.zeros(N, dtype=torch.float64)
                new = (torch.where(c > 0, c - d, c) + gamma * p) / safe
            p = torch.where(valid & seen, new, p)
        return p

    def _contexts(self, t: torch.Tensor) -> torch.Tensor:
        """(T - 1, n - 1): for each position 1..T-1, the n - 1 tokens before it (-1 before the start)."""
        padded = torch.cat([torch.full((self.n - 1,), -1, dtype=torch.long), t])
        if self.n > 1:
            return padded.unfold(0, self.n - 1, 1)[1 : len(t)]
        return torch.zeros(len(t) - 1, 0, dtype=torch.long)

    def prob(self, context: Sequence[int] | torch.Tensor, token: int) -> float:
        """``P(token | context)``; only the last ``n - 1`` tokens of ``context`` matter."""
        return float(self.distribution(context)[self._ids([token], "token")[0]])

    def distribution(self, context: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``(V,)`` float64 next-token probabilities after ``context``."""
        V = self._fitted()
        if self.n > 1:
            c = self._ids(context, "the context", allow_empty=True)[-(self.n - 1) :]
        else:
            c = torch.zeros(0, dtype=torch.long)
        row = torch.cat([torch.full((self.n - 1 - len(c),), -1, dtype=torch.long), c])  # (n - 1,)
        return self._probs(row.expand(V, -1), torch.arange(V))

    def token_log_probs(self, tokens: Sequence[int] | torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
        """``ln P(x_t | x_<t)`` for t = 1..T-1 (the first token is context), shape ``(T - 1,)``."""
        self._fitted()
        t = self._ids(tokens, "the sequence")
        if len(t) < 2:
            raise ValueError("need at least two tokens: one for context, one to predict")
        ctx = self._contexts(t)  # (T - 1, n - 1)
        parts = [self._probs(ctx[i : i + chunk], t[1:][i : i + chunk]) for i in range(0, len(t) - 1, chunk)]
        return torch.log(torch.cat(parts))  # ln 0 = -inf for an MLE zero

    def log_likelihood(self, tokens: Sequence[int] | torch.Tensor) -> float:
        """``sum_t ln P(x_t | x_<t)`` over t = 1..T-1 in nats (``-inf`` if a token has probability 0)."""
        return float(self.token_log_probs(tokens).sum())

    def perplexity(self, tokens: Sequence[int] | torch.Tensor) -> float:
        """``exp(-log_likelihood / (T - 1))``; ``inf`` when a token has probability 0."""
        return metrics.perplexity(-self.log_likelihood(tokens) / (len(tokens) - 1))

    def sample(self, context: Sequence[int] | torch.Tensor, length: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``length`` tokens one at a time after ``context``; returns them, shape ``(length,)``."""
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        out = self._ids(context, "the context", allow_empty=True).tolist()
        start = len(out)
        for _ in range(length):
            dist = self.distribution(out[-(self.n - 1) :] if self.n > 1 else [])
            if not dist.sum() > 0:
                raise ValueError("the MLE model never saw this context, so it has no next token to sample")
            out.append(int(torch.multinomial(dist, 1, generator=generator)))
        return torch.tensor(out[start:], dtype=torch.long)

