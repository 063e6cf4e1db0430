"""Grade submitted exercise notebooks: one CSV row per (submission, task)::

    python -m lmcourse grade PATH... [--chapter NN] [--out grades.csv] [--jobs N] [--timeout S]
        [--gradebook FILE.csv] [--require-sandbox | --no-sandbox] [--cold]
    python -m lmcourse grade --gradescope autograder.zip [--chapter NN]

PATH is a notebook or a folder searched for notebooks. For each submission the
grader

1. finds its chapter (notebook metadata ``lmcourse.chapter``, the ``NN_`` of its
   file name, or ``--chapter``) and that chapter's checks in ``solutions/``;
2. reads every cell the learner wrote or changed (:mod:`lmcourse.course.reading`,
   under the chapter's rules, :mod:`lmcourse.course.plan`): a cell that imports
   what its task does not allow, uses reflection, a private attribute or a
   forbidden name does not run, and its task scores 0 (``not run: ...``);
3. runs the submission's other code cells, in its order, in their own process
   (:mod:`lmcourse.course.grade_runner`; a fresh fork of a warm runner,
   :mod:`lmcourse.course.warm`, unless ``--cold``) inside a bubblewrap sandbox
   (:mod:`lmcourse.course.sandbox`: a read-only view of the system, Python and the
   package, no ``solutions/``, a private ``/tmp``, no network, its own PID
   namespace, a process limit), under a wall-clock limit and a memory limit,
   keeping at most ``MAX_OUTPUT`` bytes of what it prints; where bubblewrap
   cannot run it says so once and runs the process without it
   (``--require-sandbox`` refuses instead);
4. runs the chapter's setup and check cells from ``solutions/`` (visible *and*
   hidden tests, hidden ones with inputs from a secret seed) in a trusted process
   of their own (:mod:`lmcourse.course.check_runner`), which calls the
   learner's answers through proxies and gets plain values back
   (:mod:`lmcourse.course.wire`);
5. scores each check: ``passed`` (points), ``failed`` (an assertion failed),
   ``error`` (another exception), ``not-attempted`` (the task still raises
   ``NotImplementedError``) or ``timeout``, and sums the checks of each task;
   a task whose answer was refused, called a function its solution cell forbids
   (metadata ``lmcourse.forbid``; :mod:`lmcourse.course.forbid`) or ran a
   forbidden aten operator scores 0, with a message that says which.

A broken submission costs only its own points: the batch always completes. The
checks of every chapter are read once, before any submission runs, so a
submission that deletes files cannot change another's grade. With ``--feedback
DIR`` each submission also gets a Markdown file listing its tasks, points and the
message of each failed *visible* check; hidden checks are never quoted.

``--gradebook`` also writes a row per student and a column per chapter, and
``--gradescope`` writes a Gradescope autograder (:mod:`lmcourse.course.export`).

A learner runs the same machinery on their own notebook, with the visible checks
only, as ``python -m lmcourse check NOTEBOOK`` (:mod:`lmcourse.course.check`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .check_pool import CheckPool, CheckServerError
from .exercises import BEGIN_HIDDEN, SOLUTIONS_DIR, Check, cell_info, chapter_of, checks_of
from .export import student_of, write_autograder, write_gradebook
from .forbid import message as forbidden_message
from .plan import ChapterPlan
from .process import MAX_OUTPUT, MAX_RESULTS, drain, feed, kill_group, limits, parse_records, parse_reports
from .reading import read_cell
from .sandbox import WORKDIR, PidsCgroup, Sandbox, SandboxUnavailable, runner_env
from .warm import WarmPool, WarmUnavailable

FIELDS = ("submission", "chapter", "task", "points", "max_points", "status", "message")
DEFAULT_TIMEOUT = 300.0
DEFAULT_MEMORY_MB = 4096
_UNSANDBOXED = Sandbox("off")  # the learner's self-check: no bubblewrap, but the process limit where there is one


@dataclass
class CheckResult:
    check: Check
    status: str  # passed | failed | error | not-attempted | timeout
    message: str = ""  # for the instructor (CSV)
    feedback: str = ""  # for the learner: never quotes a hidden check
    hidden: bool = False  # it failed in its hidden part (its visible part passed)

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
    feedback: str = ""
    hidden: bool = False  # the task has hidden checks
    visible_status: str = ""  # the task's status from its visible checks alone (what a self-check shows)
    visible_feedback: str = ""  # feedback on the visible checks alone
    checks_passed: int = 0  # how many of the task's check cells passed
    checks: int = 0  # how many check cells the task has

    def as_csv(self) -> dict:
        row = {k: getattr(self, k) for k in FIELDS}
        row["points"] = fmt_points(self.points)
        row["max_points"] = fmt_points(self.max_points)
        return row


def fmt_points(x: float) -> str:
    """Points as written in tables: ``3``, not ``3.0``; ``1.5`` as is."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def find_notebooks(paths: list[Path]) -> list[tuple[Path, str]]:
    """Every notebook named by ``paths`` with its submission name, sorted by name.

    A file is named as given; a notebook found in a folder is named from that
    folder on (``submissions/alice/01_chain_rule.ipynb``). Names that would still
    collide fall back to the full path.
    """
    found: dict[Path, str] = {}
    for p in paths:
        if p.is_dir():
            base = p.resolve()
            for q in sorted(base.rglob("*.ipynb")):
                if ".ipynb_checkpoints" not in q.parts:
                    found.setdefault(q, (Path(base.name) / q.relative_to(base)).as_posix())
        elif p.is_file():
            found.setdefault(p.resolve(), str(p))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    names = list(found.values())
    named = {path: (str(path) if names.count(name) > 1 else name) for path, name in found.items()}
    return sorted(named.items(), key=lambda item: item[1])


