"""Chapter 12's exercises: every plausible wrong answer costs its own task points, and only those.

Each fixture ``tests/grading_fixtures/wrong_answers/12_*.ipynb`` is the solutions
notebook with one function's solution region replaced by a wrong answer (the table
:data:`WRONG_ANSWERS`); a ``*_calls_package`` one answers by calling what its task
forbids and must score 0 there. After the solutions change, rewrite them with
``python tests/test_exercises_12.py``; a fast test says when they are out of date.
The solution's full marks and the untouched exercise's zero are asserted for every
chapter by ``tests/test_grading.py``; every test reads the chapter's one grading
batch (``tests/chapter_grades.py``).
"""

from pathlib import Path

import nbformat
import pytest
from chapter_grades import grades_of, group
from test_exercises import (  # the one fixture builder and its checks, for every chapter
    assert_table_answer_costs_its_task,
    assert_table_covers_every_task,
    assert_table_fixtures_current,
    write_table_fixtures,
)

from lmcourse.course.exercises import SOLUTIONS_DIR

SOLUTION = SOLUTIONS_DIR / "12_scaling.ipynb"
FIXTURES = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

# fixture name: (task, function whose solution region is replaced, wrong body,
# a fragment of the message of the check that must catch it)
WRONG_ANSWERS = {
    "12_floor_forgotten": ("floor", "fit_with_floor", """
        # a straight line in log-log space: no floor
        lx = torch.as_tensor(x, dtype=torch.float64).log()
        ly = torch.as_tensor(y, dtype=torch.float64).log()
        X = torch.stack([torch.ones_like(lx), lx], dim=1)
        c = torch.linalg.lstsq(X, ly[:, None]).solution[:, 0]
        return 0.0, math.exp(c[0].item()), -c[1].item()
    """, "fit the floor, do not drop it"),
    "12_floor_squares_not_huber": ("floor", "fit_with_floor", """
        # the right curve and a good search, but least squares: the bad run pulls it
        x = torch.as_tensor(x, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        lx, ly = x.log(), y.log()

        def objective(p):
            return ((torch.log(p[2] + (p[0] - p[1] * lx).exp()) - ly) ** 2).sum()

        X = torch.stack([torch.ones_like(lx), -lx], dim=1)
        best = None
        for E in (y.min() * torch.linspace(0, 0.99, 100, dtype=torch.float64)).tolist():
            c = torch.linalg.lstsq(X, (y - E).log()[:, None]).solution[:, 0]
            p = torch.tensor([c[0].item(), c[1].item(), E], dtype=torch.float64)
            if best is None or objective(p).item() < best[0]:
                best = (objective(p).item(), p)
        p = best[1].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([p], max_iter=500, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            v = objective(p)
            v.backward()
            return v

        opt.step(closure)
        ln_a, alpha, E = p.detach().tolist()
        return E, math.exp(ln_a), alpha
    """, "minimise the Huber loss of the log residuals"),
    "12_floor_grid_only": ("floor", "fit_with_floor", """
        # only the first step: the best E of a grid, each with a line in ln(y - E)
        x = torch.as_tensor(x, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        X = torch.stack([torch.ones_like(x), -x.log()], dim=1)
        best = None
        for E in (y.min() * torch.linspace(0, 0.99, 100, dtype=torch.float64)).tolist():
            c = torch.linalg.lstsq(X, (y - E).log()[:, None]).solution[:, 0]
            r = (E + c[0].exp() * x ** -c[1]).log() - y.log()
            a = r.abs()
            v = torch.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)).sum().item()
            if best is None or v < best[0]:
                best = (v, E, math.exp(c[0].item()), c[1].item())
        return best[1], best[2], best[3]
    """, "minimise the Huber loss of the log residuals"),
    "12_floor_calls_package": ("floor", "fit_with_floor", """
        from lmcourse.scaling_laws import power_law

        best = None
        for k in range(400):  # a grid over E, a line through y - E for each
            E = min(y) * k / 400
            A, p = power_law(list(x), [v - E for v in y])
            err = sum(abs(math.log(E + A * u ** p) - math.log(v)) for u, v in zip(x, y))
            if best is None or err < best[0]:
                best = (err, E, A, -p)
        return float(best[1]), float(best[2]), float(best[3])
    """, "must not call lmcourse.scaling_laws.power_law"),
    "12_forward_in_sample": ("floor", "forward_errors", """
        # the residuals of one fit to every run: the runs it predicts were in its fit
        E, A, alpha = fit_with_floor(x, y, delta)
        xs_, ys_ = [float(v) for v in x], [float(v) for v in y]
        return {i: math.log(E + A * xs_[i] ** -alpha) - math.log(ys_[i])
                for i in range(len(xs_)) if sum(u < xs_[i] for u in xs_) >= m}
    """, "is predicted from the four exact runs before it"),
    "12_forward_leave_one_out": ("floor", "forward_errors", """
        # leave one out: the larger runs help predict the smaller ones
        xs_, ys_ = [float(v) for v in x], [float(v) for v in y]
        out = {}
        for i in range(len(xs_)):
            if sum(u < xs_[i] for u in xs_) < m:
                continue
            rest = [j for j in range(len(xs_)) if j != i]
            E, A, alpha = fit_with_floor([xs_[j] for j in rest], [ys_[j] for j in rest], delta)
            out[i] = math.log(E + A * xs_[i] ** -alpha) - math.log(ys_[i])
        return out
    """, "fit each run's prediction to the runs smaller than it only"),
    "12_forward_table_order": ("floor", "forward_errors", """
        # the runs taken as sorted: the ones before a run in the table are not the smaller ones
        xs_, ys_ = [float(v) for v in x], [float(v) for v in y]
        out = {}
        for i in range(m, len(xs_)):
            E, A, alpha = fit_with_floor(xs_[:i], ys_[:i], delta)
            out[i] = math.log(E + A * xs_[i] ** -alpha) - math.log(ys_[i])
        return out
    """, "find each run's smaller runs by x, not by position"),
    "12_capped_ignores_cap": ("capped", "capped_split", """
        a, b = law["alpha"], law["beta"]
        G = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
        n = G * (C / 6) ** (b / (a + b))  # every token counted as fresh
        return n, C / (6 * n)
    """, "the lowest loss with D' for D"),
    "12_capped_never_repeat": ("capped", "capped_split", """
        a, b = law["alpha"], law["beta"]
        G = (a * law["A"] / (b * law["B"])) ** (1 / (a + b))
        n = G * (C / 6) ** (b / (a + b))
        if C / (6 * n) > unique:  # read the data once, put the rest into N
            n = C / (6 * unique)
        return n, C / (6 * n)
    """, "repeats are worth something"),
    "12_capped_epochs_for_repeats": ("capped", "capped_split", """
        def effective(d):
            if d <= unique:
                return d
            repeats = d / unique  # epochs, not repeats
            return unique + unique * r_star * (1 - math.exp(-repeats / r_star))

        def loss(log_n):
            n = math.exp(log_n)
            return law["A"] * n ** -law["alpha"] + law["B"] * effective(C / (6 * n)) ** -law["beta"]

        lo, hi = 0.0, math.log(C / 6)
        for _ in range(200):
            m1, m2 = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
            if loss(m1) < loss(m2):
                hi = m2
            else:
                lo = m1
        n = math.exp((lo + hi) / 2)
        return n, C / (6 * n)
    """, "repeats are worth something"),
    "12_capped_calls_package": ("capped", "capped_split", """
        from lmcourse.scaling_laws import LossLaw, compute_optimal

        return compute_optimal(LossLaw(**law), C)
    """, "must not call lmcourse.scaling_laws.compute_optimal"),
    "12_floor_single_start": ("floor", "fit_with_floor", """
        # one start, the log-log line (E = 0), polished on the right objective
        x = torch.as_tensor(x, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        lx, ly = x.log(), y.log()

        def objective(p):
            r = torch.log(p[2] + (p[0] - p[1] * lx).exp()) - ly
            a = r.abs()
            return torch.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)).sum()

        X = torch.stack([torch.ones_like(lx), -lx], dim=1)
        c = torch.linalg.lstsq(X, ly[:, None]).solution[:, 0]
        p = torch.tensor([c[0].item(), c[1].item(), 0.0], dtype=torch.float64)
        p.requires_grad_(True)
        opt = torch.optim.LBFGS([p], max_iter=1000, tolerance_grad=1e-15, tolerance_change=1e-17,
                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            v = objective(p)
            v.backward()
            return v

        opt.step(closure)
        ln_a, alpha, E = p.detach().tolist()
        return E, math.exp(ln_a), alpha
    """, "the objective has more than one minimum"),
    "12_vertex_best_run": ("isoflop", "vertex_interval", """
        x = torch.as_tensor(N, dtype=torch.float64).log()
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        if c2 <= 0:
            return ()
        x0 = x[y.argmin()].item()  # the lowest run, not the parabola's vertex
        half = z * sd / (2 * c2 * math.sqrt(((x - x.mean()) ** 2).sum().item()))
        return math.exp(x0), math.exp(x0 - half), math.exp(x0 + half)
    """, "the vertex need not be a run"),
    "12_vertex_linear_n": ("isoflop", "vertex_interval", """
        x = torch.as_tensor(N, dtype=torch.float64)  # N itself, not ln N
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        if c2 <= 0:
            return ()
        x0 = -c1 / (2 * c2)
        return x0, x0 * math.exp(-z * sd), x0 * math.exp(z * sd)
    """, "fit against ln N"),
    "12_vertex_curvature_only": ("isoflop", "vertex_interval", """
        x = torch.as_tensor(N, dtype=torch.float64).log()
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        if c2 <= 0:
            return ()
        x0 = -c1 / (2 * c2)
        half = math.sqrt(z * sd / c2)  # where the parabola rises by z sd: not the vertex's error
        return math.exp(x0), math.exp(x0 - half), math.exp(x0 + half)
    """, "expected ln N within"),
    "12_vertex_no_covariance": ("isoflop", "vertex_interval", """
        x = torch.as_tensor(N, dtype=torch.float64).log()
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        if c2 <= 0:
            return ()
        x0 = -c1 / (2 * c2)
        var = (sd**2 * torch.linalg.inv(X.T @ X)).diagonal().tolist()
        # c1 and c2 taken as independent
        se = math.sqrt((c1 / (2 * c2**2)) ** 2 * var[0] + (1 / (2 * c2)) ** 2 * var[1])
        return math.exp(x0), math.exp(x0 - z * se), math.exp(x0 + z * se)
    """, "expected ln N within"),
    "12_envelope_every_rate_in_one_fit": ("isoflop", "envelope_minima", """
        profiles = {}
        for r in runs.values():  # every rate's runs in one parabola
            if r["unique_chars"] is None:
                profiles.setdefault(r["budget"], []).append(r)
        out = {}
        for C, prof in sorted(profiles.items()):
            if len({r["non_embedding_params"] for r in prof}) >= 3:
                got = vertex_interval([r["non_embedding_params"] for r in prof],
                                      [r["val_nats_per_char"] for r in prof], 0.0, 0.0)
                if got:
                    out[C] = got[0]
        return out
    """, "the lowest loss per size"),
    "12_envelope_default_rate_only": ("isoflop", "envelope_minima", """
        profiles = {}
        for r in runs.values():  # the grid's one rate, not each size's best
            if r["unique_chars"] is None and r["lr"] == 2.5e-3:
                profiles.setdefault(r["budget"], []).append(r)
        out = {}
        for C, prof in sorted(profiles.items()):
            if len(prof) >= 3:
                got = vertex_interval([r["non_embedding_params"] for r in prof],
                                      [r["val_nats_per_char"] for r in prof], 0.0, 0.0)
                if got:
                    out[C] = got[0]
        return out
    """, "expected the budgets 1e12 and 1e13 only"),
    "12_envelope_lucky_seed": ("isoflop", "envelope_minima", """
        best = {}  # the lowest run per size: a lucky seed wins
        for r in runs.values():
            if r["unique_chars"] is None:
                key = (r["budget"], r["non_embedding_params"])
                best[key] = min(best.get(key, math.inf), r["val_nats_per_char"])
        profiles = {}
        for (C, n), loss in sorted(best.items()):
            profiles.setdefault(C, []).append((n, loss))
        out = {}
        for C, prof in profiles.items():
            if len(prof) >= 3:
                got = vertex_interval([n for n, _ in prof], [v for _, v in prof], 0.0, 0.0)
                if got:
                    out[C] = got[0]
        return out
    """, "a rate's seeds averaged"),
    "12_envelope_keeps_failed_seeds": ("isoflop", "envelope_minima", """
        seeds = {}  # every seed in the mean, a run that failed to train included
        for r in runs.values():
            if r["unique_chars"] is None:
                seeds.setdefault((r["budget"], r["non_embedding_params"], r["lr"]), []).append(
                    r["val_nats_per_char"])
        best = {}
        for (C, n, _), losses in seeds.items():
            best[C, n] = min(best.get((C, n), math.inf), sum(losses) / len(losses))
        profiles = {}
        for (C, n), loss in sorted(best.items()):
            profiles.setdefault(C, []).append((n, loss))
        out = {}
        for C, prof in profiles.items():
            if len(prof) >= 3:
                got = vertex_interval([n for n, _ in prof], [v for _, v in prof], 0.0, 0.0)
                if got:
                    out[C] = got[0]
        return out
    """, "leaving out a seed that failed to train"),
    "12_envelope_keeps_data_runs": ("isoflop", "envelope_minima", """
        seeds = {}
        for r in runs.values():  # the data-constrained runs too
            key = (r["budget"], r["non_embedding_params"], r["lr"])
            seeds.setdefault(key, []).append(r["val_nats_per_char"])
        best = {}
        for (C, n, _), losses in seeds.items():
            kept = [v for v in losses if v <= min(losses) + 0.2]
            best[C, n] = min(best.get((C, n), math.inf), sum(kept) / len(kept))
        profiles = {}
        for (C, n), loss in sorted(best.items()):
            profiles.setdefault(C, []).append((n, loss))
        out = {}
        for C, prof in profiles.items():
            if len(prof) >= 3:
                got = vertex_interval([n for n, _ in prof], [v for _, v in prof], 0.0, 0.0)
                if got:
                    out[C] = got[0]
        return out
    """, "keep runs on all the text"),
    "12_envelope_windowed": ("isoflop", "envelope_minima", """
        best = {}
        for r in runs.values():
            if r["unique_chars"] is None:
                key = (r["budget"], r["non_embedding_params"])
                best[key] = min(best.get(key, math.inf), r["val_nats_per_char"])
        profiles = {}
        for (C, n), loss in sorted(best.items()):
            profiles.setdefault(C, []).append((n, loss))
        out = {}
        for C, prof in profiles.items():
            if len(prof) >= 3:
                i = min(range(len(prof)), key=lambda j: prof[j][1])
                near = prof[max(0, i - 2):i + 3]  # the chapter's window, not every size
                if len(near) >= 3:
                    got = vertex_interval([n for n, _ in near], [v for _, v in near], 0.0, 0.0)
                    if got:
                        out[C] = got[0]
        return out
    """, "one parabola through every size"),
    "12_envelope_assumes_a_minimum": ("isoflop", "envelope_minima", """
        best = {}
        for r in runs.values():
            if r["unique_chars"] is None:
                key = (r["budget"], r["non_embedding_params"])
                best[key] = min(best.get(key, math.inf), r["val_nats_per_char"])
        profiles = {}
        for (C, n), loss in sorted(best.items()):
            profiles.setdefault(C, []).append((n, loss))
        return {C: vertex_interval([n for n, _ in prof], [v for _, v in prof], 0.0, 0.0)[0]
                for C, prof in profiles.items() if len(prof) >= 3}
    """, "IndexError"),
    "12_isoflop_calls_package": ("isoflop", "vertex_interval", """
        from lmcourse.scaling_laws import isoflop_minimum

        n = isoflop_minimum(N, L)
        return n, n, n
    """, "must not call lmcourse.scaling_laws.isoflop_minimum"),
    "12_approach1_nearest_evaluation": ("approach1", "approach1", """
        curves = []
        for r in runs.values():
            if r["unique_chars"] is not None or r["lr"] != lr:
                continue
            n = r["non_embedding_params"]
            h = r["history"]
            curves.append((n, [(math.log(6 * n * d), v) for d, v in zip(h["tokens"], h["val_loss"]) if d > 0]))
        out = {}
        for C in budgets:
            x, best = math.log(C), None
            for n, points in curves:
                if points[0][0] <= x <= points[-1][0]:
                    y = min(points, key=lambda p: abs(p[0] - x))[1]  # the nearest evaluation
                    if best is None or y < best[1]:
                        best = (float(n), float(y))
            if best is not None:
                out[C] = best
        return out
    """, "read the curve between its two evaluations"),
    "12_approach1_every_rate": ("approach1", "approach1", """
        curves = []
        for r in runs.values():  # every learning rate
            if r["unique_chars"] is not None:
                continue
            n = r["non_embedding_params"]
            h = r["history"]
            curves.append((n, [(math.log(6 * n * d), v) for d, v in zip(h["tokens"], h["val_loss"]) if d > 0]))
        out = {}
        for C in budgets:
            x, best = math.log(C), None
            for n, points in curves:
                for (x0, y0), (x1, y1) in zip(points, points[1:]):
                    if x0 <= x <= x1:
                        y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                        if best is None or y < best[1]:
                            best = (float(n), float(y))
                        break
            if best is not None:
                out[C] = best
        return out
    """, "only runs on the whole text at the given rate"),
    "12_approach1_extrapolates": ("approach1", "approach1", """
        curves = []
        for r in runs.values():
            if r["unique_chars"] is not None or r["lr"] != lr:
                continue
            n = r["non_embedding_params"]
            h = r["history"]
            curves.append((n, [(math.log(6 * n * d), v) for d, v in zip(h["tokens"], h["val_loss"]) if d > 0]))
        out = {}
        for C in budgets:
            x, best = math.log(C), None
            for n, points in curves:  # past a curve's ends: its nearest end
                if x <= points[0][0]:
                    y = points[0][1]
                elif x >= points[-1][0]:
                    y = points[-1][1]
                else:
                    j = next(j for j in range(1, len(points)) if points[j][0] >= x)
                    (x0, y0), (x1, y1) = points[j - 1], points[j]
                    y = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
                if best is None or y < best[1]:
                    best = (float(n), float(y))
            out[C] = best
        return out
    """, "leave out a budget no curve reaches"),
    "12_approach1_finished_runs": ("approach1", "approach1", """
        # approach 2's view: the best finished run whose compute is at most C
        out = {}
        for C in budgets:
            best = None
            for r in runs.values():
                if r["unique_chars"] is not None or r["lr"] != lr:
                    continue
                n, h = r["non_embedding_params"], r["history"]
                if 6 * n * h["tokens"][-1] <= C and (best is None or h["val_loss"][-1] < best[1]):
                    best = (float(n), float(h["val_loss"][-1]))
            if best is not None:
                out[C] = best
        return out
    """, "leave out a budget no curve reaches"),
    "12_permutation_two_sided": ("repeats", "permutation_p", """
        import itertools

        pooled = [*base, *other]
        n, k = len(pooled), len(other)
        observed = sum(other) / k - sum(base) / len(base)
        hits = total = 0
        for idx in itertools.combinations(range(n), k):
            o = [pooled[i] for i in idx]
            b = [pooled[i] for i in range(n) if i not in idx]
            total += 1
            hits += abs(sum(o) / k - sum(b) / len(b)) >= abs(observed) - 1e-12  # two-sided
        return hits / total
    """, "expected 1/3"),
    "12_permutation_strict": ("repeats", "permutation_p", """
        import itertools

        pooled = [*base, *other]
        observed = sum(other)
        tol = 1e-9 * sum(abs(x) for x in pooled)
        hits = total = 0
        for chosen in itertools.combinations(pooled, len(other)):
            total += 1
            hits += sum(chosen) > observed + tol  # strictly more: ties left out
        return hits / total
    """, "expected 1/3"),
    "12_permutation_distinct_groups": ("repeats", "permutation_p", """
        import itertools

        pooled = [*base, *other]
        observed = sum(other)
        tol = 1e-9 * sum(abs(x) for x in pooled)
        # each distinct group of values once: runs with equal losses merged
        choices = {tuple(sorted(c)) for c in itertools.combinations(pooled, len(other))}
        hits = sum(sum(c) >= observed - tol for c in choices)
        return hits / len(choices)
    """, "runs are told apart by position"),
    "12_permutation_leaves_out_observed": ("repeats", "permutation_p", """
        import itertools

        pooled = [*base, *other]
        n, k = len(pooled), len(other)
        observed = sum(other)
        tol = 1e-9 * sum(abs(x) for x in pooled)
        hits = total = 0
        for idx in itertools.combinations(range(n), k):
            if idx == tuple(range(n - k, n)):  # the observed split is not a permutation
                continue
            total += 1
            hits += sum(pooled[i] for i in idx) >= observed - tol
        return hits / total if total else 1.0
    """, "expected 1/3"),
    "12_permutation_float_ties": ("repeats", "permutation_p", """
        import itertools

        pooled = [*base, *other]
        n, k = len(pooled), len(other)
        observed = sum(other) / k - sum(base) / len(base)
        hits = total = 0
        for idx in itertools.combinations(range(n), k):
            o = [pooled[i] for i in idx]
            b = [pooled[i] for i in range(n) if i not in idx]
            total += 1
            hits += sum(o) / k - sum(b) / len(b) >= observed  # float means, compared as they come
        return hits / total
    """, "a tie, which counts as at least the observed one"),
    "12_permutation_exact_sums": ("repeats", "permutation_p", """
        import itertools

        pooled = [*base, *other]
        observed = math.fsum(other)  # exact sums of the floats: 0.2 + 0.4 > 0.1 + 0.5
        hits = total = 0
        for chosen in itertools.combinations(pooled, len(other)):
            total += 1
            hits += math.fsum(chosen) >= observed
        return hits / total
    """, "a tie, which counts as at least the observed one"),
    "12_permutation_normal": ("repeats", "permutation_p", """
        def mean_var(v):
            m = sum(v) / len(v)
            return m, (sum((x - m) ** 2 for x in v) / (len(v) - 1) if len(v) > 1 else 0.0)

        mb, vb = mean_var(base)  # Welch's statistic, the normal tail: an approximation
        mo, vo = mean_var(other)
        se = math.sqrt(vb / len(base) + vo / len(other))
        if se == 0:
            return 0.5 if mo == mb else float(mo < mb)
        return 0.5 * math.erfc((mo - mb) / se / math.sqrt(2))
    """, "expected 1/3"),
    "12_permutation_sampled": ("repeats", "permutation_p", """
        pooled = torch.tensor([*base, *other], dtype=torch.float64)
        k = len(other)
        observed = pooled[len(base):].sum().item()
        tol = 1e-9 * pooled.abs().sum().item()
        g = torch.Generator().manual_seed(0)
        hits = 0
        for _ in range(2000):  # random relabellings, not every one
            chosen = pooled[torch.randperm(len(pooled), generator=g)[:k]]
            hits += chosen.sum().item() >= observed - tol
        return hits / 2000
    """, "expected 1/3"),
    "12_permutation_scipy": ("repeats", "permutation_p", """
        from scipy.stats import permutation_test

        def statistic(o, b):
            return sum(o) / len(o) - sum(b) / len(b)

        res = permutation_test((other, base), statistic, permutation_type="independent",
                               alternative="greater", n_resamples=10**6)
        return float(res.pvalue)
    """, "which this task does not allow"),
    "12_permutation_statistics": ("repeats", "permutation_p", """
        from statistics import NormalDist, mean, stdev

        se = math.sqrt(stdev(base) ** 2 / len(base) + stdev(other) ** 2 / len(other))
        return 1 - NormalDist().cdf((mean(other) - mean(base)) / se)
    """, "which this task does not allow"),
    "12_repeats_two_se": ("repeats", "measured_from", """
        def mean_var(v):
            m = sum(v) / len(v)
            return m, sum((x - m) ** 2 for x in v) / (len(v) - 1)

        m1, v1 = mean_var(groups[1])
        found = 0
        for e in sorted((e for e in groups if e > 1), reverse=True):
            m, v = mean_var(groups[e])
            if m - m1 <= 2 * math.sqrt(v / len(groups[e]) + v1 / len(groups[1])):  # the chapter's rule
                break
            found = e
        return found
    """, "whatever two standard errors say"),
    "12_repeats_strict_alpha": ("repeats", "measured_from", """
        found = 0
        for e in sorted((e for e in groups if e > 1), reverse=True):
            if not permutation_p(groups[1], groups[e]) < alpha:  # p = alpha is not enough
                break
            found = e
        return found
    """, "expected 4"),
    "12_repeats_swapped": ("repeats", "measured_from", """
        found = 0
        for e in sorted((e for e in groups if e > 1), reverse=True):
            if permutation_p(groups[e], groups[1]) > alpha:  # the groups swapped: a fall
                break
            found = e
        return found
    """, "expected 4"),
    "12_repeats_first_crossing": ("repeats", "measured_from", """
        for e in sorted(e for e in groups if e > 1):  # the first crossing, not a lasting one
            if permutation_p(groups[1], groups[e]) <= alpha:
                return e
        return 0
    """, "and every larger one"),
    "12_bracket_fixed_sweep": ("bracket", "bracket_lr", """
        # a fixed sweep, four factors either side of lr0
        tried = {}
        for k in range(-4, 5):
            lr = lr0 * factor**k
            tried[lr] = loss_at(lr)
        finite = {lr: v for lr, v in tried.items() if math.isfinite(v)}
        return min(finite, key=finite.get), tried
    """, "stop as soon as the best is bracketed"),
    "12_bracket_stops_at_first_rise": ("bracket", "bracket_lr", """
        # up from lr0 while the loss falls; the first rise ends the search
        tried = {lr0: loss_at(lr0)}
        best = lr0
        for k in range(1, max_evals):
            lr = lr0 * factor**k
            tried[lr] = loss_at(lr)
            if not tried[lr] < tried[best]:
                return best, tried
            best = lr
        raise RuntimeError("the loss still falls towards higher rates")
    """, "needs a tried neighbour on each side"),
    "12_bracket_nan_as_number": ("bracket", "bracket_lr", """
        def rate(k):
            return lr0 * factor**k

        tried = {rate(0): loss_at(rate(0)), rate(1): loss_at(rate(1))}
        step, best = (1, 1) if tried[rate(1)] <= tried[rate(0)] else (-1, 0)
        while len(tried) < max_evals:
            lr = rate(best + step)
            tried[lr] = loss_at(lr)
            if tried[lr] > tried[rate(best)]:  # nan > x is False: nan looks better
                return rate(best), tried
            best += step
        edge = "higher" if step > 0 else "lower"
        raise RuntimeError(f"the loss still falls towards {edge} rates")
    """, "a diverged run is worse than any finite one"),
    "12_bracket_reruns_lr0": ("bracket", "bracket_lr", """
        tried = {}

        def run(k):
            tried[lr0 * factor**k] = loss_at(lr0 * factor**k)
            return tried[lr0 * factor**k]

        def walk(step):  # from lr0 while the loss falls
            k, best = 0, run(0)  # on the way down, lr0 is run again
            while len(tried) < max_evals:
                loss = run(k + step)
                if not loss < best:
                    return k
                k, best = k + step, loss
            edge = "higher" if step > 0 else "lower"
            raise RuntimeError(f"the loss still falls towards {edge} rates")

        k = walk(1)
        if k == 0:  # nothing better above lr0: down instead
            k = walk(-1)
        return lr0 * factor**k, tried
    """, "was run twice"),
    "12_bracket_drifting_floats": ("bracket", "bracket_lr", """
        tried = {lr0: loss_at(lr0)}

        def rank(lr):
            loss = tried[lr]
            return (loss if math.isfinite(loss) else math.inf, lr)

        while True:
            best = min(tried, key=rank)
            # the best's neighbours from its own float: 0.1 * 3 / 3 != 0.1
            missing = [lr for lr in (best * factor, best / factor) if lr not in tried]
            if not missing:
                return best, tried
            if len(tried) == max_evals:
                edge = "higher" if best == max(tried) else "lower"
                raise RuntimeError(f"the loss still falls towards {edge} rates")
            tried[missing[0]] = loss_at(missing[0])
    """, "was run twice"),
    "12_status_mixes_seeds": ("bracket", "bracket_status", """
        rates = {}
        for r in runs.values():  # every seed: a lucky one wins
            if r["budget"] == budget and r["unique_chars"] is None:
                tried = rates.setdefault(r["non_embedding_params"], {})
                tried[r["lr"]] = min(tried.get(r["lr"], math.inf), r["val_nats_per_char"])

        def score(loss):
            return loss if math.isfinite(loss) else math.inf

        out = {}
        for n, tried in sorted(rates.items()):
            best = min(tried, key=lambda lr, t=tried: (score(t[lr]), lr))
            worse = [lr for lr, loss in tried.items() if score(loss) > score(tried[best]) + noise]
            status = ("one rate" if len(tried) == 1 else "raise" if not any(lr > best for lr in worse)
                      else "lower" if not any(lr < best for lr in worse) else "bracketed")
            out[n] = (best, status)
        return out
    """, "seed 0 only"),
    "12_status_keeps_data_runs": ("bracket", "bracket_status", """
        rates = {}
        for r in runs.values():  # the data-constrained runs too
            if r["budget"] == budget and r["seed"] == 0:
                rates.setdefault(r["non_embedding_params"], {})[r["lr"]] = r["val_nats_per_char"]

        def score(loss):
            return loss if math.isfinite(loss) else math.inf

        out = {}
        for n, tried in sorted(rates.items()):
            best = min(tried, key=lambda lr, t=tried: (score(t[lr]), lr))
            worse = [lr for lr, loss in tried.items() if score(loss) > score(tried[best]) + noise]
            status = ("one rate" if len(tried) == 1 else "raise" if not any(lr > best for lr in worse)
                      else "lower" if not any(lr < best for lr in worse) else "bracketed")
            out[n] = (best, status)
        return out
    """, "runs on the whole text only"),
    "12_status_edge_bracketed": ("bracket", "bracket_status", """
        rates = {}
        for r in runs.values():
            if r["budget"] == budget and r["unique_chars"] is None and r["seed"] == 0:
                rates.setdefault(r["non_embedding_params"], {})[r["lr"]] = r["val_nats_per_char"]
        out = {}
        for n, tried in sorted(rates.items()):
            best = min(tried, key=lambda lr, t=tried: (t[lr] if math.isfinite(t[lr]) else math.inf, lr))
            if len(tried) == 1:
                status = "one rate"
            elif len(tried) >= 3:  # three rates tried: called bracketed
                status = "bracketed"
            else:
                status = "raise" if best == max(tried) else "lower"
            out[n] = (best, status)
        return out
    """, "is not bracketed"),
    "12_status_nan_as_number": ("bracket", "bracket_status", """
        rates = {}
        for r in runs.values():
            if r["budget"] == budget and r["unique_chars"] is None and r["seed"] == 0:
                rates.setdefault(r["non_embedding_params"], {})[r["lr"]] = r["val_nats_per_char"]
        out = {}
        for n, tried in sorted(rates.items()):
            best = min(tried, key=tried.get)  # a nan met first is never beaten
            worse = [lr for lr, loss in tried.items() if float(loss) > float(tried[best]) + noise]
            status = ("one rate" if len(tried) == 1 else "raise" if not any(lr > best for lr in worse)
                      else "lower" if not any(lr < best for lr in worse) else "bracketed")
            out[n] = (best, status)
        return out
    """, "a diverged run is worse than any finite one"),
    "12_status_ignores_noise": ("bracket", "bracket_status", """
        rates = {}
        for r in runs.values():
            if r["budget"] == budget and r["unique_chars"] is None and r["seed"] == 0:
                rates.setdefault(r["non_embedding_params"], {})[r["lr"]] = r["val_nats_per_char"]
        out = {}
        for n, tried in sorted(rates.items()):  # any worse rate counts, however little worse
            best = min(tried, key=lambda lr, t=tried: (t[lr] if math.isfinite(t[lr]) else math.inf, lr))
            status = ("one rate" if len(tried) == 1 else "raise" if best == max(tried)
                      else "lower" if best == min(tried) else "bracketed")
            out[n] = (best, status)
        return out
    """, "by more than the noise"),
    "12_status_nearest_only": ("bracket", "bracket_status", """
        rates = {}
        for r in runs.values():
            if r["budget"] == budget and r["unique_chars"] is None and r["seed"] == 0:
                rates.setdefault(r["non_embedding_params"], {})[r["lr"]] = r["val_nats_per_char"]

        def score(loss):
            return loss if math.isfinite(loss) else math.inf

        out = {}
        for n, tried in sorted(rates.items()):
            best = min(tried, key=lambda lr, t=tried: (score(t[lr]), lr))
            higher = [lr for lr in tried if lr > best]
            lower = [lr for lr in tried if lr < best]
            # only the nearest rate on each side is compared with the best
            up = bool(higher) and score(tried[min(higher)]) > score(tried[best]) + noise
            down = bool(lower) and score(tried[max(lower)]) > score(tried[best]) + noise
            status = ("one rate" if len(tried) == 1 else "raise" if not up
                      else "lower" if not down else "bracketed")
            out[n] = (best, status)
        return out
    """, "not only the nearest"),
}


