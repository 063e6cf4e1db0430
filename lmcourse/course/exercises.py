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

A solution cell may also list what its task's answer must not call
(``"forbid": ["lmcourse.transformer.make_norm", "torch.nn.RMSNorm"]``, dotted names
of functions, classes or methods); the grader and the self-check score a task 0
when the learner's code calls one (:mod:`lmcourse.course.forbid`). Generating
checks that every such name exists and that no cell a learner is given (setup
cells, visible checks) imports one: the reference stays out of the learner's
namespace.

A markdown cell with metadata ``{"lmcourse": {"role": "answer"}}`` is a reference answer
to a question asked in the text (for instructors): the exercise leaves it out.

Outputs and execution counts are cleared. Run ``python -m lmcourse exercises`` to
regenerate (it also rewrites the table of tasks and points in the book's appendix,
``book/runtimes.md``) and ``python -m lmcourse exercises --check`` to fail (exit 1)
when ``exercises/`` or that table is out of date.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .forbid import check_forbid, resolve
from .markers import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION

ROOT = Path(__file__).resolve().parents[2]  # the repository: lmcourse/course/exercises.py -> .
SOLUTIONS_DIR = ROOT / "solutions"
EXERCISES_DIR = ROOT / "exercises"
APPENDIX = ROOT / "book" / "runtimes.md"  # its section "Exercises and points" is written from solutions/

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


def forbid_of(nb, where: str = "notebook") -> dict[str, list[str]]:
    """What each task's answer must not call: ``{task: [dotted names]}``.

    From the solution cells' metadata ``lmcourse.forbid`` (and, for a notebook of
    check cells only, such as the Gradescope autograder holds, the notebook's
    metadata ``lmcourse.forbid``).
    """
    found: dict[str, list[str]] = {}
    meta = nb.get("metadata", {}).get("lmcourse", {})
    sources = [check_forbid(meta["forbid"], f"{where}: notebook metadata lmcourse.forbid")] \
        if isinstance(meta, dict) and "forbid" in meta else []
    for i, cell in enumerate(nb.get("cells", [])):
        info = cell_info(cell)
        if cell.get("cell_type") == "code" and info.get("role") == "solution" and "forbid" in info:
            sources.append(check_forbid({str(info.get("task")): info["forbid"]}, f"{where}, cell {i}"))
    for part in sources:
        for task, names in part.items():
            found.setdefault(task, [])
            found[task] += [n for n in names if n not in found[task]]
    return found


def provided_of(nb) -> list[str]:
    """The sources of the code cells the course provides as they are (no solution, no check)."""
    meta = nb.get("metadata", {}).get("lmcourse", {})
    provided = list(meta.get("provided", [])) if isinstance(meta, dict) else []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and cell_info(cell).get("role") not in ("solution", "check"):
            source = cell.get("source", "")
            provided.append("".join(source) if isinstance(source, list) else str(source))
    return provided


def _imported(source: str) -> list[tuple[str, object]]:
    """``(what the code says, the object)`` for every name a cell imports (``from M import N``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                continue
            for alias in node.names:
                if alias.name == "*":
                    public = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
                    found += [(f"{node.module}.{n}", getattr(module, n, None)) for n in public]
                else:
                    found.append((f"{node.module}.{alias.name}", getattr(module, alias.name, None)))
    return found


def forbidden_imports(nb, where: str = "notebook") -> list[str]:
    """Cells a learner is given that import a name some task of the notebook forbids.

    Setup cells and the visible part of check cells count (hidden tests may import
    the reference to compare with it). A class whose method is forbidden counts
    too. Also raises ``ValueError`` for a forbidden name that does not exist.
    """
    forbidden: dict[int, tuple[str, str]] = {}  # id(object) -> (task, name)
    classes: dict[int, tuple[str, str]] = {}
    for task, names in forbid_of(nb, where).items():
        for name in names:
            owner, _, obj = resolve(name)
            forbidden.setdefault(id(obj), (task, name))
            if isinstance(owner, type):
                classes.setdefault(id(owner), (task, name))
    if not forbidden:
        return []
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        role = cell_info(cell).get("role")
        if cell.get("cell_type") != "code" or role == "solution":
            continue
        source = _strip_region(cell.get("source", ""), BEGIN_HIDDEN, END_HIDDEN, None, f"{where}, cell {i}")
        for said, obj in _imported(source):
            hit = forbidden.get(id(obj)) or classes.get(id(obj))
            if obj is not None and hit:
                kind = "a visible check" if role == "check" else "a setup cell"
                problems.append(f"{where}, cell {i} ({kind}) imports {said}, which task {hit[0]} forbids "
                                f"({hit[1]}): learners must not be handed the reference")
    return problems


def exercise_table(solutions: Path = SOLUTIONS_DIR) -> list[str]:
    """The appendix's section of tasks and points, one row per chapter of ``solutions/``."""
    lines = ["## Exercises and points", "",
             "Each task of `exercises/NN_*.ipynb` with its points (a task's checks may give partial credit).",
             "Written from `solutions/` by `python -m lmcourse exercises`.", "",
             "| chapter | tasks (points) | total |", "|---|---|---|"]
    for src in sorted(Path(solutions).glob("[0-9][0-9]_*.ipynb")):
        tasks: dict[str, float] = {}
        for c in checks_of(nbformat.read(src, as_version=4), str(src)):
            tasks[c.task] = tasks.get(c.task, 0.0) + c.points
        listing = ", ".join(f"`{t}` ({p:g})" for t, p in tasks.items())
        lines.append(f"| {src.name[:2]} | {listing} | {sum(tasks.values()):g} |")
    return lines