def solution_notebook(chapter: str, solutions: Path = SOLUTIONS_DIR) -> Path:
    """The solutions notebook of a chapter (``solutions/NN_*.ipynb``)."""
    matches = sorted(Path(solutions).glob(f"{chapter}_*.ipynb"))
    if not matches:
        known = sorted(p.name[:2] for p in Path(solutions).glob("[0-9][0-9]_*.ipynb"))
        raise ValueError(
            f"no chapter {chapter!r} in {solutions} (chapters with exercises: {', '.join(known) or 'none'})"
        )
    return matches[0]


def build_program(submission_nb, plan: ChapterPlan) -> tuple[list[dict], dict[str | None, list[str]]]:
    """The cells to run in the learner's process, and what reading them refused.

    Every code cell of the submission but its check cells (the checks run in
    their own process, as the course wrote them), in the submission's order. A
    cell whose source is one of the course's setup cells is ``trusted``; every
    other cell is read first (:mod:`lmcourse.course.reading`, under
    :meth:`ChapterPlan.rules`): one that breaks a rule does not run (its source
    becomes empty) and its violations are returned, keyed by its task (``None``
    for a cell outside every task), ``cell K, line N: what`` each.
    """
    cells: list[dict] = []
    refused: dict[str | None, list[str]] = {}
    k = 0
    for cell in submission_nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        k += 1
        info = cell_info(cell)
        if info.get("role") == "check":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        role = "solution" if info.get("role") == "solution" else "code"
        task = str(info.get("task")) if role == "solution" and info.get("task") is not None else None
        trusted = role == "code" and source in plan.provided
        if not trusted:
            # a syntax error is not a rule broken: the cell runs and raises it, as in Jupyter
            problems = [p for p in read_cell(source, plan.rules(task)) if "a syntax error (" not in p]
            if problems:
                refused.setdefault(task, []).extend(f"code cell {k}, {p}" for p in problems)
                source = ""
        cells.append({"source": source, "role": role, "task": task, "check": None, "trusted": trusted})
    return cells, refused


@dataclass
class Outcome:
    """What running one submission gave: the learner's process's records and reports, the checks' records."""

    records: list[dict | None]
    reports: list[dict]
    problem: str | None
    checks: dict[str, dict]
    checks_finished: bool
    setup_errors: list[dict]