def write_fixtures() -> None:
    write_table_fixtures(SOLUTION, WRONG_ANSWERS, FIXTURES)


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    assert_table_fixtures_current(SOLUTION, WRONG_ANSWERS, FIXTURES, "tests/test_exercises_12.py")


def test_every_task_has_a_wrong_answer_and_every_forbid_a_calls_package_fixture():
    assert_table_covers_every_task(SOLUTION, WRONG_ANSWERS)


def test_every_solution_has_an_allow_list_and_reads_clean_under_it():
    """The allow lists (top-level modules an answer may import) that the reading grader applies:
    the solutions keep to them, and the library shortcuts the review found (numpy's polyfit,
    scipy's curve_fit) and those a permutation test could take (scipy's permutation_test,
    statistics) are refused."""
    from lmcourse.course.exercises import cell_info
    from lmcourse.course.reading import Rules, read_cell

    solution = nbformat.read(SOLUTION, as_version=4)
    cells = [c for c in solution.cells if cell_info(c).get("role") == "solution"]
    assert cells
    for cell in cells:
        info = cell_info(cell)
        rules = Rules(allowed=frozenset(info["allow"]), forbid=tuple(info.get("forbid", ())))
        assert set(info["allow"]) <= {"torch", "math", "itertools"}, info
        assert read_cell(cell.source, rules) == [], info["task"]
        for shortcut in ("import numpy as np", "from scipy.optimize import curve_fit",
                         "from scipy.stats import permutation_test", "import statistics"):
            assert read_cell(shortcut, rules), (info["task"], shortcut)


