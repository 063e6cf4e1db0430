"""Write the learners' notebooks in ``exercises/`` from the answers in ``solutions/``.

``solutions/NN_name.ipynb`` is the single source. Its cells follow nbgrader's
markers so that instructors who know nbgrader feel at home:

* a **solution cell** (metadata ``{"lmcourse": {"role": "solution", "task": T}}``)
  holds the answer between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; in the
  exercise the region becomes ``raise NotImplementedError(...)`` at the same indent;
* a **check cell** (metadata ``{"lmcourse": {"role": "check", "task": T, "check": C,
  "points": P}}``) holds visible self-checks, then hidden ones between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``; the exercise keeps only the
  visible part, the grader runs both.

Outputs and execution counts are cleared. Run ``python -m lmcourse exercises`` to
regenerate and ``python -m lmcourse exercises --check`` to fail (exit 1) when
``exercises/`` is out of date.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]  # the repository: lmcourse/course/exercises.py -> .
SOLUTIONS_DIR = ROOT / "solutions"
EXERCISES_DIR = ROOT / "exercises"

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_CHAPTER = re.compile(r"^(\d\d)_")


@dataclass(frozen=True)
class Check:
    """One graded check cell of a chapter (read from the solutions notebook)."""

    task: str
    check: str
    points: float
    source: str  # with the hidden tests


def cell_info(cell) -> dict:
    """The ``lmcourse`` metadata of a cell (empty for ordinary cells)."""
    info = cell.get("metadata", {}).get("lmcourse", {})
    return info if isinstance(info, dict) else {}


def chapter_of(path: Path, nb=None) -> str | None:
    """A notebook's chapter: its metadata ``lmcourse.chapter``, else the ``NN_`` of its name."""
    if nb is not None:
        chapter = nb.get("metadata", {}).get("lmcourse", {}).get("chapter")
        if isinstance(chapter, str) and re.fullmatch(r"\d\d", chapter):
            return chapter
    match = _CHAPTER.match(Path(path).name)
    return match.group(1) if match else None


def _strip_region(source: str, begin: str, end: str, replacement: str | None, where: str) -> str:
    """Replace every ``begin``..``end`` region (marker lines included) by ``replacement``."""
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ValueError(f"{where}: nested {begin!r}")
            inside = True
            if replacement is not None:
                indent = line[: len(line) - len(line.lstrip())]
                out.append(indent + replacement)
        elif stripped == end:
            if not inside:
                raise ValueError(f"{where}: {end!r} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {begin!r} is never closed by {end!r}")
    return "\n".join(out).rstrip("\n")


def checks_of(solution_nb, where: str = "solutions") -> list[Check]:
    """The graded checks of a solutions notebook, in notebook order."""
    checks: list[Check] = []
    for cell in solution_nb.cells:
        info = cell_info(cell)
        if cell.cell_type == "code" and info.get("role") == "check":
            try:
                checks.append(Check(str(info["task"]), str(info["check"]), float(info["points"]), cell.source))
            except KeyError as err:
                raise ValueError(f"{where}: a check cell lacks metadata lmcourse.{err.args[0]}") from None
    ids = [c.check for c in checks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: check ids repeat: {ids}")
    return checks


def make_exercise(solution_nb, where: str = "notebook"):
    """The learner's version of a solutions notebook (a new notebook object)."""
    nb = copy.deepcopy(solution_nb)
    for i, cell in enumerate(nb.cells):
        here = f"{where}, cell {i}"
        if cell.cell_type == "code":
            info = cell_info(cell)
            if info.get("role") == "solution":
                if BEGIN_SOLUTION not in cell.source:
                    raise ValueError(f"{here}: a solution cell without {BEGIN_SOLUTION!r}")
                task = info.get("task", "this task")
                stub = f'raise NotImplementedError("{task}: replace this line with your code")'
                cell.source = _strip_region(cell.source, BEGIN_SOLUTION, END_SOLUTION, stub, here)
            elif BEGIN_SOLUTION in cell.source:
                raise ValueError(f"{here}: {BEGIN_SOLUTION!r} in a cell not marked as a solution")
            cell.source = _strip_region(cell.source, BEGIN_HIDDEN, END_HIDDEN, None, here)
            cell.outputs = []
            cell.execution_count = None
        cell.get("metadata", {}).pop("execution", None)
    return nb


def dumps(nb) -> str:
    """The canonical text of a notebook (what is written to disk)."""
    return nbformat.writes(nb, version=4) + "\n"


def generate(solutions: Path = SOLUTIONS_DIR, exercises: Path = EXERCISES_DIR, check: bool = False) -> list[str]:
    """Write (or, with ``check``, compare) every exercise notebook.

    Returns the problems found: stale, missing or extra exercise notebooks when
    checking; nothing when writing.
    """
    problems: list[str] = []
    expected: set[str] = set()
    for src in sorted(Path(solutions).glob("*.ipynb")):
        nb = nbformat.read(src, as_version=4)
        checks_of(nb, str(src))  # validates the check metadata
        text = dumps(make_exercise(nb, str(src)))
        dst = Path(exercises) / src.name
        expected.add(src.name)
        if check:
            if not dst.exists():
                problems.append(f"{dst} is missing")
            elif dst.read_text(encoding="utf-8") != text:
                problems.append(f"{dst} differs from what {src} generates")
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text, encoding="utf-8")
    if check:
        for extra in sorted(Path(exercises).glob("*.ipynb")):
            if extra.name not in expected:
                problems.append(f"{extra} has no source in {solutions}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmcourse exercises", description="Generate exercises/ from solutions/."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if exercises/ is out of date")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR)
    parser.add_argument("--exercises", type=Path, default=EXERCISES_DIR)
    args = parser.parse_args(argv)
    try:
        problems = generate(args.solutions, args.exercises, check=args.check)
    except (ValueError, OSError, nbformat.reader.NotJSONError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problems:
        print("exercises/ is out of date; run `python -m lmcourse exercises`:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(list(Path(args.solutions).glob('*.ipynb')))} exercise notebook(s) to {args.exercises}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