def run_learner(cells: list[dict], timeout: float, memory_mb: int = DEFAULT_MEMORY_MB,
                sandbox: Sandbox | None = None, hide: tuple[Path, ...] = (),
                forbid: dict[str, list[str]] | None = None, forbid_ops: dict[str, list[str]] | None = None,
                warm: WarmPool | None = None, serve_fds: tuple[int, int] | None = None
                ) -> tuple[list[dict | None], list[dict], str | None]:
    """Run the learner's cells in a fresh process, then let it answer the checks; records, reports, problem.

    With ``warm`` (and a sandbox that is active) the process is a fresh fork of
    a warm runner checked out of that pool (:mod:`lmcourse.course.warm`), in
    that runner's sandbox, which hides what the pool's ``hide`` names.

    The runner gets a secret token and the program on its standard input, reads
    both before any submitted code runs and closes it. Records come back on a
    pipe, each signed with the token. With a ``sandbox`` that is
    :meth:`~lmcourse.course.sandbox.Sandbox.active`, the process runs in
    bubblewrap (``hide``: paths to keep out of its view even where they lie in a
    folder it sees); without, in a temporary working directory with your rights.
    A pids cgroup, where one is writable, caps its processes either way.
    ``forbid`` (task -> dotted names) is what each task's answer must not call,
    ``forbid_ops`` (task -> aten operator prefixes) what it must not run;
    ``serve_fds`` (requests in, answers out: the pipes to the checks' process) are
    handed to the runner and closed here.
    """
    if warm is not None and warm.usable():
        try:
            with warm.checkout() as runner:
                return runner.run(cells, timeout, forbid, forbid_ops, serve_fds)
        except WarmUnavailable as err:
            warm.give_up(str(err))
            serve_fds = None  # closed by the runner that failed: the checks see the process end
    token = secrets.token_hex(16)
    sandboxed = sandbox is not None and sandbox.active()
    cgroup = (sandbox or _UNSANDBOXED).cgroup()
    results_r, results_w = os.pipe()
    if serve_fds is None:
        a, b = os.pipe()
        c, d = os.pipe()
        os.close(b)
        os.close(c)
        serve_fds = (a, d)
    try:
        with tempfile.TemporaryDirectory(prefix="lmcourse-grade-") as tmp:
            argv = [sys.executable, "-m", "lmcourse.course.grade_runner", str(results_w), *map(str, serve_fds)]
            if sandboxed:
                env = runner_env(WORKDIR, "/tmp")
                nproc = sandbox.runner_nproc(cgroup is not None)
                if nproc:
                    env["LMCOURSE_GRADE_NPROC"] = str(nproc)
                argv, cwd, env = sandbox.command(argv, env, hide), None, {"PATH": "/usr/bin:/bin"}
            else:
                cwd = Path(tmp) / "work"
                cwd.mkdir()
                env = runner_env(str(cwd), tmp)
            output, results = bytearray(), bytearray()
            try:
                proc = subprocess.Popen(
                    argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=limits(memory_mb, cgroup),
                    pass_fds=(results_w, *serve_fds),
                )
            finally:
                for fd in (results_w, *serve_fds):
                    os.close(fd)
                results_w, serve_fds = -1, ()
            program = (token + "\n" + json.dumps({"cells": cells, "forbid": forbid or {},
                                                   "forbid_ops": forbid_ops or {}, "cell_limit": timeout / 2})).encode()
            threads = [threading.Thread(target=drain, args=(proc.stdout, output, MAX_OUTPUT), daemon=True),
                       threading.Thread(target=drain, args=(os.fdopen(results_r, "rb"), results, MAX_RESULTS),
                                        daemon=True),
                       threading.Thread(target=feed, args=(proc.stdin, program), daemon=True)]
            results_r = -1
            for t in threads:
                t.start()
            try:
                code = proc.wait(timeout=timeout)
                problem = f"the notebook's process ended (exit code {code})"
            except subprocess.TimeoutExpired:
                problem = "timeout"
            kill_group(proc)  # also ends anything the submission started
            if cgroup is not None:
                PidsCgroup.remove(cgroup)  # ... even what left the process group
            for t in threads:
                t.join(timeout=10)
    finally:
        for fd in (results_r, results_w, *serve_fds):
            if fd >= 0:
                os.close(fd)
        if cgroup is not None:  # the process could not start: the cgroup is empty
            PidsCgroup.remove(cgroup)
    return parse_records(results, token, len(cells)), parse_reports(results, token), problem


