"""What a learner's code may do, decided by reading it before anything runs (issue 27's first layer).

A check that runs in the learner's process can be talked out of its verdict by
the learner's code (an IPython transformer that drops ``assert``, a patched
``torch.allclose``, a dig through ``gc`` for the expected values). Reading the
code in the grader's own process, before the learner's process starts, refuses
those routes whatever they would have done at run time:

* **reflection** (:data:`REFLECTION`): ``getattr``, ``setattr``, ``exec``, ``eval``,
  ``compile``, ``__import__``, ``globals``, ``vars``, ``open``, ``get_ipython``, ...:
  every way to reach a name that the text does not spell out;
* **attributes that start with an underscore** (``torch._VF``, ``x.__class__``,
  ``f.__globals__``): private aliases and the object graph; ``super().__init__``
  and the other dunder methods a class defines are allowed;
* **imports outside the task's allowlist** (``sys``, ``gc``, ``inspect``,
  ``ctypes``, ``importlib`` are never allowed), and ``from M import *``;
* **changing what others rely on**: rebinding a built-in (``abs = ...``), assigning
  to an imported module's attribute (``torch.allclose = ...``), defining special
  methods beyond a class's own (``__eq__``, ``__torch_function__``: values that
  compare equal to anything);
* **the names the task forbids, under any alias**: ``import torch.nn.functional as
  F`` then ``F.rms_norm``, ``from torch.nn import functional`` then
  ``functional.rms_norm``, or a module bound to a new name (``G = F``).

IPython's syntax is read as IPython runs it: a magic or a shell escape (``%time``,
``!ls``) becomes a call of ``get_ipython()``, so it is refused as reflection.
:func:`read_cell` returns one message per violation, ``line N: what``;
:func:`read_answer` reads every cell a learner wrote for a task.

The grader (:func:`lmcourse.course.grade.build_program`) and the learner's
self-check read every cell the learner wrote or changed with it, under the rules
of :mod:`lmcourse.course.plan`, before anything runs; a refused cell does not run.
The checks themselves run in a process of their own
(:mod:`lmcourse.course.check_runner`). ``tests/test_reading.py`` holds every route
of issue 27, each refused, and every solution of the course, each clean;
``tests/test_hostile.py`` grades them as submissions.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable
from dataclasses import dataclass

REFLECTION = frozenset({
    "getattr", "setattr", "delattr", "hasattr", "exec", "eval", "compile", "__import__", "globals", "locals",
    "vars", "dir", "open", "get_ipython", "breakpoint", "__builtins__", "__loader__", "__spec__",
})
NEVER_IMPORTED = frozenset({
    "sys", "gc", "inspect", "ctypes", "importlib", "os", "builtins", "subprocess", "pickle", "marshal", "types",
    "IPython", "threading", "multiprocessing", "signal", "socket", "io", "pathlib", "shutil", "code", "codeop",
    "runpy", "weakref", "atexit", "traceback", "linecache", "dis", "ast", "pydoc", "pkgutil", "asyncio",
    "concurrent", "tempfile", "glob", "zipimport", "copyreg", "site", "sysconfig", "_thread", "platform", "imp",
})
DEFAULT_ALLOWED = frozenset({
    "torch", "math", "numpy", "collections", "itertools", "functools", "dataclasses", "typing", "einops",
    "heapq", "bisect", "fractions", "statistics", "string", "re", "operator", "random",
})
ALLOWED_DUNDERS = frozenset({"__init__", "__call__", "__len__", "__getitem__", "__iter__", "__repr__", "__name__"})
# reached by attribute, not by import: the operator registry and other doors to the kernels
NEVER_REACHED = (
    "torch.ops", "torch.library", "torch.classes", "torch.utils.cpp_extension", "torch.overrides",
    # reflection by a name built at run time, or code from strings and bytes
    "operator.attrgetter", "operator.methodcaller", "typing.get_type_hints", "typing.ForwardRef", "string.Formatter",
    "torch.load", "torch.serialization", "torch.package", "torch.jit", "torch.fx", "torch.hub", "torch.compile",
    "torch.export", "torch.multiprocessing", "torch.futures", "torch.from_file",
    # files, processes and raw memory through numpy
    "numpy.ctypeslib", "numpy.lib", "numpy.load", "numpy.fromfile", "numpy.memmap", "numpy.save", "numpy.savez",
    "numpy.savez_compressed", "numpy.savetxt", "numpy.loadtxt", "numpy.genfromtxt", "numpy.f2py", "numpy.distutils",
    "numpy.testing",
    # code from strings (annotations evaluated, timers' statements) and work in other processes or threads
    "functools.singledispatch", "functools.singledispatchmethod", "torch.utils", "torch.distributed", "torch.testing",
)
# attributes no answer may read, whatever object holds them: frames (a way to another function's globals),
# code objects, closures' cells, raw memory and files
NEVER_READ = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await",
    "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "tb_frame", "tb_next", "co_consts",
    "co_code", "co_names", "cell_contents", "tofile", "ctypes", "ctypeslib", "from_file",
    # the distinctive last names of NEVER_REACHED: refused on any object, so that (torch,)[0].ops is torch.ops
    "ops", "attrgetter", "methodcaller", "get_type_hints", "ForwardRef", "Formatter", "serialization", "jit", "fx",
    "hub", "cpp_extension", "overrides", "multiprocessing", "fromfile", "memmap", "open_memmap", "lib", "load",
    "loads", "savez", "loadtxt", "genfromtxt", "savetxt", "f2py", "singledispatch", "singledispatchmethod",
    "DataLoader", "benchmark", "Timer", "distributed",
    # modules re-exported as attributes of allowed ones (torch.sys, dataclasses.inspect, typing.sys)
    *NEVER_IMPORTED,
})
BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class Rules:
    """What one task's answer may use: top-level packages it may import, dotted names it may not reach."""

    allowed: frozenset[str] = DEFAULT_ALLOWED
    forbid: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # names the course's setup cells bind: (name, dotted name)


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` with ``a`` replaced by what it was imported as; None when the root is not an import."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join([aliases[node.id], *reversed(parts)])


def _forbidden(name: str, forbid: Iterable[str]) -> str | None:
    """The forbidden name that ``name`` is or lies inside, if any."""
    return next((f for f in forbid if name == f or name.startswith(f + ".")), None)


def _allowed(name: str, allowed: Iterable[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in allowed)


def _imports(tree: ast.AST, rules: Rules, flag) -> dict[str, str]:
    """Check every import; the local names they bind -> the dotted names they stand for."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            flag(node, "a relative import")
            continue
        module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
        for alias in node.names:
            full = f"{module}.{alias.name}" if module else alias.name
            top = full.split(".")[0]
            if alias.name == "*":
                flag(node, f"from {module} import * (name what you import)")
                continue
            if top in NEVER_IMPORTED:
                flag(node, f"imports {top}, which an answer may not import")
            elif not (_allowed(full, rules.allowed) or _allowed(module, rules.allowed) and module):
                flag(node, f"imports {full}, which this task does not allow")
            elif any(part.startswith("_") for part in full.split(".")):
                flag(node, f"imports {full}, a private name")
            elif hit := _forbidden(full, NEVER_REACHED):
                flag(node, f"imports {hit}, which no answer may use")
            elif hit := _forbidden(full, rules.forbid):
                flag(node, f"imports {hit}, which this task forbids")
            bound = alias.asname or (alias.name if module else top)
            aliases[bound] = full if (alias.asname or module) else top
    changed = True
    while changed:  # G = F: G stands for what F stands for, wherever the assignment is
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                for target in node.targets:
                    if isinstance(target, ast.Name) and aliases.get(target.id) != aliases[node.value.id]:
                        aliases[target.id] = aliases[node.value.id]
                        changed = True
    return aliases


def _module_bindings(tree: ast.Module):
    """(node, name) for every name a cell binds in the notebook's namespace (not inside a function or class)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.name
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                yield node, alias.asname or alias.name.split(".")[0]
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            yield node, node.id
        if not isinstance(node, (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            stack.extend(ast.iter_child_nodes(node))


def read_cell(source: str, rules: Rules = Rules()) -> list[str]:
    """The violations in one cell of a learner's code, ``line N: what`` each (none: it may run).

    >>> read_cell("import torch.nn.functional as F\\ny = F.rms_norm(x, (4,))",
    ...           Rules(forbid=("torch.nn.functional.rms_norm",)))
    ['line 2: uses torch.nn.functional.rms_norm, which this task forbids']
    >>> read_cell("f = getattr(torch, 'allclose')")
    ['line 1: uses getattr (reflection is not allowed in an answer)']
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        python = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - no IPython, or text IPython cannot transform: read it as Python
        python = source
    try:
        tree = ast.parse(python)
    except SyntaxError as err:
        return [f"line {err.lineno}: a syntax error ({err.msg})"]
    found: dict[str, int] = {}  # message -> line

    def flag(node: ast.AST, what: str) -> None:
        found.setdefault(what, getattr(node, "lineno", 0))

    aliases = {**dict(rules.aliases), **_imports(tree, rules, flag)}
    last_names = {name.rsplit(".", 1)[-1]: name for name in rules.forbid}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id in REFLECTION:
                flag(node, f"uses {node.id} (reflection is not allowed in an answer)")
            elif node.id.startswith("__") and node.id.endswith("__"):
                flag(node, f"uses {node.id}, a special name")
            elif node.id in aliases and (hit := _forbidden(aliases[node.id], rules.forbid)):
                flag(node, f"uses {hit}, which this task forbids")
        elif isinstance(node, ast.Attribute):
            name = _dotted(node, aliases)
            if node.attr.startswith("_") and node.attr not in ALLOWED_DUNDERS:
                flag(node, f"uses .{node.attr} (attributes that start with _ are not allowed in an answer)")
            elif name is not None and (hit := _forbidden(name, rules.forbid)):
                flag(node, f"uses {hit}, which this task forbids")
            elif name is not None and (hit := _forbidden(name, NEVER_REACHED)):
                flag(node, f"uses {hit}, which no answer may use")
            elif node.attr in NEVER_READ:
                flag(node, f"uses .{node.attr}, which no answer may use "
                           "(it reaches modules, frames, files or raw memory)")
            elif node.attr in last_names:  # on any object: (F,)[0].rms_norm is F.rms_norm
                flag(node, f"uses .{node.attr}, the name of {last_names[node.attr]}, which this task forbids")
            if name is not None and isinstance(node.ctx, (ast.Store, ast.Del)):
                flag(node, f"changes {name}, which other code relies on")
        elif isinstance(node, (ast.arg, ast.AnnAssign, ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                isinstance(n, ast.Constant) and isinstance(n.value, str)
                for a in (getattr(node, "annotation", None), getattr(node, "returns", None)) if a is not None
                for n in ast.walk(a)):
            flag(node, "a string in an annotation (some library code evaluates it): annotate with names")
        elif isinstance(node, ast.MatchClass) and node.kwd_attrs:
            flag(node, "a class pattern that reads attributes (case C(name=...)): read them as obj.name")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "type" \
                and len(node.args) + len(node.keywords) > 1:
            flag(node, "type(name, bases, namespace) makes a class from a dict: write a class statement")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name.startswith("__") and node.name.endswith("__") and node.name not in ALLOWED_DUNDERS:
                flag(node, f"defines {node.name} (special methods that change how values compare or "
                           "dispatch are not allowed in an answer)")
    for node, name in _module_bindings(tree):
        if name in BUILTINS:
            flag(node, f"rebinds the built-in {name} for the whole notebook")
    return [f"line {line}: {what}" for what, line in sorted(found.items(), key=lambda item: item[1])]


def setup_aliases(sources: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """What the names imported by the course's setup cells stand for (``F`` -> ``torch.nn.functional``)."""
    found: dict[str, str] = {}
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found.update(_imports(tree, Rules(allowed=frozenset(), forbid=()), lambda node, what: None))
    return tuple(sorted(found.items()))


def read_answer(cells: Iterable[str], rules: Rules = Rules()) -> list[str]:
    """Every violation in the cells a learner wrote for one task, ``cell K, line N: what``."""
    return [f"cell {k}, {problem}" for k, source in enumerate(cells, 1) for problem in read_cell(source, rules)]
