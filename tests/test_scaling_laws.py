"""Scaling-law fits against known laws: synthetic runs, brute-force optima and hand-worked cases."""

import math

import pytest
import torch

from lmcourse.scaling_laws import (
    LossLaw,
    bootstrap,
    chinchilla,
    compute_optimal,
    effective_data,
    effective_data_sampled,
    fit_loss_law,
    isoflop_minimum,
    law_objective,
    power_law,
    power_law_floor,
)

TRUE = LossLaw(E=1.1, A=60.0, alpha=0.45, B=90.0, beta=0.32)


def synthetic_runs(law: LossLaw, noise: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N, D, L = [], [], []
    for n in (1e4, 3e4, 1e5, 3e5, 1e6):
        for d in (1e5, 1e6, 1e7, 1e8):
            N.append(n)
            D.append(d)
            L.append(law(n, d) * math.exp(noise * torch.randn(1, generator=g).item()))
    return N, D, L


@pytest.mark.slow  # 72 fits from a grid of starting points
def test_the_fit_recovers_a_known_law_from_noisy_runs():
    fit = fit_loss_law(*synthetic_runs(TRUE, noise=0.003))
    assert abs(fit.alpha - TRUE.alpha) < 0.05 and abs(fit.beta - TRUE.beta) < 0.05, fit
    assert abs(fit.E - TRUE.E) < 0.05, fit
    N, D, _ = synthetic_runs(TRUE, noise=0.0)
    assert max(abs(fit(n, d) / TRUE(n, d) - 1) for n, d in zip(N, D, strict=True)) < 0.01


@pytest.mark.slow
def test_the_huber_loss_keeps_one_bad_run_from_moving_the_fit():
    N, D, L = synthetic_runs(TRUE, noise=0.0)
    L[3] *= 1.5  # one diverged run
    fit = fit_loss_law(N, D, L)
    assert abs(fit.alpha - TRUE.alpha) < 0.02 and abs(fit.beta - TRUE.beta) < 0.02, fit


def test_the_compute_optimal_split_is_the_minimum_found_by_search():
    for C in (1e12, 1e15, 1e18):
        n_star, d_star = compute_optimal(TRUE, C)
        assert math.isclose(6 * n_star * d_star, C, rel_tol=1e-9)
        grid = [10 ** (k / 2000) for k in range(2000 * 2, 2000 * 12)]  # N from 1e2 to 1e12
        best = min(grid, key=lambda n: TRUE(n, C / (6 * n)))
        assert abs(math.log(best / n_star)) < 2e-3


def test_the_isoflop_vertex_of_an_exact_parabola_in_log_n():
    N = [1e3, 1e4, 1e5, 1e6, 1e7]
    L = [2.0 + 0.1 * (math.log(n) - math.log(4e4)) ** 2 for n in N]
    assert math.isclose(isoflop_minimum(N, L), 4e4, rel_tol=1e-9)
    with pytest.raises(ValueError, match="no minimum"):
        isoflop_minimum(N, [-x for x in L])


def test_chinchilla_s_own_numbers():
    law = chinchilla()
    assert law.alpha > law.beta  # their fit: model size pays off faster than data, per power
    n_star, _ = compute_optimal(law, 5.76e23)
    assert 2e10 < n_star < 5e10  # tens of billions of parameters at Gopher's compute, not 280B


def test_power_law_and_effective_data_by_hand():
    k, p = power_law([2, 4, 8], [3 * 2**0.5, 6, 3 * 8**0.5])
    assert math.isclose(k, 3) and math.isclose(p, 0.5)
    assert effective_data(1000, 1000, 10.0) == 1000  # no repeats: all fresh
    assert math.isclose(effective_data(1000, 2000, 1e9), 2000, rel_tol=1e-6)  # repeats as good as new
    epochs = (1, 2, 4, 8, 16, 1000)
    values = [effective_data(1000, 1000 * e, 5.0) for e in epochs]
    assert values == sorted(values) and values[-1] <= 1000 * (1 + 5.0)  # more reads help, up to (1 + R*) U
    per_read = [v / (1000 * e) for v, e in zip(values, epochs, strict=True)]
    assert per_read == sorted(per_read, reverse=True)  # ... and each read is worth less


def test_a_frontier_with_a_floor_recovers_a_known_curve_and_beats_the_straight_line():
    xs = [1e12, 3e12, 1e13, 3e13, 1e14]
    ys = [1.2 + 40.0 * x**-0.1 for x in xs]
    E, k, p = power_law_floor(xs, ys)
    assert abs(E - 1.2) < 2e-3 and abs(p + 0.1) < 0.01  # the grid of floors is min(y) / 2001 apart
    # a floor-free line misses the same points by more, and predicts lower far out
    k0, p0 = power_law(xs, ys)
    miss = sum((E + k * x**p - y) ** 2 for x, y in zip(xs, ys, strict=True))
    miss0 = sum((k0 * x**p0 - y) ** 2 for x, y in zip(xs, ys, strict=True))
    assert miss < miss0
    assert k0 * 1e16**p0 < E + k * 1e16**p < 1.2 + 40.0 * 1e16**-0.1 + 0.01
    # with no floor in the data the fit keeps E at (about) zero and agrees with power_law
    E2, k2, p2 = power_law_floor([1, 10, 100], [5.0, 2.5, 1.25])
    assert E2 < 0.01 and abs(p2 - math.log10(0.5)) < 0.01
    with pytest.raises(ValueError, match="at least 3 points"):
        power_law_floor([1, 2], [3, 2])


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 5 runs"):
        fit_loss_law([1, 2], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="unique"):
        effective_data(100, 50, 5.0)


def test_bootstrap_refits_resamples_and_brackets_the_truth():
    N, D, L = synthetic_runs(TRUE, noise=0.003, seed=1)
    start = LossLaw(E=1.12, A=55.0, alpha=0.44, B=95.0, beta=0.33)  # near the truth, as a full fit would be
    fits = bootstrap(N, D, L, start, samples=30, seed=0)
    assert len(fits) == 30 and fits == bootstrap(N, D, L, start, samples=30, seed=0)  # seeded
    alphas = sorted(f.alpha for f in fits)
    betas = sorted(f.beta for f in fits)
    assert alphas[0] < alphas[-1] and betas[0] < betas[-1]  # resamples differ, so the refits do
    # a 90% interval (the 2nd to the 28th of 30) that holds the true exponents
    assert alphas[1] - 0.02 < TRUE.alpha < alphas[-2] + 0.02 and betas[1] - 0.02 < TRUE.beta < betas[-2] + 0.02
    # noise-free runs: every resample is fitted exactly by the true law, so every refit finds it
    exact = bootstrap(*synthetic_runs(TRUE, noise=0.0), TRUE, samples=5, seed=3)
    assert all(abs(f.alpha - TRUE.alpha) < 1e-3 and abs(f.beta - TRUE.beta) < 1e-3 for f in exact)
    with pytest.raises(ValueError, match="samples"):
        bootstrap(N, D, L, TRUE, samples=0)


def test_bootstrap_extra_starts_keep_the_resamples_and_never_fit_worse():
    N = [1e4, 1e4, 1e5, 1e5, 1e6, 1e6, 3e5, 3e4]
    D = [1e6, 1e7, 1e6, 1e7, 1e6, 1e7, 3e6, 3e7]
    truth = LossLaw(E=1.0, A=50.0, alpha=0.4, B=80.0, beta=0.3)
    L = [truth(n, d) * (1.02 if i == 3 else 1.0) for i, (n, d) in enumerate(zip(N, D, strict=True))]
    one = bootstrap(N, D, L, truth, samples=3, seed=1)
    more = bootstrap(N, D, L, truth, samples=3, seed=1, extra_starts=2)
    g = torch.Generator().manual_seed(1)
    for f, h in zip(one, more, strict=True):
        pick = torch.randint(len(N), (len(N),), generator=g).tolist()
        sub = ([N[i] for i in pick], [D[i] for i in pick], [L[i] for i in pick])
        assert law_objective(h, *sub) <= law_objective(f, *sub) + 1e-12


def test_effective_data_sampled_is_the_poisson_expectation_of_muennighoffs_form():
    """Against a float64 sum over k of P(k) times the worth of a token read k times."""
    def by_sum(unique, tokens, r_star):
        lam = tokens / unique
        total = 0.0
        for k in range(1, 400):
            p = math.exp(k * math.log(lam) - lam - math.lgamma(k + 1))
            total += p * (1 + r_star * (1 - math.exp(-(k - 1) / r_star)))
        return unique * total

    for unique, tokens, r_star in [(1000, 1000, 15.4), (250_112, 4_001_792, 15.4), (1e6, 3e6, 0.5),
                                   (500, 200, 5.0), (2e5, 4e6, 100.0)]:
        assert math.isclose(effective_data_sampled(unique, tokens, r_star), by_sum(unique, tokens, r_star),
                            rel_tol=1e-9)
    # the two limits: repeats worth nothing keep the tokens ever read; repeats as good as new, all
    assert math.isclose(effective_data_sampled(1000, 3000, 1e-9), 1000 * (1 - math.exp(-3)), rel_tol=1e-8)
    assert math.isclose(effective_data_sampled(1000, 3000, 1e9), 3000, rel_tol=1e-6)
    # endless reads: every token read many times is worth 1 + r_star, as in the exact form
    assert math.isclose(effective_data_sampled(1000, 1e12, 15.0), effective_data(1000, 1e12, 15.0), rel_tol=1e-9)
    assert math.isclose(effective_data_sampled(1000, 4e4 * 1000, 15.4), 1000 * 16.4, rel_tol=1e-6)
    # below exactly repeated reads: a random reader misses some tokens and piles reads on others
    assert effective_data_sampled(1000, 4000, 15.4) < effective_data(1000, 4000, 15.4)
    with pytest.raises(ValueError, match="unique > 0"):
        effective_data_sampled(0, 10, 1.0)


def test_a_fixed_floor_fits_the_other_four_numbers():
    truth = LossLaw(E=1.2, A=40.0, alpha=0.35, B=300.0, beta=0.3)
    N = [n for n in (1e4, 3e4, 1e5, 3e5, 1e6) for _ in range(3)]
    D = [d for _ in range(5) for d in (1e7, 1e8, 1e9)]
    L = [truth(n, d) for n, d in zip(N, D, strict=True)]
    held = fit_loss_law(N, D, L, floor=1.2)
    assert held.E == pytest.approx(1.2, rel=1e-12)  # not fitted
    for k in ("A", "alpha", "B", "beta"):
        assert getattr(held, k) == pytest.approx(getattr(truth, k), rel=1e-3), k
    # a floor held away from the truth fits worse than the free fit, and moves the exponents
    wrong = fit_loss_law(N, D, L, floor=0.6)
    assert law_objective(wrong, N, D, L) > 100 * law_objective(held, N, D, L) + 1e-12
    assert abs(wrong.alpha - truth.alpha) > 0.01
    with pytest.raises(ValueError, match="between 0 and the lowest loss"):
        fit_loss_law(N, D, L, floor=min(L))
