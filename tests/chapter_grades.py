"""One grading of every course notebook of a chapter, shared by the grading tests.

The solution, the untouched exercise and every wrong-answer fixture
(``tests/grading_fixtures/wrong_answers/NN_*.ipynb``) of a chapter are graded
once per test process, in one batch (two at a time, sandboxed and on warm runners,
as ``python -m lmcourse grade --jobs 2`` runs them), the first time a test asks; ``tests/test_grading.py``,
``tests/test_exercises.py`` and ``tests/test_exercises_11.py`` all read these
rows. Under pytest-xdist (``make test``: ``-n 2 --dist loadgroup``) every test
that reads a chapter's rows carries the mark :func:`group`, so they run in one
worker and the chapter is graded once in the whole session.
"""

from __future__ import annotations

import atexit
from pathlib import Path

import pytest

from lmcourse.course.exercises import EXERCISES_DIR, SOLUTIONS_DIR
from lmcourse.course.grade import DEFAULT_MEMORY_MB, TaskRow, default_sandbox, grade_notebooks
from lmcourse.course.warm import WarmPool

WRONG_ANSWERS_DIR = Path(__file__).parent / "grading_fixtures" / "wrong_answers"

_GRADES: dict[str, dict[Path, dict[str, TaskRow]]] = {}
_POOL: list[WarmPool] = []


def _pool() -> WarmPool:
    """This test process's two warm runners, shared by every chapter's batch (ended at exit)."""
    if not _POOL:
        _POOL.append(WarmPool(default_sandbox(), DEFAULT_MEMORY_MB, (SOLUTIONS_DIR,)))
        atexit.register(_POOL[0].close)
    return _POOL[0]


def group(chapter: str) -> pytest.MarkDecorator:
    """The xdist group of the tests that read chapter ``chapter``'s grades ("01" ... "12")."""
    return pytest.mark.xdist_group(f"grades-{chapter}")


def solution_of(chapter: str) -> Path:
    return next(SOLUTIONS_DIR.glob(f"{chapter}_*.ipynb"))


def notebooks_of(chapter: str) -> list[Path]:
    """The solution, the exercise and the wrong-answer fixtures of a chapter, in that order."""
    solution = solution_of(chapter)
    return [solution, EXERCISES_DIR / solution.name, *sorted(WRONG_ANSWERS_DIR.glob(f"{chapter}_*.ipynb"))]


def chapter_grades(chapter: str) -> dict[Path, dict[str, TaskRow]]:
    """Rows of every notebook of :func:`notebooks_of` ``chapter``, by path, then task (graded once)."""
    if chapter not in _GRADES:
        paths = notebooks_of(chapter)
        graded = grade_notebooks([(p, str(p)) for p in paths], jobs=2, warm=_pool())
        _GRADES[chapter] = {p: {r.task: r for r in rows} for p, rows in zip(paths, graded, strict=True)}
    return _GRADES[chapter]


def grades_of(path: Path) -> dict[str, TaskRow]:
    """The rows of one notebook of a chapter's batch, by task."""
    return chapter_grades(path.name[:2])[path]


def assert_other_tasks_full(name: str, rows: dict[str, TaskRow], task: str) -> None:
    """A wrong answer to ``task`` (fixture ``name``) keeps full marks on every other task of its rows."""
    lost = {t: (r.points, r.max_points, r.status, r.message) for t, r in rows.items()
            if t != task and r.points != r.max_points}
    assert not lost, f"{name} also loses points on other tasks: {lost}"
