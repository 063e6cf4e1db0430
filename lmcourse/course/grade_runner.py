"""Runs one submission's cells in this (separate, sandboxed) process, then answers the checks.

    python -m lmcourse.course.grade_runner RESULTS_FD REQUEST_FD ANSWER_FD
        (a secret token, a newline and the program on stdin)

Used by :mod:`lmcourse.course.grade` (a cold runner) and by a warm runner's
children (:mod:`lmcourse.course.warm_server`). The grader writes a secret token and
the program (the learner's cells as the grader read them: no check cell ever
comes here) to standard input and closes it; the runner reads both to the end
before any submitted code runs, then points standard input at ``/dev/null``. Each
cell runs with IPython, so magics behave as in Jupyter; a cell that raises does
not stop the run, and a cell that runs past half the time limit is stopped
(:class:`CellTimeout`). After each cell one JSON line goes to the inherited pipe
``RESULTS_FD``, signed with the token. Then the runner answers the checks'
process (:mod:`lmcourse.course.serve`) on the two other pipes until it closes them.

The program also names, per task, the functions and classes its answer must not
call (``"forbid"``) and the aten operators it must not run (``"forbid_ops"``), and
marks the cells the course provides (``"trusted"``). A
:class:`~lmcourse.course.forbid.CallRecorder` is installed before any submitted code
runs; the grader scores a task 0 when its checks saw either.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import random
import resource
import signal
import sys

import torch  # imported before the submission runs, so its state can be guarded
from IPython.core.interactiveshell import InteractiveShell

import lmcourse

from .forbid import CallRecorder
from .markers import BEGIN_HIDDEN, END_HIDDEN
from .serve import LearnerSide

GUARDED_PREFIXES = ("lmcourse", "torch", "numpy", "math", "builtins", "json", "random")


def import_package() -> list[str]:
    """Import every module of ``lmcourse``, so that :class:`ModuleGuard` covers them all.

    A module imported only later, by the submission, would not be guarded: a
    submission could patch, say, ``lmcourse.attention.causal_mask`` before the
    check that compares against it. Command-line entry points (``__main__``) and
    the course tooling (``lmcourse.course``: the grader, the exercise generator,
    the notebook runner), which no check calls, are left out; the tooling this
    runner uses itself is imported, and so guarded, anyway. Leaving the tooling
    out keeps ``nbformat`` and ``jsonschema`` out of the process: seconds per
    submission. Returns the names imported.
    """
    names = []
    for info in pkgutil.walk_packages(lmcourse.__path__, "lmcourse.", onerror=lambda name: None):
        if info.name.startswith("lmcourse.course.") or info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        try:
            importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - a module that cannot be imported cannot be patched either
            continue
        names.append(info.name)
    return names


def split_check(source: str) -> tuple[str, str]:
    """A check cell's (visible, hidden) code."""
    visible, hidden, inside = [], [], False
    for line in source.split("\n"):
        if line.strip() == BEGIN_HIDDEN:
            inside = True
        elif line.strip() == END_HIDDEN:
            inside = False
        else:
            (hidden if inside else visible).append(line)
    return "\n".join(visible), "\n".join(hidden)


class ModuleGuard:
    """Remembers the public functions and classes of guarded modules and restores them.

    Only public callables are restored: they are what a submission would patch to
    fool a check (``torch.allclose = lambda *a, **k: True``), and leaving other
    module state alone cannot disturb the libraries' own bookkeeping.
    """

    def __init__(self) -> None:
        self.modules = {n: m for n, m in sys.modules.items()
                        if m is not None and n.split(".")[0] in GUARDED_PREFIXES}
        self.saved: dict[str, dict[str, object]] = {}
        for name, module in self.modules.items():
            try:
                attrs = vars(module)
            except TypeError:
                continue
            self.saved[name] = {a: v for a, v in attrs.items() if not a.startswith("_") and callable(v)}

    def restore(self) -> list[str]:
        """Undo changes to the saved modules; returns what had been changed."""
        changed: list[str] = []
        for name, module in self.modules.items():
            if sys.modules.get(name) is not module:
                sys.modules[name] = module
                changed.append(name)
            current = vars(module)
            for attr, value in self.saved.get(name, {}).items():
                if _dynamo_wrapped(current.get(attr), value):  # PyTorch's own doing: keep it
                    self.saved[name][attr] = current[attr]
                elif current.get(attr, _MISSING) is not value:
                    changed.append(f"{name}.{attr}")
                    try:
                        setattr(module, attr, value)
                    except (AttributeError, TypeError):
                        pass
        return changed


_MISSING = object()
# PyTorch imports torch._dynamo lazily, the first time code calls one of the
# functions it keeps out of compilation (building an optimizer does), and that
# import replaces ``torch.manual_seed`` with such a wrapper of itself. Importing
# dynamo up front costs about a second per submission, and most never need it;
# so the guard accepts exactly that change instead (the wrapper calls the
# function it wraps, nothing else).
_DISABLE_DYNAMO_CODE = torch._disable_dynamo(lambda: None).__code__