@pytest.mark.slow
@group("12")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"floor", "capped", "isoflop", "repeats", "approach1", "bracket"}
    assert sum(r.max_points for r in rows.values()) == 25
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("12")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    assert_table_answer_costs_its_task(SOLUTION, WRONG_ANSWERS, FIXTURES, name)


# a right answer the text allows: both neighbours of lr0 first, as a parallel sweep would
SYMMETRIC_PROBE = """
    losses = {}

    def rank(k):
        loss = losses[k]
        return (loss if math.isfinite(loss) else math.inf, k)

    for k in (0, 1, -1):
        losses[k] = float(loss_at(lr0 * factor**k))
    while True:
        best = min(losses, key=rank)
        missing = [k for k in (best - 1, best + 1) if k not in losses]
        if not missing:
            return lr0 * factor**best, {lr0 * factor**k: v for k, v in losses.items()}
        if len(losses) >= max_evals:
            raise RuntimeError("no bracket: the loss still falls towards "
                               + ("higher" if best == max(losses) else "lower") + " rates")
        losses[missing[0]] = float(loss_at(lr0 * factor**missing[0]))
"""


LINEAR_IN_C = """
    curves = []  # (N, [(compute, loss), ...]), read linearly in C itself
    for r in runs.values():
        if r["unique_chars"] is not None or r["lr"] != lr:
            continue
        n = r["non_embedding_params"]
        h = r["history"]
        curves.append((n, [(6 * n * d, v) for d, v in zip(h["tokens"], h["val_loss"]) if d > 0]))
    out = {}
    for C in budgets:
        best = None
        for n, points in curves:
            for (c0, y0), (c1, y1) in zip(points, points[1:]):
                if c0 <= C <= c1:
                    y = y0 + (y1 - y0) * (C - c0) / (c1 - c0)
                    if best is None or y < best[1]:
                        best = (float(n), float(y))
                    break
        if best is not None:
            out[C] = best
    return out
"""


@pytest.mark.slow
@pytest.mark.parametrize(("function", "body", "task"), [
    # a search that tries both neighbours of lr0 first, as a parallel sweep would
    ("bracket_lr", SYMMETRIC_PROBE, "bracket"),
    # an envelope read linearly in C: the points are for the envelope, not the convention
    ("approach1", LINEAR_IN_C, "approach1"),
], ids=["bracket_symmetric_probe", "approach1_linear_in_c"])
def test_an_accepted_variant_scores_full_marks(tmp_path, function, body, task):
    from chapter_grades import _pool
    from test_exercises import with_wrong_answer

    from lmcourse.course.grade import grade_notebooks

    path = tmp_path / "12_scaling.ipynb"
    nbformat.write(with_wrong_answer(nbformat.read(SOLUTION, as_version=4), function, body), path)
    (rows,) = grade_notebooks([(path, str(path))], jobs=1, warm=_pool())
    row = next(r for r in rows if r.task == task)
    assert row.points == row.max_points, row


if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(WRONG_ANSWERS)} fixtures to {FIXTURES}")
