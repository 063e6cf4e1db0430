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
from test_exercises import with_wrong_answer  # the one fixture builder, for every chapter

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
    "12_worst_point_straight_line": ("floor", "worst_point", """
        lx = torch.as_tensor(x, dtype=torch.float64).log()
        ly = torch.as_tensor(y, dtype=torch.float64).log()
        X = torch.stack([torch.ones_like(lx), lx], dim=1)
        r = (X @ torch.linalg.lstsq(X, ly[:, None]).solution)[:, 0] - ly
        return int(r.abs().argmax().item())  # the line's worst point, not the law's
    """, "the one the fit explains worst"),
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
    "12_vertex_best_run": ("isoflop", "isoflop_vertex", """
        best = min(range(len(L)), key=lambda i: L[i])
        return float(N[best])  # the lowest run, not the parabola's vertex
    """, "the vertex need not be a run"),
    "12_vertex_linear_n": ("isoflop", "isoflop_vertex", """
        x = torch.as_tensor(N, dtype=torch.float64)  # N itself, not ln N
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        return -c1 / (2 * c2)
    """, "fit against ln N"),
    "12_vertex_log10": ("isoflop", "isoflop_vertex", """
        x = torch.as_tensor(N, dtype=torch.float64).log10()
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        return math.exp(-c1 / (2 * c2))  # a base-10 vertex, exponentiated
    """, "fit against ln N"),
    "12_flat_range_curvature_inverted": ("isoflop", "flat_range", """
        x = torch.as_tensor(N, dtype=torch.float64).log()
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        if c2 <= 0:
            return None
        x0, half = -c1 / (2 * c2), math.sqrt(tol * c2)  # tol times c2, not over it
        return math.exp(x0 - half), math.exp(x0 + half)
    """, "got ("),
    "12_flat_range_no_none": ("isoflop", "flat_range", """
        x = torch.as_tensor(N, dtype=torch.float64).log()
        y = torch.as_tensor(L, dtype=torch.float64)
        X = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
        c2, c1, _ = torch.linalg.lstsq(X, y[:, None]).solution[:, 0].tolist()
        x0, half = -c1 / (2 * c2), math.sqrt(tol / abs(c2))  # a maximum taken for a minimum
        return math.exp(x0 - half), math.exp(x0 + half)
    """, "opens downwards has no minimum"),
    "12_minima_all_runs": ("isoflop", "isoflop_minima", """
        profiles = {}
        for r in runs.values():  # the data-constrained runs too
            profiles.setdefault(r["budget"], []).append(r)
        out = {}
        for C, prof in sorted(profiles.items()):
            if len({r["non_embedding_params"] for r in prof}) >= 3:
                out[C] = isoflop_vertex(
                    [r["non_embedding_params"] for r in prof],
                    [r["val_nats_per_char"] for r in prof])
        return out
    """, "keep runs on all the text"),
    "12_isoflop_calls_package": ("isoflop", "isoflop_vertex", """
        from lmcourse.scaling_laws import isoflop_minimum

        return isoflop_minimum(N, L)
    """, "must not call lmcourse.scaling_laws.isoflop_minimum"),
    "12_repeats_population_variance": ("repeats", "rise_and_error", """
        def mean_var(v):
            m = sum(v) / len(v)
            return m, sum((x - m) ** 2 for x in v) / len(v)  # n, not n - 1

        m0, v0 = mean_var(base)
        m1, v1 = mean_var(other)
        return m1 - m0, math.sqrt(v0 / len(base) + v1 / len(other))
    """, "standard error of"),
    "12_repeats_sd_not_se": ("repeats", "rise_and_error", """
        def mean_var(v):
            m = sum(v) / len(v)
            return m, sum((x - m) ** 2 for x in v) / (len(v) - 1)

        m0, v0 = mean_var(base)
        m1, v1 = mean_var(other)
        return m1 - m0, math.sqrt(v0 + v1)  # the spread of one seed, not of a mean
    """, "standard error of"),
    "12_repeats_pooled_equal_sizes": ("repeats", "rise_and_error", """
        def mean_var(v):
            m = sum(v) / len(v)
            return m, sum((x - m) ** 2 for x in v) / (len(v) - 1)

        m0, v0 = mean_var(base)
        m1, v1 = mean_var(other)
        n = len(base)  # both groups taken to have base's size
        return m1 - m0, math.sqrt((v0 + v1) / n)
    """, "over its own size"),
    "12_repeats_first_crossing": ("repeats", "measured_from", """
        for e in sorted(e for e in groups if e > 1):  # the first crossing, not a lasting one
            rise, se = rise_and_error(groups[1], groups[e])
            if rise > z * se:
                return e
        return 0
    """, "and every larger one"),
}