def _dynamo_wrapped(new: object, old: object) -> bool:
    """Whether ``new`` is PyTorch's dynamo-disabling wrapper of ``old`` (and nothing else)."""
    if new is old or "torch._dynamo" not in sys.modules or getattr(new, "__code__", None) is not _DISABLE_DYNAMO_CODE:
        return False
    try:
        inside = [cell.cell_contents for cell in new.__closure__]
    except (TypeError, ValueError):  # no closure, or an empty cell
        return False
    return getattr(new, "__wrapped__", None) is old and all(x is old or isinstance(x, bool) for x in inside) \
        and any(x is old for x in inside)


class CellTimeout(BaseException):
    """A cell ran past its share of the time limit (half of it): it is stopped and the next one runs."""


def read_program(fd: int) -> dict:
    """The program from ``fd``, read to its end (the grader closes its side): a dict with the token,
    the cells, and per task the forbidden names (``forbid``) and aten operators (``forbid_ops``)."""
    with os.fdopen(fd, "rb", closefd=True) as stream:
        data = stream.read()
    token, _, program = data.decode("utf-8").partition("\n")
    loaded = json.loads(program)
    return {"token": token.strip(), "cells": loaded["cells"], "forbid": loaded.get("forbid") or {},
            "forbid_ops": loaded.get("forbid_ops") or {}, "cell_limit": loaded.get("cell_limit")}


def main(results_fd: int, req_fd: int, rep_fd: int) -> int:
    program = read_program(os.dup(0))
    sys.stdin.close()
    return execute(program, results_fd, (req_fd, rep_fd))


def execute(program: dict, results_fd: int, serve_fds: tuple[int, int] | None = None) -> int:
    """Run the program's cells, one signed record per cell to ``results_fd``; then answer the checks.

    Standard input becomes empty. With ``serve_fds`` (requests in, answers out)
    the runner then serves the checks' process (:mod:`lmcourse.course.serve`)
    until it closes its end; every finding of a forbidden call or operator goes
    to ``results_fd`` as a signed record with ``"report": true``.
    """
    token, cells, forbid = program["token"], program["cells"], program["forbid"]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # input() in a submission meets end of file
    nproc = os.environ.pop("LMCOURSE_GRADE_NPROC", None)
    if nproc:  # counted in the sandbox's own user namespace (see lmcourse.course.sandbox)
        resource.setrlimit(resource.RLIMIT_NPROC, (int(nproc), int(nproc)))

    import_package()
    random.seed(0)
    torch.manual_seed(0)
    shell = InteractiveShell.instance()
    try:
        recorder = CallRecorder(forbid)
    except ValueError:  # the grader checks the lists first; a malformed one forbids nothing
        recorder = CallRecorder({})
    recorder.install()  # before the guard's snapshot, so that restoring a module restores the recorders too
    recorder.user_globals = shell.user_ns
    whose = {"task": None, "trusted": True}  # the cell that runs now: every code name it compiles is its
    cache = shell.compile.cache

    def cache_and_register(*args, **kwargs):
        name = cache(*args, **kwargs)
        recorder.register(name, **whose)
        return name

    shell.compile.cache = cache_and_register
    guard = ModuleGuard()
    results = os.fdopen(results_fd, "w", encoding="utf-8")
    write_line, flush = results.write, results.flush  # kept before the submission can patch them
    dumps = json.dumps

    def write(record: dict) -> bool:
        try:
            write_line(dumps(record) + "\n")
            flush()
            return True
        except (OSError, ValueError):  # the submission closed the pipe: nothing more can be reported
            return False

    cell_limit = float(program.get("cell_limit") or 0)

    def stop_cell(signum, frame):
        raise CellTimeout(f"the cell ran longer than {cell_limit:g} s and was stopped")

    if cell_limit > 0:
        signal.signal(signal.SIGALRM, stop_cell)

    def run(source: str) -> BaseException | None:
        try:
            if cell_limit > 0:
                signal.setitimer(signal.ITIMER_REAL, cell_limit)
            res = shell.run_cell(source, store_history=False)
            return res.error_before_exec or res.error_in_exec
        except BaseException as err:  # noqa: BLE001 - a submission may raise anything
            return err
        finally:
            if cell_limit > 0:
                signal.setitimer(signal.ITIMER_REAL, 0)

    tampered: list[str] = []
    for i in range(len(cells)):
        cell, cells[i] = cells[i], None
        record = {"token": token, "cell": i, "status": "ok", "etype": None, "message": None, "part": None}
        trusted = bool(cell.get("trusted"))
        whose.update(task=None if trusted or cell["role"] != "solution" else cell.get("task"), trusted=trusted)
        exc = run(cell["source"])
        if exc is not None:
            record.update(status="error", etype=type(exc).__name__, message=str(exc)[:500])
        exc = None
        # Undo any patching of guarded modules at once, so that this runner's own bookkeeping
        # cannot be fooled by it.
        for name in guard.restore() + recorder.reinstall():
            if name not in tampered:
                tampered.append(name)
        record["restored"] = tampered[:20]
        record["forbidden"] = {task: list(names) for task, names in recorder.calls.items()}
        cell = None
        if not write(record):
            return 1
    whose.update(task=None, trusted=False)  # code compiled from now on (exec in an answer) is the learner's
    if serve_fds is not None:
        def report(found: dict) -> None:
            write({"token": token, "report": True, **found})

        LearnerSide(shell.user_ns, recorder, program.get("forbid_ops") or {}, report).serve(*serve_fds)
    results.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
