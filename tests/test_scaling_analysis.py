"""The shared analysis of chapter 12's sweep (lmcourse.experiments.scaling_analysis), on hand-made runs with known
answers and on the stored sweep."""

import math
import statistics

import pytest
import torch

from lmcourse.experiments.scaling import grid_results
from lmcourse.experiments.scaling_analysis import (
    R_STAR_GRID,
    SHORT_STEPS,
    bracket,
    depth_sweep,
    epoch_groups,
    exponent,
    fit_r_star,
    interval,
    load_sweep,
    noise_interval,
    noise_intervals,
    pooled_sd,
    predicted_rise,
    r_star_interval,
    replicates,
    rises,
    seed_spreads,
    vertices,
    window_vertex,
)
from lmcourse.scaling_laws import LossLaw, effective_data_sampled, log_parabola


def profile(n_star, ns, curvature=0.05, floor=1.5):
    """Losses along a profile that is an exact parabola in ln N with its vertex at n_star."""
    return [floor + curvature * (math.log(n) - math.log(n_star)) ** 2 for n in ns]


def test_window_vertex_finds_an_exact_parabola_s_vertex_and_uses_only_its_window():
    ns = [1e3 * 2**i for i in range(9)]
    ls = profile(11_000.0, ns)
    assert window_vertex(ns, ls, 2) == pytest.approx(11_000.0, rel=1e-9)
    # far from the lowest run the profile is something else: a window of 2 does not see it, every size does
    bent = ls[:-1] + [ls[-1] + 0.5]
    assert window_vertex(ns, bent, 2) == pytest.approx(11_000.0, rel=1e-9)
    assert window_vertex(ns, bent, len(ns)) != pytest.approx(11_000.0, rel=1e-3)
    # the lowest run at an end leaves fewer than three sizes for k = 1
    assert window_vertex(ns, profile(1e3, ns), 1) is None
    with pytest.raises(ValueError, match="sizes but"):
        window_vertex(ns, ls[:-1])


def test_vertices_and_exponent_recover_a_known_power_law():
    budgets = [1e12, 1e13, 1e14]
    ns = [1e3 * 2**i for i in range(12)]
    prof = {C: [{"non_embedding_params": n, "params": 2 * n, "val_nats_per_char": loss}
                for n, loss in zip(ns, profile(5.0 * C**0.6 / 1e12**0.6 * 1e3, ns), strict=True)]
            for C in budgets}
    v = vertices(prof, 2)
    assert exponent(v) == pytest.approx(0.6, abs=1e-9)
    # other losses in place of the runs' own, and another count of N
    assert vertices(prof, 2, {C: profile(7e3, ns) for C in budgets}) == pytest.approx(dict.fromkeys(budgets, 7e3))
    assert vertices(prof, 2, count="params") == pytest.approx({C: 2 * x for C, x in v.items()})


def test_log_parabola_is_a_least_squares_fit_in_log_n():
    ns = [1e3, 3e3, 1e4, 3e4, 1e5]
    ls = [2.0, 1.8, 1.7, 1.75, 1.9]
    c2, c1, c0 = log_parabola(ns, ls)
    x = torch.tensor([math.log(n) for n in ns], dtype=torch.float64)
    X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
    ref = torch.linalg.pinv(X) @ torch.tensor(ls, dtype=torch.float64)  # an independent route
    assert [c2, c1, c0] == pytest.approx(ref.tolist(), rel=1e-8)
    assert math.exp(-c1 / (2 * c2)) == pytest.approx(window_vertex(ns, ls, 2), rel=1e-6)


def test_bracket_names_where_the_best_rate_lies():
    assert bracket({1e-3: 2.0, 2e-3: 1.9, 4e-3: 1.95}) == "bracketed"
    assert bracket({1e-3: 2.0, 2e-3: 1.9}) == "highest tried"
    assert bracket({1e-3: 1.8, 2e-3: 1.9}) == "lowest tried"
    assert bracket({1e-3: 1.8}) == "one rate"