def run_submission(cells: list[dict], plan: ChapterPlan, timeout: float, memory_mb: int = DEFAULT_MEMORY_MB,
                   sandbox: Sandbox | None = None, hide: tuple[Path, ...] = (), warm: WarmPool | None = None,
                   checks: CheckPool | None = None, secret: int | None = None,
                   visible_only: bool = False) -> Outcome:
    """Run the learner's cells in their process and the chapter's checks in another, wired together."""
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    box: list = []

    def learner() -> None:
        try:
            box.append(run_learner(cells, timeout, memory_mb, sandbox, hide, plan.forbid_calls(),
                                   plan.forbid_ops(), warm, (req_r, rep_w)))
        except BaseException as err:  # noqa: BLE001 - reported as the process's end
            box.append(([None] * len(cells), [], f"the notebook's process did not start ({err})"))

    thread = threading.Thread(target=learner, daemon=True)
    thread.start()
    program = {"cells": plan.check_cells, "names": plan.names, "secret": secret, "visible_only": visible_only}
    own = nullcontext(checks) if checks is not None else CheckPool()
    try:
        with own as pool, pool.checkout() as server:
            check_records, finished = server.run(program, req_w, rep_r, time.monotonic() + timeout + 60)
    except CheckServerError as err:
        check_records, finished = [{"setup": -1, "etype": "CheckServerError", "message": str(err)}], False
    finally:
        if checks is None:
            own.close()
    thread.join()
    records, reports, problem = box[0]
    by_check = {str(r["check"]): r for r in check_records if "check" in r}
    return Outcome(records, reports, problem, by_check, finished, [r for r in check_records if "setup" in r])


def _describe(rec: dict) -> str:
    return f"{rec['etype']}: {rec['message']}" if rec.get("message") else str(rec["etype"])


def forbidden_calls(records: list[dict | None], reports: list[dict] = ()) -> dict[str, list[str]]:
    """Task -> the forbidden names its answer called (the runner's last word on it)."""
    last = next((r for r in reversed(list(reports)) if r), None) or next((r for r in reversed(records) if r), None)
    found = (last or {}).get("forbidden") or {}
    return {str(t): [str(n) for n in names] for t, names in found.items() if isinstance(names, list) and names}


def forbidden_ops(reports: list[dict]) -> dict[str, list[str]]:
    """Task -> the forbidden aten operators its checks saw run."""
    last = next((r for r in reversed(list(reports)) if r), None)
    found = (last or {}).get("ops") or {}
    return {str(t): [str(n) for n in names] for t, names in found.items() if isinstance(names, list) and names}


def score(checks: list[Check], cells: list[dict], outcome: Outcome, timeout: float,
          refused: dict[str | None, list[str]] | None = None) -> list[CheckResult]:
    """One result per check, from the checks' records and what the learner's process reported.

    Every check of a task whose answer was refused by reading, called a forbidden
    function or ran a forbidden operator fails with a message that says which.
    """
    refused = refused or {}
    calls = forbidden_calls(outcome.records, outcome.reports)
    ops = forbidden_ops(outcome.reports)
    broken = {  # a task whose solution cell itself raised: report that, not its echo in the check
        cell["task"]: f"the solution cell raised {_describe(rec)}"
        for cell, rec in zip(cells, outcome.records, strict=True)
        if cell["role"] == "solution" and rec and rec["status"] == "error" and rec["etype"] != "NotImplementedError"
    }
    gone = outcome.problem or "the notebook's process ended"
    results: list[CheckResult] = []
    for check in checks:
        rec = outcome.checks.get(check.check)
        hidden = bool(rec and rec.get("part") == "hidden")
        if rec is None:
            if outcome.problem == "timeout":
                status, message = "timeout", f"the notebook did not finish within {timeout:g} s"
            else:
                status, message = "error", f"the check never ran: {gone}"
        elif rec["status"] == "ok":
            status, message = "passed", ""
        elif rec["etype"] == "LearnerGone":
            if outcome.problem == "timeout":
                status, message = "timeout", f"the notebook did not finish within {timeout:g} s"
            else:
                status, message = "error", f"the check could not finish: {gone}"
            hidden = False
        elif rec["etype"] == "NotImplementedError":
            status, message = "not-attempted", "the task still raises NotImplementedError"
        elif rec["etype"] == "AssertionError":
            status = "failed"
            message = rec["message"] or "a check failed"
        else:
            status, message = "error", broken.get(check.task) or _describe(rec)
        feedback = message
        if hidden and status in ("failed", "error"):
            message = f"hidden check: {message}"
            feedback = ("passed the visible checks but failed a hidden one"
                        + (f" ({rec['etype']})" if status == "error" else "")
                        + ": test your code on more cases")
        verdicts = []
        if check.task in refused:
            verdicts.append("not run: " + "; ".join(refused[check.task][:10]))
        verdicts += [forbidden_message(check.task, n) for n in calls.get(check.task, [])]
        verdicts += [f"task {check.task} must not run aten::{op}" for op in ops.get(check.task, [])]
        if verdicts:
            status, hidden = "failed", False
            message = feedback = "; ".join(verdicts)
        elif status != "passed" and refused.get(None):
            note = "a cell you added was not run: " + "; ".join(refused[None][:10])
            message, feedback = f"{message}; {note}", f"{feedback}; {note}"
        results.append(CheckResult(check, status, message, feedback, hidden and status in ("failed", "error")))
    return results


