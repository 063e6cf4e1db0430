"""Grade submitted exercise notebooks: one CSV row per (submission, task).

    python -m lmcourse.grade PATH... [--chapter NN] [--out grades.csv] [--jobs N] [--timeout S]

PATH is a notebook or a folder searched for notebooks. For each submission the
grader

1. finds its chapter (notebook metadata ``lmcourse.chapter``, the ``NN_`` of its
   file name, or ``--chapter``) and that chapter's checks in ``solutions/``;
2. builds the program to run: the submission's code cells in the submission's
   order, where every check cell is replaced by the authoritative one from
   ``solutions/`` (visible *and* hidden tests); checks the learner deleted are
   appended at the end;
3. runs it in its own process, in a temporary working directory, under a
   wall-clock limit (:mod:`lmcourse._grade_runner`);
4. scores each check: ``passed`` (points), ``failed`` (an assertion failed),
   ``error`` (another exception), ``not-attempted`` (the task still raises
   ``NotImplementedError``) or ``timeout``, and sums the checks of each task.

A broken submission costs only its own points: the batch always completes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .exercises import SOLUTIONS_DIR, Check, cell_info, chapter_of, checks_of

FIELDS = ("submission", "chapter", "task", "points", "max_points", "status", "message")
DEFAULT_TIMEOUT = 300.0


@dataclass
class CheckResult:
    check: Check
    status: str  # passed | failed | error | not-attempted | timeout
    message: str = ""

    @property
    def points(self) -> float:
        return self.check.points if self.status == "passed" else 0.0


@dataclass
class TaskRow:
    submission: str
    chapter: str
    task: str
    points: float
    max_points: float
    status: str
    message: str

    def as_csv(self) -> dict:
        row = dict(self.__dict__)
        row["points"] = _fmt(self.points)
        row["max_points"] = _fmt(self.max_points)
        return row


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def find_notebooks(paths: list[Path]) -> list[Path]:
    """Every notebook named by ``paths`` (files, or folders searched recursively), sorted."""
    found: set[Path] = set()
    for p in paths:
        if p.is_dir():
            found.update(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.is_file():
            found.add(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return sorted(found)


def solution_notebook(chapter: str, solutions: Path = SOLUTIONS_DIR) -> Path:
    """The solutions notebook of a chapter (``solutions/NN_*.ipynb``)."""
    matches = sorted(Path(solutions).glob(f"{chapter}_*.ipynb"))
    if not matches:
        known = sorted(p.name[:2] for p in Path(solutions).glob("[0-9][0-9]_*.ipynb"))
        raise ValueError(f"no chapter {chapter!r} in {solutions} (chapters with exercises: {', '.join(known) or 'none'})")
    return matches[0]


def build_program(submission_nb, checks: list[Check]) -> list[dict]:
    """The cells to run: the submission's code, with authoritative check cells."""
    by_id = {c.check: c for c in checks}
    cells: list[dict] = []
    placed: set[str] = set()
    for cell in submission_nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        info = cell_info(cell)
        check_id = info.get("check") if info.get("role") == "check" else None
        if check_id in by_id and check_id not in placed:
            c = by_id[check_id]
            cells.append({"source": c.source, "role": "check", "task": c.task, "check": c.check})
            placed.add(check_id)
        elif check_id is None:
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            role = "solution" if info.get("role") == "solution" else "code"
            cells.append({"source": source, "role": role, "task": info.get("task"), "check": None})
    for c in checks:  # checks the learner deleted still run, at the end
        if c.check not in placed:
            cells.append({"source": c.source, "role": "check", "task": c.task, "check": c.check})
    return cells