def test_pooled_sd_weights_groups_by_their_degrees_of_freedom():
    groups = [[{"val_nats_per_char": v} for v in g] for g in ([1.0, 1.2, 1.4], [2.0, 2.1], [5.0])]
    ss = statistics.variance([1.0, 1.2, 1.4]) * 2 + statistics.variance([2.0, 2.1]) * 1
    assert pooled_sd(groups) == pytest.approx(math.sqrt(ss / 3), rel=1e-12)
    with pytest.raises(ValueError, match="two or more"):
        pooled_sd([[{"val_nats_per_char": 1.0}]])


def test_interval_is_the_middle_ninety_percent():
    lo, hi = interval([float(i) for i in range(101)])
    assert (lo, hi) == pytest.approx((5.0, 95.0))


@pytest.fixture(scope="module")
def sweep():
    return load_sweep()


def test_the_stored_sweep_groups_as_the_chapter_reads_it(sweep):
    assert sweep.budgets == sorted(sweep.by_budget)
    assert sweep.grid_runs == grid_results({"runs": sweep.runs})
    for C, prof in sweep.by_budget.items():
        ns = [r["non_embedding_params"] for r in prof]
        assert ns == sorted(ns) and all(r["budget"] == C for r in prof)
        for r in prof:  # each grid run is its size's best rate, and at_rate holds it
            got = sweep.at_rate[C, r["non_embedding_params"]]
            assert got[r["lr"]] == r["val_nats_per_char"] == min(got.values())
    one = sweep.profiles(sweep.lr0)
    assert all(r["lr"] == sweep.lr0 for p in one.values() for r in p)
    assert {C: len(p) for C, p in one.items()} == {C: len(p) for C, p in sweep.by_budget.items()}
    assert not {r["name"] for r in sweep.grid_runs} & set(sweep.held_names)


def test_replicates_count_a_stalled_seed_apart(sweep):
    reps, failed = replicates(sweep)
    assert all(len(g) >= 2 for g in reps.values())
    for r, low in failed:
        kept = reps[r["budget"], r["layers"], r["width"], r["lr"]]
        assert r not in kept and r["val_nats_per_char"] > low + 0.2
        assert min(x["val_nats_per_char"] for x in kept) == low
    spreads = seed_spreads(sweep)
    run = {"steps": SHORT_STEPS - 1}
    assert spreads.by_length(run) == spreads.short and spreads.by_length({"steps": SHORT_STEPS}) == spreads.long


def test_noise_interval_is_narrow_without_noise_and_reproducible(sweep):
    a = exponent(vertices(sweep.by_budget, 2))
    (lo, hi), kept = noise_interval(sweep, lambda r: 0.0, torch.Generator().manual_seed(0), draws=5)
    assert kept == 5 and lo == pytest.approx(a) and hi == pytest.approx(a)
    spreads = seed_spreads(sweep)
    first = noise_intervals(sweep, spreads, draws=20)
    again = noise_intervals(sweep, spreads, draws=20)  # the same draws: equal up to rounding
    assert list(again) == list(first)
    assert all(again[k][1] == first[k][1] and again[k][0] == pytest.approx(first[k][0], rel=1e-12) for k in first)
    (lo, hi), _ = first["replicates, pooled"]
    assert lo < a < hi


def test_rises_measure_from_one_epoch_with_two_standard_errors():
    runs = [{"lr": 0.01, "epochs": e, "val_nats_per_char": v}
            for e, vs in ((1.0, [1.0, 1.2, 1.1]), (4.0, [1.5, 1.3, 1.4])) for v in vs]
    runs.append({"lr": 0.02, "epochs": 4.0, "val_nats_per_char": 9.0})  # another rate: left out
    groups = epoch_groups(runs, 0.01)
    assert list(groups) == [1.0, 4.0] and groups[4.0].tolist() == [1.5, 1.3, 1.4]
    got = rises(groups)
    two_se = 2 * math.sqrt(statistics.variance([1.5, 1.3, 1.4]) / 3 + statistics.variance([1.0, 1.2, 1.1]) / 3)
    assert got[4.0] == pytest.approx((1.4, 0.3, two_se))
    assert got[1.0][1] == 0.0
    with pytest.raises(ValueError, match="one-epoch"):
        rises({4.0: groups[4.0]})