_STATUS_ORDER = ("timeout", "error", "failed", "not-attempted", "passed")


class Chapters:
    """The checks and the plan (:class:`~lmcourse.course.plan.ChapterPlan`) of each chapter, read from
    ``solutions/`` once and kept in memory."""

    def __init__(self, solutions: Path = SOLUTIONS_DIR) -> None:
        self.solutions = Path(solutions)
        self._checks: dict[str, list[Check]] = {}
        self._plans: dict[str, ChapterPlan] = {}

    def checks(self, chapter: str) -> list[Check]:
        if chapter not in self._checks:
            path = solution_notebook(chapter, self.solutions)
            nb = nbformat.read(path, as_version=4)
            self._plans[chapter] = ChapterPlan.of(nb)
            self._checks[chapter] = checks_of(nb, str(path))
        return self._checks[chapter]

    def plan(self, chapter: str) -> ChapterPlan:
        self.checks(chapter)
        return self._plans[chapter]

    def forbid(self, chapter: str) -> dict[str, list[str]]:
        """Task -> the dotted names its answer must not call."""
        return self.plan(chapter).forbid_calls()

    def preload(self) -> None:
        for path in sorted(self.solutions.glob("[0-9][0-9]_*.ipynb")):
            self.checks(path.name[:2])


def task_rows(name: str, chapter: str, checks: list[Check], results: list[CheckResult]) -> list[TaskRow]:
    """One row per task: the points of its passed checks and its worst status."""
    points = {c.check: c.points for c in checks}
    rows: list[TaskRow] = []
    for task in dict.fromkeys(c.task for c in checks):
        mine = [r for r in results if r.check.task == task]
        got = sum(points[r.check.check] for r in mine if r.status == "passed")
        worst = min(mine, key=lambda r: _STATUS_ORDER.index(r.status))
        messages = "; ".join(dict.fromkeys(r.message for r in mine if r.message))
        feedback = "; ".join(dict.fromkeys(r.feedback for r in mine if r.feedback))
        seen = [r for r in mine if not r.hidden]  # a check failed only in its hidden part passed its visible one
        visible = min(seen, key=lambda r: _STATUS_ORDER.index(r.status)).status if seen else "passed"
        visible_feedback = "; ".join(dict.fromkeys(r.feedback for r in seen if r.feedback))
        hidden = any(line.strip() == BEGIN_HIDDEN for c in checks if c.task == task for line in c.source.split("\n"))
        rows.append(TaskRow(name, chapter, task, got, sum(c.points for c in checks if c.task == task),
                            worst.status, messages, feedback, hidden, visible, visible_feedback,
                            sum(r.status == "passed" for r in mine), len(mine)))
    return rows


_DEFAULT_SANDBOX: list[Sandbox] = []


def default_sandbox() -> Sandbox:
    """The sandbox :func:`grade_notebook` uses when given none: bubblewrap where it runs (one per process)."""
    if not _DEFAULT_SANDBOX:
        _DEFAULT_SANDBOX.append(Sandbox("auto", hide=(SOLUTIONS_DIR,)))
    return _DEFAULT_SANDBOX[0]


