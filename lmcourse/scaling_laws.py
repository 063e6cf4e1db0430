"""Scaling laws: how loss falls with parameters N and training tokens D, fitted to measured runs.

Hoffmann et al. (2022, "Chinchilla") model the final loss of a run as

    L(N, D) = E + A / N^alpha + B / D^beta

(E: the loss no model of the family reaches, a fitted number and not the entropy of the text; the
two power laws: what a finite model and a finite run leave on top of it). Their
approach 3 fits the five numbers by minimising a Huber loss of the residual in
log-loss, ``log L_hat - log L``, written ``log L_hat = LSE(a - alpha log N,
b - beta log D, e)`` with ``A = e^a, B = e^b, E = e^e`` so every parameter is
unconstrained, from a grid of starting points (the objective has local minima);
:func:`fit_loss_law` does the same here with L-BFGS in float64, and
:func:`bootstrap` refits it to runs drawn with replacement for intervals.

With compute ``C = 6 N D`` fixed, minimising the law over N gives the
compute-optimal allocation (:func:`compute_optimal`)

    N*(C) = G (C/6)^(beta/(alpha+beta)),  D*(C) = (C/6)^(alpha/(alpha+beta)) / G,
    G = (alpha A / (beta B))^(1/(alpha+beta)),

and approach 2 reads N* off each budget's IsoFLOP profile directly: the vertex of
a parabola fitted to loss against log N (:func:`isoflop_minimum`).

When data runs out, Muennighoff et al. (2023) replace D by an effective number of
tokens: ``U`` unique tokens seen ``1 + R`` times are worth
``U + U R* (1 - exp(-R / R*))`` (:func:`effective_data`): repeats pay less and
less, and never more than ``R*`` fresh copies would.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossLaw:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` (nats per token)."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def __call__(self, N: float, D: float) -> float:
        return self.E + self.A / N**self.alpha + self.B / D**self.beta


def chinchilla() -> LossLaw:
    """Hoffmann et al.'s published fit (their approach 3; nats per token of their BPE text).

    >>> round(chinchilla()(70e9, 1.4e12), 3)  # Chinchilla itself
    1.937
    """
    return LossLaw(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)


def _huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def _log_law(p: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
    a, b, e, alpha, beta = p
    return torch.logsumexp(torch.stack([a - alpha * log_n, b - beta * log_d, e.expand_as(log_n)]), dim=0)


def _minimise(objective, start: torch.Tensor) -> tuple[torch.Tensor, float]:
    """L-BFGS (strong Wolfe line search) from ``start``; the point reached and the objective there."""
    p = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = objective(p)
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        return p.detach(), objective(p).item()


DEFAULT_STARTS = {"a": (0.0, 5.0, 10.0), "b": (0.0, 5.0, 10.0), "e": (-1.0, 0.5), "alpha": (0.2, 0.6),
                  "beta": (0.2, 0.6)}  # fit_loss_law's grid of starting points


def fit_loss_law(N: Sequence[float], D: Sequence[float], L: Sequence[float], delta: float = 1e-3,
                 starts: dict[str, Sequence[float]] | None = None, floor: float | None = None) -> LossLaw:
    """Fit :class:`LossLaw` to runs (N, D, final loss) as Chinchilla's approach 3 does.

    Minimises the summed Huber loss (``delta`` in log-loss) of ``log L_hat - log L``
    with L-BFGS from every point of a grid of starting values (``starts``: lists
    for ``a, b, e, alpha, beta``) and keeps the best. With ``floor``, ``E`` is held
    at that value and only the other four numbers are fitted (a profile of the fit
    along ``E``, for a floor the runs cannot locate).
    """
    if not len(N) == len(D) == len(L) >= 5:
        raise ValueError(f"need at least 5 runs with N, D and L each, got {len(N)}, {len(D)}, {len(L)}")
    if floor is not None and not 0 < floor < min(L):
        raise ValueError(f"a fixed floor must lie between 0 and the lowest loss ({min(L)}), got {floor}")
    log_n, log_d = torch.tensor(N, dtype=torch.float64).log(), torch.tensor(D, dtype=torch.float64).log()
    log_l = torch.tensor(L, dtype=torch.float64).log()
    grid = starts or DEFAULT_STARTS
    def objective(p: torch.Tensor) -> torch.Tensor:
        return _huber(_log_law(p, log_n, log_d) - log_l, delta).sum()

    best, best_value = None, math.inf
    if floor is not None:  # E held: minimise over (a, b, alpha, beta)
        e = torch.tensor([math.log(floor)], dtype=torch.float64)
        free = objective
        def objective(q: torch.Tensor) -> torch.Tensor:  # noqa: F811 (the four-number objective)
            return free(torch.cat([q[:2], e, q[2:]]))
    keys = ("a", "b", "alpha", "beta") if floor is not None else ("a", "b", "e", "alpha", "beta")
    for start in itertools.product(*(grid[k] for k in keys)):
        p, value = _minimise(objective, torch.tensor(start, dtype=torch.float64))
        if math.isfinite(value) and value < best_value:
            best, best_value = p, value
    if floor is not None:
        best = torch.cat([best[:2], e, best[2:]])
    a, b, e, alpha, beta = best.tolist()
    return LossLaw(E=math.exp(e), A=math.exp(a), alpha=alpha, B=math.exp(b), beta=beta)


def law_objective(law: LossLaw, N: Sequence[float], D: Sequence[float], L: Sequence[float],
                  delta: float = 1e-3) -> float:
    """The summed Huber loss that :func:`fit_loss_law` minimises, at ``law`` (lower is a better fit).

    >>> law = LossLaw(E=1.0, A=50.0, alpha=0.4, B=80.0, beta=0.3)
    >>> law_objective(law, [1e4, 1e5], [1e6, 1e7], [law(1e4, 1e6), law(1e5, 1e7)]) < 1e-20
    True
    """
    p = torch.tensor([math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta], dtype=torch.float64)
    log_n, log_d = torch.tensor(N, dtype=torch.float64).log(), torch.tensor(D, dtype=torch.float64).log()
    return _huber(_log_law(p, log_n, log_d) - torch.tensor(L, dtype=torch.float64).log(), delta).sum().item()


def bootstrap(N: Sequence[float], D: Sequence[float], L: Sequence[float], law: LossLaw, samples: int = 100,
              seed: int = 0, delta: float = 1e-3, extra_starts: int = 0) -> list[LossLaw]:
    """Refits of :func:`fit_loss_law` to ``samples`` resamples of the runs, drawn with replacement.

    The spread of the refits is what the choice of runs leaves uncertain (Hoffmann
    et al. give intervals this way). Each refit starts from ``law``, the fit to all
    runs, instead of a grid of starts: one L-BFGS run per resample, so a hundred
    cost about as much as the full fit. That keeps every refit at the minimum near
    the full fit's, which can make the intervals too narrow where the objective has
    other minima; ``extra_starts`` > 0 also starts each refit from that many points
    drawn uniformly from the box of the default grid (:data:`DEFAULT_STARTS`) and
    keeps the start that reaches the lowest objective. The resamples come from one
    generator (``seed``) and the extra starts from another (``seed + 1``), so the
    same ``seed`` gives the same resamples whatever ``extra_starts`` is.

    >>> N = [1e4, 1e4, 1e5, 1e5, 1e6, 1e6]; D = [1e6, 1e7] * 3
    >>> law = LossLaw(E=1.0, A=50.0, alpha=0.4, B=80.0, beta=0.3)
    >>> fits = bootstrap(N, D, [law(n, d) for n, d in zip(N, D)], law, samples=3)
    >>> len(fits), all(isinstance(f, LossLaw) for f in fits)
    (3, True)
    """
    if not len(N) == len(D) == len(L) >= 5:
        raise ValueError(f"need at least 5 runs with N, D and L each, got {len(N)}, {len(D)}, {len(L)}")
    if samples < 1 or extra_starts < 0:
        raise ValueError(f"samples must be >= 1 and extra_starts >= 0, got {samples}, {extra_starts}")
    keys = ("a", "b", "e", "alpha", "beta")
    full = (math.log(law.A), math.log(law.B), math.log(law.E), law.alpha, law.beta)
    low = torch.tensor([min(DEFAULT_STARTS[k]) for k in keys], dtype=torch.float64)
    high = torch.tensor([max(DEFAULT_STARTS[k]) for k in keys], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    g_starts = torch.Generator().manual_seed(seed + 1)
    fits = []
    for _ in range(samples):
        pick = torch.randint(len(N), (len(N),), generator=g).tolist()
        n, d, y = [N[i] for i in pick], [D[i] for i in pick], [L[i] for i in pick]
        starts = [full] + [tuple((low + (high - low) * torch.rand(5, generator=g_starts,
                                                                 dtype=torch.float64)).tolist())
                           for _ in range(extra_starts)]
        refits = [fit_loss_law(n, d, y, delta, starts={k: (v,) for k, v in zip(keys, s, strict=True)})
                  for s in starts]
        fits.append(min(refits, key=lambda f: law_objective(f, n, d, y, delta)))
    return fits


def compute_optimal(law: LossLaw, C: float) -> tuple[float, float]:
    """``(N*, D*)``: the split of compute ``C = 6 N D`` that minimises ``law``.

    >>> n, d = compute_optimal(chinchilla(), 5.76e23)  # Chinchilla's budget
    >>> f"{n:.2g} {d:.2g}"
    '3.2e+10 3e+12'
    """
    a, b = law.alpha, law.beta
    G = (a * law.A / (b * law.B)) ** (1 / (a + b))
    return G * (C / 6) ** (b / (a + b)), (C / 6) ** (a / (a + b)) / G


def log_parabola(N: Sequence[float], L: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares (c2, c1, c0) of L = c2 (ln N)^2 + c1 ln N + c0, in float64: the parabola whose vertex
    :func:`isoflop_minimum` returns (and a figure draws)."""
    x = torch.tensor(list(N), dtype=torch.float64).log()
    X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
    c2, c1, c0 = torch.linalg.lstsq(X, torch.tensor(list(L), dtype=torch.float64)[:, None]).solution[:, 0].tolist()
    return c2, c1, c0