def test_fit_r_star_recovers_the_r_star_that_made_the_rises():
    law = LossLaw(E=1.2, A=7.0, alpha=0.3, B=3e4, beta=0.75)
    n, tokens = 2e5, 4e6
    r_true = R_STAR_GRID[200]
    means = {e: 2.0 + predicted_rise(law, n, tokens, e, r_true) for e in (1.0, 2.0, 4.0, 8.0, 16.0)}
    assert fit_r_star(law, n, tokens, means) == r_true
    # the rise by hand: the law at the effective data of tokens / e unique characters, less at one epoch
    d4 = effective_data_sampled(tokens / 4, tokens, r_true)
    assert predicted_rise(law, n, tokens, 4.0, r_true) == pytest.approx(
        law.B / d4**law.beta - law.B / effective_data_sampled(tokens, tokens, r_true) ** law.beta, rel=1e-12)
    # seeds that agree exactly leave no spread to redraw
    groups = {e: torch.tensor([m, m, m], dtype=torch.float64) for e, m in means.items()}
    assert r_star_interval(law, n, tokens, groups, draws=5) == pytest.approx((r_true, r_true))


def test_a_reader_s_own_sweep_of_one_budget_loads_and_gives_a_vertex(sweep):
    """What the chapter's 'try it' box does with `--out my_sweep.json`: a table of one budget's grid runs alone."""
    own = {"runs": {n: r for n, r in sweep.runs.items()
                    if r["budget"] == 1e12 and r["unique_chars"] is None and r["seed"] == 0 and r["lr"] == sweep.lr0}}
    mine = load_sweep(own)
    assert mine.budgets == [1e12] and not mine.data_all and not mine.held_runs
    v = vertices(mine.by_budget, 2)
    assert v[1e12] == pytest.approx(vertices(sweep.profiles(sweep.lr0), 2)[1e12])


def test_depth_sweep_keeps_the_grid_runs_of_one_depth_from_both_tables(sweep):
    def run(name, layers, n, loss, budget=1e12, lr=1e-2, unique=None):
        return name, {"name": name, "layers": layers, "width": 8 * layers, "budget": budget, "seed": 0, "lr": lr,
                      "unique_chars": unique, "non_embedding_params": n, "val_nats_per_char": loss}

    main = dict([run("one", 1, 100, 2.0), run("two", 2, 200, 1.9), run("two-hot", 2, 200, 1.8, lr=2e-2),
                 run("two-data", 2, 200, 1.7, unique=1000)])
    extra = dict([run("two-big", 2, 400, 1.95)])
    got = depth_sweep(2, {"runs": main}, {"runs": extra})
    # the one-layer run and the data-constrained run are left out; each size at its best rate
    assert sorted(got.runs) == ["two", "two-big", "two-hot"]
    assert [(r["name"], r["non_embedding_params"]) for r in got.by_budget[1e12]] == [("two-hot", 200), ("two-big", 400)]
    with pytest.raises(ValueError, match="no stored grid run has 3 layers"):
        depth_sweep(3, {"runs": main}, {"runs": extra})
    # the stored tables: every run two layers deep, the main sweep's two-layer grid runs all kept
    stored = depth_sweep(2)
    assert {r["layers"] for r in stored.runs.values()} == {2}
    assert {n for n, r in sweep.runs.items() if r["layers"] == 2 and r["unique_chars"] is None} <= set(stored.runs)