def grade_notebook(path: Path, chapter: str | None = None, solutions: Path = SOLUTIONS_DIR,
                   timeout: float = DEFAULT_TIMEOUT, name: str | None = None,
                   memory_mb: int = DEFAULT_MEMORY_MB, chapters: Chapters | None = None,
                   sandbox: Sandbox | None = None, warm: WarmPool | None = None,
                   checks: CheckPool | None = None) -> list[TaskRow]:
    """Grade one submission; returns one row per task of its chapter.

    ``chapter`` is what the instructor expects (``--chapter``); a notebook that
    says it belongs to another chapter scores zero with that reason. The
    submission runs in ``sandbox`` (default: :func:`default_sandbox`; pass
    ``Sandbox("off")`` to run it without one); the checks run in a process of
    their own (from ``checks``, a :class:`~lmcourse.course.check_pool.CheckPool`,
    else a fresh one), with hidden inputs drawn from a secret seed.
    """
    name = name or str(path)
    chapters = chapters or Chapters(solutions)
    nb, problem = None, None
    try:
        nb = nbformat.read(path, as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("it has no list of cells")
    except Exception as err:  # noqa: BLE001 - broken JSON, wrong schema, unreadable file
        nb, problem = None, f"not a readable notebook: {type(err).__name__}: {str(err)[:200]}"
    own = chapter_of(path, nb)
    target = chapter or own
    if target is None:
        return [TaskRow(name, "?", "?", 0, 0, "error",
                        "cannot tell the chapter: name the file NN_*.ipynb or pass --chapter")]
    checks_list = chapters.checks(target)
    if problem is None and chapter and own and own != chapter:
        problem = f"this is a notebook of chapter {own}, not chapter {chapter}"
    if problem is not None:
        results = [CheckResult(c, "error", problem, problem) for c in checks_list]
    else:
        plan = chapters.plan(target)
        cells, refused = build_program(nb, plan)
        hide = (Path(chapters.solutions), Path(path))
        outcome = run_submission(cells, plan, timeout, memory_mb, sandbox or default_sandbox(), hide, warm,
                                 checks, secrets.randbits(62))
        results = score(checks_list, cells, outcome, timeout, refused)
    return task_rows(name, target, checks_list, results)


def grade_notebooks(items: list[tuple[Path, str]], chapter: str | None = None, solutions: Path = SOLUTIONS_DIR,
                    timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
                    chapters: Chapters | None = None, sandbox: Sandbox | None = None, jobs: int = 1,
                    warm: bool | WarmPool = True, checks: CheckPool | None = None) -> list[list[TaskRow]]:
    """Grade a batch, ``jobs`` at a time: the rows of each (path, name) of ``items``, in order.

    Each grading thread keeps one warm runner (:mod:`lmcourse.course.warm`) for
    the whole batch where the sandbox is active (``warm=False``: a cold process
    per submission; a :class:`~lmcourse.course.warm.WarmPool`: its runners, left
    running for the next batch), and one checks' process
    (:mod:`lmcourse.course.check_pool`; ``checks``: the caller's pool, left running).
    One submission that breaks the grader costs only its own rows: the batch
    always completes.
    """
    chapters = chapters or Chapters(solutions)
    sandbox = sandbox or default_sandbox()

    def one(pool: WarmPool | None, check_pool: CheckPool, item: tuple[Path, str]) -> list[TaskRow]:
        path, name = item
        try:
            return grade_notebook(path, chapter, solutions, timeout, name, memory_mb, chapters, sandbox,
                                  warm=pool, checks=check_pool)
        except Exception as err:  # noqa: BLE001 - one submission never stops the batch
            return [TaskRow(name, chapter or "?", "?", 0, 0, "error", f"{type(err).__name__}: {err}")]

    # a pool given is the caller's to close; one made here ends with the batch
    own = nullcontext(warm) if isinstance(warm, WarmPool) else WarmPool(sandbox, memory_mb, (Path(solutions),))
    own_checks = nullcontext(checks) if checks is not None else CheckPool()
    with own as pool, own_checks as check_pool, ThreadPoolExecutor(max_workers=jobs) as threads:
        return list(threads.map(lambda item: one(pool if warm else None, check_pool, item), items))


def write_feedback(rows: list[TaskRow], folder: Path) -> list[Path]:
    """One Markdown file per submission: each task, its points, what to fix."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for sub in dict.fromkeys(r.submission for r in rows):
        mine = [r for r in rows if r.submission == sub]
        got, total = sum(r.points for r in mine), sum(r.max_points for r in mine)
        lines = [f"# Feedback: {sub}", "",
                 f"Chapter {mine[0].chapter}: **{fmt_points(got)} / {fmt_points(total)} points**", "",
                 "| task | points | status | what to look at |", "|---|---|---|---|"]
        for r in mine:
            note = (r.feedback or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r.task} | {fmt_points(r.points)} / {fmt_points(r.max_points)} | {r.status} | {note} |")
        path = folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", sub).strip("_") + ".md")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written


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
        lines.append(f"{sub}  (chapter {mine[0].chapter}): {fmt_points(got)}/{fmt_points(total)} points, {pct:.0f}%")
        for r in mine:
            note = f"  {r.message}" if r.message else ""
            points = f"{fmt_points(r.points):>4}/{fmt_points(r.max_points):<4}"
            lines.append(f"    {r.task:<28} {points} {r.status}{note[:120]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks or folders of notebooks")
    parser.add_argument("--chapter", help="the chapter (NN) every submission should be")
    parser.add_argument("--out", type=Path, help="write the CSV here (default: standard output)")
    parser.add_argument("--feedback", type=Path, help="write one Markdown feedback file per submission here")
    parser.add_argument("--gradebook", type=Path, help="also write a gradebook CSV: a row per student, "
                        "a column per chapter (LMS import)")
    parser.add_argument("--gradescope", type=Path, metavar="ZIP", help="write a Gradescope autograder zip "
                        "(for --chapter, else every chapter) and exit; no PATHS needed")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per submission")
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB, help="memory limit per submission (MB)")
    parser.add_argument("--solutions", type=Path, default=SOLUTIONS_DIR, help="the solutions/ folder")
    isolation = parser.add_mutually_exclusive_group()
    isolation.add_argument("--require-sandbox", action="store_true",
                           help="refuse to grade where bubblewrap cannot run (default: say so once, run without)")
    isolation.add_argument("--no-sandbox", action="store_true",
                           help="run submissions without bubblewrap, with your user's rights")
    parser.add_argument("--cold", action="store_true", help="give every submission its own fresh sandbox and "
                        "runner (default: one warm runner per job, forked afresh for each submission; README)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.timeout <= 0 or args.memory < 256:
        parser.error("--jobs must be >= 1, --timeout > 0 and --memory >= 256")
    if args.gradescope:
        try:
            names = write_autograder(args.gradescope, args.chapter, args.solutions)
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.gradescope} ({len(names)} files): upload it as the assignment's autograder on Gradescope")
        return 0
    if not args.paths:
        parser.error("name the notebooks or folders to grade (or --gradescope ZIP)")
    chapters = Chapters(args.solutions)
    mode = "require" if args.require_sandbox else "off" if args.no_sandbox else "auto"
    sandbox = Sandbox(mode, hide=(args.solutions, *args.paths))
    try:
        notebooks = find_notebooks(args.paths)
        if args.chapter:
            chapters.checks(args.chapter)
        chapters.preload()  # before any submission runs
        sandbox.active()  # says once that there is none (auto), or refuses (require)
    except (FileNotFoundError, ValueError, SandboxUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not notebooks:
        print("error: no notebooks (*.ipynb) found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 2

    graded = grade_notebooks(notebooks, args.chapter, args.solutions, args.timeout, args.memory, chapters, sandbox,
                             args.jobs, warm=not args.cold)
    rows = [row for rows in graded for row in rows]
    if args.feedback:
        write_feedback(rows, args.feedback)
    if args.gradebook:
        write_gradebook(rows, args.gradebook, args.solutions)
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            write_csv(rows, f)
        print(summary(rows))
        print(f"\nwrote {len(rows)} rows to {args.out}")
    else:
        write_csv(rows, sys.stdout)
        print(summary(rows), file=sys.stderr)
    if args.gradebook:
        print(f"wrote the gradebook ({len({student_of(r.submission) for r in rows})} students) to {args.gradebook}",
              file=sys.stderr if not args.out else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