def fixture_notebook(name: str):
    _, function, body, _ = WRONG_ANSWERS[name]
    return with_wrong_answer(nbformat.read(SOLUTION, as_version=4), function, body)


def write_fixtures() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in WRONG_ANSWERS:
        nbformat.write(fixture_notebook(name), FIXTURES / f"{name}.ipynb")


def test_fixtures_are_the_solutions_with_one_wrong_answer():
    for name, (task, function, _, _) in WRONG_ANSWERS.items():
        path = FIXTURES / f"{name}.ipynb"
        assert path.exists(), f"{path} is missing: run python tests/test_exercises_12.py"
        assert path.read_text() == nbformat.writes(fixture_notebook(name)) + "\n", (
            f"{path} is out of date with {SOLUTION.name}: run python tests/test_exercises_12.py"
        )
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if f"def {function}(" in c.source)
        info = cell.metadata["lmcourse"]
        assert (info["role"], info["task"]) == ("solution", task), f"{name}: {function}() is not in task {task}"


def test_every_task_has_a_wrong_answer_and_every_forbid_a_calls_package_fixture():
    solution = nbformat.read(SOLUTION, as_version=4)
    infos = [c.metadata["lmcourse"] for c in solution.cells if "lmcourse" in c.metadata]
    tasks = {i["task"] for i in infos if i["role"] == "check"}
    forbidding = {i["task"] for i in infos if i["role"] == "solution" and i.get("forbid")}
    wrong = {task for name, (task, *_) in WRONG_ANSWERS.items() if not name.endswith("_calls_package")}
    calls = {task for name, (task, *_) in WRONG_ANSWERS.items() if name.endswith("_calls_package")}
    assert tasks <= wrong, f"no wrong-answer fixture for {sorted(tasks - wrong)}"
    assert forbidding <= calls, f"no *_calls_package fixture for {sorted(forbidding - calls)}"


def test_every_solution_has_an_allow_list_and_reads_clean_under_it():
    """The allow lists (top-level modules an answer may import) that the reading grader applies:
    the solutions keep to them, and the library shortcuts the review found (numpy's polyfit,
    scipy's curve_fit) are refused."""
    from lmcourse.course.exercises import cell_info
    from lmcourse.course.reading import Rules, read_cell

    solution = nbformat.read(SOLUTION, as_version=4)
    cells = [c for c in solution.cells if cell_info(c).get("role") == "solution"]
    assert cells
    for cell in cells:
        info = cell_info(cell)
        rules = Rules(allowed=frozenset(info["allow"]), forbid=tuple(info.get("forbid", ())))
        assert set(info["allow"]) <= {"torch", "math"}, info
        assert read_cell(cell.source, rules) == [], info["task"]
        for shortcut in ("import numpy as np", "from scipy.optimize import curve_fit"):
            assert read_cell(shortcut, rules), (info["task"], shortcut)


@pytest.mark.slow
@group("12")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"floor", "capped", "isoflop", "repeats"}
    assert sum(r.max_points for r in rows.values()) == 16
    assert all(r.points == r.max_points and r.status == "passed" for r in rows.values()), rows


@pytest.mark.slow
@group("12")
@pytest.mark.parametrize("name", sorted(WRONG_ANSWERS))
def test_wrong_answer_costs_its_task_points_and_no_others(name):
    task, _, _, message = WRONG_ANSWERS[name]
    rows = grades_of(FIXTURES / f"{name}.ipynb")
    assert set(rows) == set(grades_of(SOLUTION))
    wrong = rows[task]
    if name.endswith("_calls_package"):  # only the grader's enforcement of "forbid" takes its points
        assert wrong.points == 0 and wrong.message.startswith(f"task {task} must not call "), wrong
    else:
        assert wrong.points < wrong.max_points, wrong
    assert wrong.status in ("failed", "error") and message in wrong.message, wrong
    others = {t: r for t, r in rows.items() if t != task}
    assert all(r.points == r.max_points for r in others.values()), others


if __name__ == "__main__":
    write_fixtures()
    print(f"wrote {len(WRONG_ANSWERS)} fixtures to {FIXTURES}")
