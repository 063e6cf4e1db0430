"""Forbidden calls: a task's answer must not call the function it rebuilds.

A solution cell of ``solutions/`` names, in its metadata, the package (or PyTorch)
functions, classes and methods that its task's answer must not use::

    {"lmcourse": {"role": "solution", "task": "rms_norm",
                  "forbid": ["lmcourse.transformer.make_norm", "torch.nn.RMSNorm"]}}

While a submission runs (:mod:`lmcourse.course.grade_runner`, for the grader and
for the learner's self-check alike), :class:`CallRecorder` replaces each named
callable by a recorder that behaves exactly like it:

* a **function**: on its module and on every loaded module that holds the same
  object under any name, so ``from torch.nn.functional import rms_norm as f``
  in any cell, and ``torch.rms_norm``'s copies inside ``torch``, get the
  recorder too;
* a **class**: its ``__init__`` and the ``forward``, ``__call__`` and ``step`` it
  defines, so making or using an instance, an instance of a subclass, or one
  that a helper builds is seen;
* a **method** (``lmcourse.optim.MuonAdamW.step``): on its class.

The recorder looks at the call stack and records the call against task T when

1. a frame of T's own solution cell is on the stack (T's answer called it, at
   any time, directly or through any helper), or
2. T's checks are running and a frame of the learner's code is on the stack:
   code that is not a library file, not a check cell and not a setup cell as
   the course provides it (a helper in a cell of the learner's, a function
   built with ``exec``, a module the learner wrote).

A check that calls the reference itself, to compare, has no learner frame on
the stack when it does, so it is not recorded. A task with a recorded call
scores 0 with the message :func:`message` gives: ``task T must not call NAME``.

What it does not catch: the same computation reached by another route
(``torch.ops.aten``, a copy of the source), the original dug out of the
recorder by code that goes looking for it (it runs in the learner's process), or
a value computed with a forbidden function in a cell outside every task's code
and checks and returned later by the answer.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import sysconfig
from collections.abc import Iterable, Mapping

from .sandbox import package_dir, python_dirs

CLASS_METHODS = ("__init__", "forward", "__call__", "step")  # wrapped on a forbidden class
_MISSING = object()
_RECORDER_CODE = None  # the code of every recorder (one closure's code): a frame of it is a forbidden call


def message(task: str, name: str) -> str:
    """The grader's message for a forbidden call.

    >>> message("rms_norm", "torch.nn.functional.rms_norm")
    'task rms_norm must not call torch.nn.functional.rms_norm'
    """
    return f"task {task} must not call {name}"


def resolve(name: str) -> tuple[object, str, object]:
    """``(owner, attribute, object)`` for a dotted name of a function, class or method.

    The longest importable prefix is the module; the rest are attributes.

    >>> owner, attr, obj = resolve("lmcourse.course.forbid.message")
    >>> attr, obj is message
    ('message', True)
    """
    if not isinstance(name, str) or not name or any(not p.isidentifier() for p in name.split(".")):
        raise ValueError(f"forbid: {name!r} is not a dotted name like 'torch.nn.functional.rms_norm'")
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        owner, attr = obj, parts[i]
        for attr in parts[i:]:
            owner = obj
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                raise ValueError(f"forbid: {name!r} does not exist ({'.'.join(parts[:i])} has no {attr!r} there)")
        if inspect.ismodule(obj) or not callable(obj):
            raise ValueError(f"forbid: {name!r} is not a function, class or method")
        return owner, attr, obj
    raise ValueError(f"forbid: no module of {name!r} can be imported")


def check_forbid(forbid: object, where: str = "forbid") -> dict[str, list[str]]:
    """``forbid`` as ``{task: [dotted names]}``; ``ValueError`` for any other shape."""
    if not isinstance(forbid, Mapping):
        raise ValueError(f"{where}: expected a mapping of task to a list of dotted names, got {type(forbid).__name__}")
    out: dict[str, list[str]] = {}
    for task, names in forbid.items():
        if not isinstance(task, str) or isinstance(names, str) or not isinstance(names, Iterable):
            raise ValueError(f"{where}: task {task!r} must map to a list of dotted names, got {names!r}")
        names = list(names)
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: task {task!r}: every forbidden name must be a string, got {names!r}")
        out[task] = names
    return out


def trusted_roots() -> tuple[str, ...]:
    """Folders whose files are library code: the Python installation, its environment, the package."""
    roots = {str(p) for p in python_dirs()} | {str(package_dir())}
    roots |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(sorted({os.path.realpath(r).rstrip(os.sep) + os.sep for r in roots if r}))


class CallRecorder:
    """Records calls of forbidden callables made by a learner's code, per task (see the module's docstring).

    >>> rec = CallRecorder({"t": ["lmcourse.course.forbid.message"]})
    >>> rec.install()
    >>> rec.register("<answer>", task="t")  # code compiled under this name is task t's answer
    >>> exec(compile("from lmcourse.course.forbid import message as m; m('a', 'b')", "<answer>", "exec"), {})
    >>> rec.calls
    {'t': ['lmcourse.course.forbid.message']}
    >>> rec.uninstall()
    """

    def __init__(self, forbid: Mapping[str, Iterable[str]]) -> None:
        self.forbid = check_forbid(forbid)
        self.calls: dict[str, list[str]] = {}  # task -> forbidden names its code called, in order
        self.unresolved: list[str] = []  # names that do not exist here (another torch version)
        self.checking: str | None = None  # the task whose checks run now
        self.user_globals: dict | None = None  # the namespace the cells run in
        self.enabled = True
        self._cells: dict[str, tuple[bool, str | None]] = {}  # code name -> (learner's?, task of a solution cell)
        self._files: dict[str, bool] = {}  # file name -> learner's? (a cache)
        self._roots = trusted_roots()
        self._patches: list[tuple[object, str, object, object]] = []  # owner, attribute, original, recorder

    # -- which code is whose ------------------------------------------------------------

    def register(self, code_name: str, task: str | None = None, trusted: bool = False) -> None:
        """Say whose code a compiled cell is: a check or provided setup (``trusted``), else the learner's
        (``task``: the task whose solution cell it is)."""
        self._cells[code_name] = (not trusted, None if trusted else task)

    def _learner(self, frame) -> tuple[bool, str | None]:
        name = frame.f_code.co_filename
        cell = self._cells.get(name)
        if cell is not None:
            return cell
        if self.user_globals is not None and frame.f_globals is self.user_globals:
            return True, None  # exec'd or eval'd in the notebook's namespace
        if name.startswith("<frozen "):
            return False, None
        if os.path.isabs(name):
            known = self._files.get(name)
            if known is None:
                known = self._files[name] = not os.path.realpath(name).startswith(self._roots)
            return known, None
        module = sys.modules.get(frame.f_globals.get("__name__", ""))  # generated code (dataclasses, ...)
        file = getattr(module, "__file__", None)
        ours = module is not None and vars(module) is frame.f_globals and isinstance(file, str)
        return not (ours and os.path.realpath(file).startswith(self._roots)), None

    def _seen(self, names: dict[str, str], frame) -> None:
        learner, solutions = False, set()
        while frame is not None:
            if frame.f_code is _RECORDER_CODE and not learner:
                return  # called by another forbidden callable's own code: that call is the one to report
            mine, task = self._learner(frame)
            learner = learner or mine
            if task is not None:
                solutions.add(task)
            frame = frame.f_back
        for task, name in names.items():
            if task in solutions or (learner and task == self.checking):
                called = self.calls.setdefault(task, [])
                if name not in called:
                    called.append(name)

    # -- putting recorders in place -----------------------------------------------------

    def _recorder(self, original, names: dict[str, str]):
        seen = self._seen

        def recorder(*args, **kwargs):
            if self.enabled:
                seen(names, sys._getframe(1))
            return original(*args, **kwargs)

        global _RECORDER_CODE
        _RECORDER_CODE = recorder.__code__
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                setattr(recorder, attr, getattr(original, attr))
            except (AttributeError, TypeError):
                pass
        try:
            recorder.__signature__ = inspect.signature(original)
        except (TypeError, ValueError):
            pass
        return recorder

    def _patch(self, owner, attr: str, replacement) -> None:
        original = vars(owner).get(attr, _MISSING)
        setattr(owner, attr, replacement)
        self._patches.append((owner, attr, original, replacement))

    def install(self) -> None:
        """Put a recorder in place of every forbidden callable that exists here."""
        targets: dict[int, tuple[object, object, str, dict[str, str]]] = {}
        for task, names in self.forbid.items():
            for name in names:
                try:
                    owner, attr, obj = resolve(name)
                except ValueError:
                    self.unresolved.append(name)
                    continue
                targets.setdefault(id(obj), (obj, owner, attr, {}))[3].setdefault(task, name)
        functions: dict[int, tuple[object, object]] = {}
        for obj, owner, attr, names in targets.values():
            if isinstance(obj, type):
                for method in CLASS_METHODS:
                    if method == "__init__" or method in vars(obj):
                        self._wrap_method(obj, method, names)
            elif isinstance(owner, type):
                self._wrap_method(owner, attr, names)
            else:
                functions[id(obj)] = (obj, self._recorder(obj, names))
        if functions:  # every module that holds one, under any name
            for module in list(sys.modules.values()):
                try:
                    items = list(vars(module).items())
                except TypeError:
                    continue
                for attr, value in items:
                    found = functions.get(id(value))
                    if found is not None and found[0] is value:
                        try:
                            self._patch(module, attr, found[1])
                        except (AttributeError, TypeError):
                            pass

    def _wrap_method(self, cls: type, method: str, names: dict[str, str]) -> None:
        raw = vars(cls).get(method, _MISSING)
        if isinstance(raw, staticmethod):
            replacement: object = staticmethod(self._recorder(raw.__func__, names))
        elif isinstance(raw, classmethod):
            replacement = classmethod(self._recorder(raw.__func__, names))
        else:
            replacement = self._recorder(getattr(cls, method) if raw is _MISSING else raw, names)
        try:
            self._patch(cls, method, replacement)
        except (AttributeError, TypeError):  # a built-in type's slot
            pass

    def reinstall(self) -> list[str]:
        """Put back every recorder that code replaced since; returns what had been replaced."""
        replaced = []
        for owner, attr, _, recorder in self._patches:
            if vars(owner).get(attr, _MISSING) is not recorder:
                replaced.append(f"{getattr(owner, '__name__', owner)}.{attr}")
                try:
                    setattr(owner, attr, recorder)
                except (AttributeError, TypeError):
                    pass
        return replaced

    def uninstall(self) -> None:
        """Put every original back."""
        for owner, attr, original, _ in reversed(self._patches):
            try:
                if original is _MISSING:
                    delattr(owner, attr)
                else:
                    setattr(owner, attr, original)
            except (AttributeError, TypeError):
                pass
        self._patches.clear()

    def messages(self) -> dict[str, str]:
        """Each task with a recorded call and its message (one per forbidden name, joined by semicolons)."""
        return {task: "; ".join(message(task, n) for n in names) for task, names in self.calls.items() if names}

