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
    """, "the floor of 1.5"),
    "12_floor_log10_intercept": ("floor", "fit_with_floor", """
        x = torch.as_tensor(x, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        X = torch.stack([torch.ones_like(x), x.log10()], dim=1)

        def fit(E):  # base-10 logarithms throughout ...
            c = torch.linalg.lstsq(X, (y - E).log10()[:, None]).solution[:, 0]
            y_hat = E + 10 ** c[0] * x ** c[1]
            return ((y_hat.log() - y.log()) ** 2).sum().item(), c

        lo, hi = 0.0, y.min().item()
        best = lo
        for _ in range(5):
            grid = torch.linspace(lo, hi, 201, dtype=torch.float64)[:-1]
            best = min(grid.tolist(), key=lambda E: fit(E)[0])
            step = (hi - lo) / 200
            lo, hi = max(0.0, best - step), min(hi, best + step)
        c = fit(best)[1]
        return best, math.exp(c[0].item()), -c[1].item()  # ... but exp here
    """, "natural logarithms and exponentials"),
    "12_straight_line_sign": ("floor", "straight_line_exponent", """
        lx = torch.as_tensor(x, dtype=torch.float64).log()
        ly = torch.as_tensor(y, dtype=torch.float64).log()
        X = torch.stack([torch.ones_like(lx), lx], dim=1)
        return torch.linalg.lstsq(X, ly[:, None]).solution[1, 0].item()
    """, "report alpha, positive"),
    "12_floor_calls_package": ("floor", "fit_with_floor", """
        from lmcourse.scaling_laws import power_law

        best = None
        for k in range(1, 400):
            E = min(y) * k / 400
            A, p = power_law(x, [v - E for v in y])
            err = sum((math.log(E + A * u ** p) - math.log(v)) ** 2
                      for u, v in zip(x, y))
            if best is None or err < best[0]:
                best = (err, E, A, -p)
        return float(best[1]), float(best[2]), float(best[3])
    """, "must not call lmcourse.scaling_laws.power_law"),
    "12_split_exponents_swapped": ("split", "compute_optimal_split", """
        a, b = law.alpha, law.beta
        G = (a * law.A / (b * law.B)) ** (1 / (a + b))
        N = G * (C / 6) ** (a / (a + b))  # alpha's share, not beta's
        return N, C / (6 * N)
    """, "which exponent belongs to which term"),
    "12_split_without_six": ("split", "compute_optimal_split", """
        a, b = law.alpha, law.beta
        G = (a * law.A / (b * law.B)) ** (1 / (a + b))
        N = G * C ** (b / (a + b))
        return N, C ** (a / (a + b)) / G  # C = N D, forgetting the 6
    """, "the split must spend the budget"),
    "12_split_calls_package": ("split", "compute_optimal_split", """
        from lmcourse.scaling_laws import compute_optimal

        return compute_optimal(law, C)
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


@pytest.mark.slow
@group("12")
def test_solution_scores_full_marks():
    rows = grades_of(SOLUTION)
    assert set(rows) == {"floor", "split", "isoflop"}
    assert sum(r.max_points for r in rows.values()) == 13
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