def isoflop_minimum(N: Sequence[float], L: Sequence[float]) -> float:
    """The N at the vertex of a parabola fitted to loss against ``log N`` (one budget's profile).

    >>> round(isoflop_minimum([1e4, 1e5, 1e6], [3.0, 2.0, 3.0]))
    100000
    """
    if len(N) != len(L) or len(N) < 3:
        raise ValueError(f"need at least 3 runs of one budget, got {len(N)} sizes and {len(L)} losses")
    c2, c1, _ = log_parabola(N, L)
    if c2 <= 0:
        raise ValueError("the profile has no minimum (its parabola opens downwards): widen the range of sizes")
    return math.exp(-c1 / (2 * c2))


def power_law(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """``(k, p)`` of the least-squares line ``log y = log k + p log x`` (``y = k x^p``).

    >>> k, p = power_law([1, 10, 100], [2, 20, 200]); round(k, 6), round(p, 6)
    (2.0, 1.0)
    """
    lx, ly = torch.tensor(x, dtype=torch.float64).log(), torch.tensor(y, dtype=torch.float64).log()
    X = torch.stack([torch.ones_like(lx), lx], dim=1)
    log_k, p = torch.linalg.lstsq(X, ly[:, None]).solution[:, 0].tolist()
    return math.exp(log_k), p


def power_law_floor(x: Sequence[float], y: Sequence[float], points: int = 2001) -> tuple[float, float, float]:
    """``(E, k, p)`` of ``y = E + k x^p`` with a floor ``0 <= E < min(y)``, least squares in ``log(y - E)``.

    For each floor on a grid of ``points`` values from 0 up to just below ``min(y)`` the rest is
    :func:`power_law` on ``y - E``; the floor kept is the one whose fit misses ``y`` least (squared
    error in ``y``). Kaplan et al.'s compute frontier is :func:`power_law` on the best loss per budget,
    which can only fall forever; this is the same line with room for a floor.

    >>> E, k, p = power_law_floor([1, 10, 100, 1000], [3.0, 1.5 + 1.5 / 10**0.5, 1.65, 1.5 + 1.5 / 1000**0.5])
    >>> round(E, 2), round(k, 2), round(p, 2)
    (1.5, 1.5, -0.5)
    """
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need at least 3 points (a floor, a scale and a slope), got {len(x)} and {len(y)}")
    if min(x) <= 0 or min(y) <= 0:
        raise ValueError("x and y must be positive")
    ys = torch.tensor(y, dtype=torch.float64)
    xs = torch.tensor(x, dtype=torch.float64)
    best = None
    for i in range(points):
        floor = min(y) * i / points
        k, p = power_law(x, (ys - floor).tolist())
        miss = ((floor + k * xs**p - ys) ** 2).sum().item()
        if best is None or miss < best[0]:
            best = (miss, floor, k, p)
    return best[1], best[2], best[3]


def effective_data(unique: float, tokens: float, r_star: float) -> float:
    """Muennighoff et al.'s effective tokens of a run that reads ``tokens`` from ``unique`` unique ones.

    The ``R = tokens / unique - 1`` repeats count as ``unique * r_star * (1 - exp(-R / r_star))``.

    >>> effective_data(100, 100, 15.0), round(effective_data(100, 1e9, 15.0))  # one epoch; endless repeats
    (100.0, 1600)
    """
    if unique <= 0 or tokens < unique or r_star <= 0:
        raise ValueError(f"need 0 < unique <= tokens and r_star > 0, got {unique}, {tokens}, {r_star}")
    repeats = tokens / unique - 1
    return unique + unique * r_star * (1 - math.exp(-repeats / r_star))


def effective_data_sampled(unique: float, tokens: float, r_star: float) -> float:
    """:func:`effective_data` for a run that reads ``tokens`` at random positions, with replacement.

    Muennighoff et al.'s form assumes every unique token is read exactly ``tokens / unique``
    times. A run that draws its windows at random positions (as :func:`lmcourse.data.random_windows`
    does) reads each token ``k`` times with ``k`` about Poisson with mean ``lam = tokens / unique``:
    some never, some many times. A token read ``k >= 1`` times is worth
    ``1 + r_star * (1 - exp(-(k - 1) / r_star))`` fresh ones (``k - 1`` repeats), one never read is
    worth nothing; this is the expectation of that over ``k``,
    ``unique * ((1 - e^-lam)(1 + r_star) - r_star e^-lam (e^(lam q) - 1) / q)`` with
    ``q = exp(-1 / r_star)``. Repeats worth nothing (``r_star`` near 0) leave the tokens ever read,
    ``unique * (1 - e^-lam)``; repeats as good as new (``r_star`` large), all ``tokens``.

    >>> round(effective_data_sampled(1000, 1000, 1e-9))  # one "epoch": 1 - 1/e of the tokens ever read
    632
    >>> round(effective_data_sampled(1000, 5000, 1e9))  # repeats as good as new
    5000
    """
    if unique <= 0 or tokens <= 0 or r_star <= 0:
        raise ValueError(f"need unique > 0, tokens > 0 and r_star > 0, got {unique}, {tokens}, {r_star}")
    lam, q = tokens / unique, math.exp(-1 / r_star)
    # sum over k >= 1 of P(k) q^(k - 1) = e^-lam (e^(lam q) - 1) / q, written to survive q -> 0
    # (expm1 while lam q is small) and large lam (the difference of two exponentials otherwise)
    if q == 0:
        tail = lam * math.exp(-lam)
    elif lam * q < 50:
        tail = math.exp(-lam) * math.expm1(lam * q) / q
    else:
        tail = (math.exp(-lam * (1 - q)) - math.exp(-lam)) / q
    return unique * (-math.expm1(-lam) * (1 + r_star) - r_star * tail)