def with_exercise_table(page: str, solutions: Path = SOLUTIONS_DIR) -> str:
    """``page`` (the appendix) with its section "Exercises and points" written anew (appended if missing)."""
    lines = page.rstrip("\n").split("\n") if page.strip() else []
    heading = "## Exercises and points"
    start = lines.index(heading) if heading in lines else len(lines)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    before = lines[:start] + ([""] if start == len(lines) and lines and lines[-1] else [])
    return "\n".join(before + exercise_table(solutions) + ([""] + lines[end:] if end < len(lines) else [])) + "\n"


def make_exercise(solution_nb, where: str = "notebook"):
    """The learner's version of a solutions notebook (a new notebook object)."""
    nb = copy.deepcopy(solution_nb)
    answers = [c for c in nb.cells if c.cell_type == "markdown" and cell_info(c).get("role") == "answer"]
    nb.cells = [c for c in nb.cells if c not in answers]
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


def generate(solutions: Path = SOLUTIONS_DIR, exercises: Path = EXERCISES_DIR, check: bool = False,
             appendix: Path | None = None) -> list[str]:
    """Write (or, with ``check``, compare) every exercise notebook, and the appendix's table.

    Returns the problems found: stale, missing or extra exercise notebooks (or a
    stale ``appendix`` table) when checking; nothing when writing. A solutions
    notebook whose setup cells or visible checks import a name that one of its
    tasks forbids, or that forbids a name that does not exist, is an error
    (``ValueError``) either way.
    """
    problems: list[str] = []
    expected: set[str] = set()
    for src in sorted(Path(solutions).glob("*.ipynb")):
        nb = nbformat.read(src, as_version=4)
        checks_of(nb, str(src))  # validates the check metadata
        leaks = forbidden_imports(nb, str(src))  # validates the forbid lists too
        if leaks:
            raise ValueError("; ".join(leaks))
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
    if appendix is not None:
        page = Path(appendix).read_text(encoding="utf-8") if Path(appendix).exists() else ""
        text = with_exercise_table(page, solutions)
        if check and text != page:
            problems.append(f"{appendix}: the table of tasks and points differs from what {solutions} gives")
        elif not check and text != page:
            Path(appendix).write_text(text, encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lmcourse exercises", description="Generate exercises/ from solutions/."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if exercises/ is out of date")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR)
    parser.add_argument("--exercises", type=Path, default=EXERCISES_DIR)
    parser.add_argument("--appendix", type=Path, default=APPENDIX,
                        help="the page whose section 'Exercises and points' is written from solutions/")
    parser.add_argument("--no-appendix", action="store_true", help="leave the appendix page alone")
    args = parser.parse_args(argv)
    try:
        problems = generate(args.solutions, args.exercises, check=args.check,
                            appendix=None if args.no_appendix else args.appendix)
    except (ValueError, OSError, nbformat.reader.NotJSONError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problems:
        print("exercises/ (or the appendix's table) is out of date; run `python -m lmcourse exercises`:",
              file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    if not args.check:
        print(f"wrote {len(list(Path(args.solutions).glob('*.ipynb')))} exercise notebook(s) to {args.exercises}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