def run_program(cells: list[dict], timeout: float) -> tuple[list[dict | None], str | None]:
    """Run the cells in a fresh process; per-cell records (``None``: never finished) and a problem."""
    with tempfile.TemporaryDirectory(prefix="lmcourse-grade-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        program, results = Path(tmp) / "program.json", Path(tmp) / "results.jsonl"
        program.write_text(json.dumps({"cells": cells}), encoding="utf-8")
        results.touch()
        env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
        env.setdefault("LMCOURSE_DEVICE", "cpu")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
        problem = None
        with open(Path(tmp) / "output.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lmcourse._grade_runner", str(program), str(results)],
                cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=timeout)
                if code != 0:
                    problem = f"the notebook's process exited with code {code}"
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                problem = "timeout"
        records: list[dict | None] = [None] * len(cells)
        for line in results.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
                records[int(rec["cell"])] = rec
            except (ValueError, KeyError, TypeError, IndexError):
                continue
    return records, problem


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def score(cells: list[dict], records: list[dict | None], problem: str | None, timeout: float) -> list[CheckResult]:
    """Turn per-cell records into one result per check."""
    unattempted = {
        cell["task"]
        for cell, rec in zip(cells, records)
        if cell["role"] == "solution" and rec and rec["etype"] == "NotImplementedError"
    }
    results: list[CheckResult] = []
    for cell, rec in zip(cells, records):
        if cell["role"] != "check":
            continue
        check = Check(cell["task"], cell["check"], 0.0, "")
        if rec is None:
            if problem == "timeout":
                status, message = "timeout", f"the notebook did not finish within {timeout:g} s"
            else:
                status, message = "error", f"the check never ran: {problem or 'the notebook stopped early'}"
        elif rec["status"] == "ok":
            status, message = "passed", ""
        elif rec["etype"] == "NotImplementedError" or cell["task"] in unattempted:
            status, message = "not-attempted", "the task still raises NotImplementedError"
        elif rec["etype"] == "AssertionError":
            status, message = "failed", rec["message"] or "a check failed"
        else:
            status, message = "error", f"{rec['etype']}: {rec['message']}"
        results.append(CheckResult(check, status, message))
    return results


_STATUS_ORDER = ("timeout", "error", "failed", "not-attempted", "passed")


def grade_notebook(path: Path, chapter: str | None = None, solutions: Path = SOLUTIONS_DIR,
                   timeout: float = DEFAULT_TIMEOUT, name: str | None = None) -> list[TaskRow]:
    """Grade one submission; returns one row per task of its chapter."""
    name = name or str(path)
    nb = None
    read_error = None
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - broken JSON, wrong schema, unreadable file
        read_error = f"not a readable notebook: {type(err).__name__}: {str(err)[:200]}"
    chapter = chapter or chapter_of(path, nb)
    if chapter is None:
        return [TaskRow(name, "?", "?", 0, 0, "error", "cannot tell the chapter: name the file NN_*.ipynb or pass --chapter")]
    checks = checks_of(nbformat.read(solution_notebook(chapter, solutions), as_version=4))
    points = {c.check: c.points for c in checks}
    if read_error is not None:
        results = [CheckResult(c, "error", read_error) for c in checks]
    else:
        cells = build_program(nb, checks)
        records, problem = run_program(cells, timeout)
        results = score(cells, records, problem, timeout)
    rows: list[TaskRow] = []
    for task in dict.fromkeys(c.task for c in checks):
        mine = [r for r in results if r.check.task == task]
        got = sum(points[r.check.check] for r in mine if r.status == "passed")
        worst = min(mine, key=lambda r: _STATUS_ORDER.index(r.status))
        rows.append(TaskRow(name, chapter, task, got, sum(c.points for c in checks if c.task == task),
                            worst.status, worst.message))
    return rows


def write_csv(rows: list[TaskRow], out) -> None:
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_csv())


def summary(rows: list[TaskRow]) -> str:
    """A plain-text score table: every task, then each submission's total."""
    lines = []
    for sub in dict.fromkeys(r.submission for r in rows):
        mine = [r for r in rows if r.submission == sub]
        got, total = sum(r.points for r in mine), sum(r.max_points for r in mine)
        pct = 100.0 * got / total if total else 0.0
        lines.append(f"{sub}  (chapter {mine[0].chapter}): {_fmt(got)}/{_fmt(total)} points, {pct:.0f}%")
        for r in mine:
            note = f"  {r.message}" if r.message else ""
            lines.append(f"    {r.task:<28} {_fmt(r.points):>4}/{_fmt(r.max_points):<4} {r.status}{note[:120]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    parser.add_argument("--chapter", help="the chapter (NN) of every submission, when names do not say")
    parser.add_argument("--out", type=Path, help="write the CSV here (default: standard output)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per submission")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR, help="the solutions/ folder")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.timeout <= 0:
        parser.error("--jobs must be >= 1 and --timeout > 0")
    try:
        notebooks = find_notebooks(args.paths)
        if args.chapter:
            solution_notebook(args.chapter, args.solutions)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not notebooks:
        print("error: no notebooks (*.ipynb) found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 2

    def one(path: Path) -> list[TaskRow]:
        try:
            return grade_notebook(path, args.chapter, args.solutions, args.timeout)
        except ValueError as err:
            return [TaskRow(str(path), args.chapter or "?", "?", 0, 0, "error", str(err))]

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = [row for rows in pool.map(one, notebooks) for row in rows]
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            write_csv(rows, f)
        print(summary(rows))
        print(f"\nwrote {len(rows)} rows to {args.out}")
    else:
        write_csv(rows, sys.stdout)
        print(summary(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
