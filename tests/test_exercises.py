import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from lmcourse.course.exercises import EXERCISES_DIR, SOLUTIONS_DIR, checks_of, generate, make_exercise


def _nb(*cells):
    return new_notebook(cells=list(cells))


def test_exercises_are_in_sync_with_solutions():
    result = subprocess.run([sys.executable, "-m", "lmcourse", "exercises", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_solution_has_an_exercise_and_checks():
    solutions = sorted(p.name for p in SOLUTIONS_DIR.glob("*.ipynb"))
    assert solutions, "no solutions notebooks"
    assert solutions == sorted(p.name for p in EXERCISES_DIR.glob("*.ipynb"))
    for name in solutions:
        nb = nbformat.read(SOLUTIONS_DIR / name, as_version=4)
        assert nb.metadata["lmcourse"]["chapter"] == name[:2]
        assert len({c.task for c in checks_of(nb)}) >= 3, f"{name}: at least three tasks"


def test_solution_regions_become_stubs_at_their_indent_and_hidden_tests_vanish():
    sol = new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n")
    sol.metadata["lmcourse"] = {"role": "solution", "task": "double"}
    chk = new_code_cell("assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(5) == 10\n### END HIDDEN TESTS")
    chk.metadata["lmcourse"] = {"role": "check", "task": "double", "check": "double", "points": 1}
    chk.outputs = [nbformat.v4.new_output("stream", text="x")]
    chk.execution_count = 3
    ex = make_exercise(_nb(sol, chk))
    assert ex.cells[0].source == 'def f(x):\n    raise NotImplementedError("double: replace this line with your code")'
    assert ex.cells[1].source == "assert f(1) == 2"
    assert ex.cells[1].outputs == [] and ex.cells[1].execution_count is None
    assert "f(5)" in chk.source, "the source notebook is left untouched"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
        ("x = 1\n### END SOLUTION\n", "without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n", "nested"),
    ],
)
def test_malformed_markers_are_reported(source, message):
    cell = new_code_cell(source)
    cell.metadata["lmcourse"] = {"role": "solution", "task": "t"}
    with pytest.raises(ValueError, match=message):
        make_exercise(_nb(cell))


def test_solution_marker_outside_a_solution_cell_is_an_error():
    with pytest.raises(ValueError, match="not marked as a solution"):
        make_exercise(_nb(new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")))


def test_check_mode_reports_stale_missing_and_extra(tmp_path):
    sols, exs = tmp_path / "solutions", tmp_path / "exercises"
    sols.mkdir()
    cell = new_code_cell("x = 1")
    nbformat.write(_nb(cell), sols / "01_a.ipynb")
    assert generate(sols, exs, check=True) == [f"{exs / '01_a.ipynb'} is missing"]
    assert generate(sols, exs) == []
    assert generate(sols, exs, check=True) == []
    (exs / "01_a.ipynb").write_text((exs / "01_a.ipynb").read_text().replace("x = 1", "x = 2"))
    (exs / "02_b.ipynb").write_text("{}")
    problems = generate(sols, exs, check=True)
    assert len(problems) == 2 and "differs" in problems[0] and "no source" in problems[1]
