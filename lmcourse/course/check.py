"""A learner's self-check: run an exercise notebook and its visible checks.

    python -m lmcourse check exercises/01_chain_rule.ipynb [--timeout S] [--memory MB]

The notebook's code cells are read and run exactly as the grader reads and runs
them (:func:`lmcourse.course.grade.build_program`, :func:`lmcourse.course.grade.run_submission`:
a refused cell does not run, its own process, a time limit, a memory limit, the
checks in a process of their own), with the visible part of each check of the
course's own notebook of the chapter (``exercises/``, else ``solutions/``, else
this notebook): hidden tests are never run or printed, and a check the learner
edited runs as the course wrote it.

As in the grader, a task whose code calls a function or class that the task
forbids (the solution cell's metadata ``lmcourse.forbid``) fails with ``task T
must not call NAME`` (:mod:`lmcourse.course.forbid`), and a cell that breaks a
reading rule with ``not run: code cell K, line N: what``.

It prints a table with one row per task: ``passed``, ``failed`` with the
assertion's message, ``error``, ``not attempted`` (the task still raises
``NotImplementedError``) or ``timeout``, the points of the checks whose visible
part passed, and how many checks passed of how many. The exit
code is 0 when every attempted check passed, 1 otherwise, and 2 when the
notebook cannot be checked at all (no such file, not a notebook, no check cells).
Passing here is necessary, not sufficient: the grader also runs hidden tests.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

from .exercises import (
    BEGIN_HIDDEN,
    END_HIDDEN,
    EXERCISES_DIR,
    SOLUTIONS_DIR,
    Check,
    chapter_of,
    checks_of,
)
from .grade import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    TaskRow,
    build_program,
    fmt_points,
    run_submission,
    score,
    task_rows,
)
from .plan import ChapterPlan

_LABELS = {"not-attempted": "not attempted"}


def visible_part(source: str) -> str:
    """A check cell without its hidden tests.

    Each ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` region goes, marker
    lines included; an unclosed region runs to the end of the cell.

    >>> cell = "assert f(1) == 2\\n### BEGIN HIDDEN TESTS\\nassert f(5) == 10\\n### END HIDDEN TESTS\\nprint('ok')"
    >>> visible_part(cell)
    "assert f(1) == 2\\nprint('ok')"
    """
    kept, inside = [], False
    for line in source.split("\n"):
        if line.strip() == BEGIN_HIDDEN:
            inside = True
        elif line.strip() == END_HIDDEN:
            inside = False
        elif not inside:
            kept.append(line)
    return "\n".join(kept)


def reference_notebook(path: Path, nb) -> Path | None:
    """The course's own notebook of the same chapter: ``exercises/NN_*.ipynb``, else ``solutions/NN_*.ipynb``."""
    chapter = chapter_of(path, nb)
    for folder in (EXERCISES_DIR, SOLUTIONS_DIR):
        found = sorted(folder.glob(f"{chapter}_*.ipynb")) if chapter else []
        if found:
            return found[0]
    return None


def check_notebook(path: Path, timeout: float = DEFAULT_TIMEOUT,
                   memory_mb: int = DEFAULT_MEMORY_MB) -> list[TaskRow]:
    """Run a notebook with its visible checks; one row per task (``ValueError`` if it has no checks).

    As the grader does (:func:`lmcourse.course.grade.grade_notebook`), with the
    course's own notebook of the chapter as the reference (its checks, visible
    parts only, its rules), and without the sandbox: the learner's cells are read
    first, and a refused cell shows the same message the grade will.
    """
    nb = nbformat.read(path, as_version=4)
    reference = reference_notebook(path, nb)
    ref_nb = nbformat.read(reference, as_version=4) if reference else nb
    plan = ChapterPlan.of(ref_nb)
    for cell in plan.check_cells:
        if cell["role"] == "check":
            cell["source"] = visible_part(cell["source"])
    checks = [Check(c.task, c.check, c.points, visible_part(c.source))
              for c in checks_of(ref_nb, str(reference or path))]
    if not checks:
        raise ValueError(f"{path} has no check cells (code cells with metadata lmcourse.role = 'check')")
    cells, refused = build_program(nb, plan)
    outcome = run_submission(cells, plan, timeout, memory_mb, visible_only=True)
    results = score(checks, cells, outcome, timeout, refused)
    return task_rows(str(path), chapter_of(path, nb) or "?", checks, results)


_NOT_ATTEMPTED_HINT = "replace raise NotImplementedError(...) with your code"


def table(rows: list[TaskRow], width: int = 100) -> str:
    """The rows as a plain-text table: task, result, points, checks passed, and what to look at.

    Each message of a failed check goes on its own lines under its task, wrapped
    to ``width`` columns.

    >>> from lmcourse.course.grade import TaskRow
    >>> print(table([TaskRow("nb", "01", "perplexity", 0, 2, "failed", "perplexity must be 10", checks=1),
    ...              TaskRow("nb", "01", "bits", 0, 1, "not-attempted", "", checks=1)]))
    task        result         points  checks
    ----------  -------------  ------  ------
    perplexity  failed          0 / 2   0 / 1
                  perplexity must be 10
    bits        not attempted   0 / 1   0 / 1
                  replace raise NotImplementedError(...) with your code
    """
    name = max([len("task")] + [len(r.task) for r in rows])
    points = [f"{fmt_points(r.points):>2} / {fmt_points(r.max_points)}" for r in rows]
    pw = max([len("points")] + [len(p) for p in points])
    lines = [f"{'task':<{name}}  {'result':<13}  {'points':<{pw}}  checks",
             f"{'-' * name}  {'-' * 13}  {'-' * pw}  ------"]
    indent = " " * (name + 4)
    for r, p in zip(rows, points, strict=True):
        checks = f"{r.checks_passed:>2} / {r.checks}" if r.checks else ""
        lines.append(f"{r.task:<{name}}  {_LABELS.get(r.status, r.status):<13}  {p:>{pw}}  {checks}".rstrip())
        notes = [_NOT_ATTEMPTED_HINT] if r.status == "not-attempted" else [m for m in r.message.split("; ") if m]
        for note in notes:
            lines += textwrap.wrap(note, width, initial_indent=indent, subsequent_indent=indent)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse check", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path, help="the exercise notebook to check")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds for the whole notebook")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB, help="memory limit (MB)")
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.memory < 256:
        parser.error("--timeout must be > 0 and --memory >= 256")
    if not args.notebook.is_file():
        print(f"error: no notebook at {args.notebook}", file=sys.stderr)
        return 2
    try:
        rows = check_notebook(args.notebook, args.timeout, args.memory)
    except (ValueError, OSError, nbformat.reader.NotJSONError) as err:  # unreadable, or no checks
        print(f"error: {err}", file=sys.stderr)
        return 2
    chapter = rows[0].chapter
    print(f"{args.notebook} (chapter {chapter}): visible checks only; the grader also runs hidden tests\n")
    print(table(rows))
    attempted = [r for r in rows if r.status != "not-attempted"]
    bad = [r for r in attempted if r.status != "passed"]
    got, total = sum(r.points for r in rows), sum(r.max_points for r in rows)
    print(f"\n{fmt_points(got)} / {fmt_points(total)} points from visible checks; "
          f"{len(attempted) - len(bad)} of {len(rows)} tasks pass, {len(rows) - len(attempted)} not attempted")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
