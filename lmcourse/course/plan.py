"""What the grader knows about a chapter before any submission runs, read from ``solutions/`` once.

* the **checks' program** (:attr:`ChapterPlan.check_cells`): the setup and check
  cells as the course wrote them, in the chapter's order, for the checks' process
  (:mod:`lmcourse.course.check_runner`); never sent to the learner's process;
* the **names** the answers define (:attr:`ChapterPlan.names`: every function,
  class and constant a solution cell binds at the top level): in the checks'
  process they are bound to the learner's values;
* the **rules** each answer is read under (:meth:`ChapterPlan.rules`,
  :mod:`lmcourse.course.reading`): the modules it may import (the solution cell's
  metadata ``lmcourse.allow``, else :data:`~lmcourse.course.reading.DEFAULT_ALLOWED`)
  and the names it may not use: its own task's ``forbid`` list, and, chapter-wide,
  every implementation of a graded concept that the chapter's tasks name in the
  package or in another library (``lmcourse.*``, ``transformers.*``): no answer may
  hand its work to the package's or Hugging Face's version of another task. A cell
  the learner added (or changed from the course's setup) is read under the union
  of every task's list;
* the **aten operators** each task may not run (:meth:`ChapterPlan.forbid_ops`):
  the solution cell's metadata ``lmcourse.forbid_ops`` plus the fused kernels of
  the functions its ``forbid`` names (:data:`OPS_OF`), recorded while the task's
  checks call the answer, whatever route reached them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .exercises import cell_info, provided_of
from .reading import DEFAULT_ALLOWED, Rules, setup_aliases

# forbidden function -> the prefixes of the aten operators that run it (what a dispatch mode sees)
_SDPA = ("_scaled_dot_product", "scaled_dot_product")
_NLL = ("nll_loss", "cross_entropy_loss")
OPS_OF: dict[str, tuple[str, ...]] = {
    "torch.nn.functional.scaled_dot_product_attention": _SDPA,
    "lmcourse.attention.scaled_dot_product_attention": _SDPA,
    "torch.nn.MultiheadAttention": (*_SDPA, "_native_multi_head_attention"),
    "torch.nn.functional.multi_head_attention_forward": (*_SDPA, "_native_multi_head_attention"),
    "torch.multinomial": ("multinomial",),
    "torch.distributions.Categorical": ("multinomial",),
    "lmcourse.decoding.sample_next": ("multinomial",),
    "torch.nn.functional.cross_entropy": _NLL,
    "torch.nn.functional.nll_loss": _NLL,
    "torch.nn.CrossEntropyLoss": _NLL,
    "lmcourse.metrics.mean_nll": _NLL,
    "lmcourse.mlm.mlm_loss": _NLL,
    "torch.gru_cell": ("gru_cell", "_thnn_fused_gru_cell"),
    "torch.nn.GRUCell": ("gru_cell", "_thnn_fused_gru_cell"),
    "torch.nn.GRU": ("gru", "_thnn_fused_gru_cell"),
    "torch.nn.RNN": ("rnn_tanh", "rnn_relu"),
    "torch.nn.RNNCell": ("rnn_tanh_cell", "rnn_relu_cell"),
    "torch.nn.functional.rms_norm": ("rms_norm", "_fused_rms_norm"),
    "torch.rms_norm": ("rms_norm", "_fused_rms_norm"),
    "torch.nn.RMSNorm": ("rms_norm", "_fused_rms_norm"),
}
CHAPTER_WIDE = ("lmcourse.", "transformers.")  # implementations no answer of the chapter may use


def defined_names(source: str) -> list[str]:
    """The names a cell binds at its top level by ``def``, ``class`` or assignment."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.extend(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return list(dict.fromkeys(names))


@dataclass
class ChapterPlan:
    check_cells: list[dict]
    names: list[str]
    allow: dict[str, tuple[str, ...]] = field(default_factory=dict)
    forbid: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    provided: frozenset[str] = frozenset()
    aliases: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, nb) -> ChapterPlan:
        check_cells, names = [], []
        allow: dict[str, tuple[str, ...]] = {}
        forbid: dict[str, list[str]] = {}
        ops: dict[str, list[str]] = {}
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            info = cell_info(cell)
            role, task = info.get("role"), info.get("task")
            if role == "check":
                check_cells.append({"role": "check", "source": cell.source, "task": str(task),
                                    "check": str(info["check"])})
            elif role == "solution":
                names.extend(defined_names(cell.source))
                task = str(task)
                if "allow" in info:
                    allow[task] = tuple(str(a) for a in info["allow"])
                forbid.setdefault(task, []).extend(str(n) for n in info.get("forbid", []))
                found = ops.setdefault(task, [])
                for name in [*info.get("forbid", []), *info.get("forbid_ops", [])]:
                    for prefix in OPS_OF.get(name, (name,) if "." not in name else ()):
                        if prefix not in found:
                            found.append(prefix)
            else:
                check_cells.append({"role": "setup", "source": cell.source, "task": None, "check": None})
        return cls(check_cells, list(dict.fromkeys(names)), allow,
                   {t: tuple(dict.fromkeys(n)) for t, n in forbid.items()},
                   {t: tuple(o) for t, o in ops.items() if o}, frozenset(provided_of(nb)),
                   setup_aliases(c["source"] for c in check_cells if c["role"] == "setup"))

    def chapter_wide(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for names in self.forbid.values() for n in names if n.startswith(CHAPTER_WIDE)))

    def rules(self, task: str | None) -> Rules:
        """The rules for the answer of ``task``; ``None``: a cell the learner added or changed."""
        if task is None or task not in self.forbid:
            every = tuple(dict.fromkeys(n for names in self.forbid.values() for n in names))
            allowed = frozenset.intersection(DEFAULT_ALLOWED, *[frozenset(a) for a in self.allow.values()]) \
                if self.allow else DEFAULT_ALLOWED
            return Rules(allowed=allowed, forbid=every, aliases=self.aliases)
        return Rules(allowed=frozenset(self.allow.get(task, DEFAULT_ALLOWED)),
                     forbid=tuple(dict.fromkeys([*self.forbid[task], *self.chapter_wide()])), aliases=self.aliases)

    def forbid_calls(self) -> dict[str, list[str]]:
        """Task -> the names the call recorder watches while the task's checks run (the task's own list:
        chapter-wide names are refused by reading, since the package's internals call them legitimately)."""
        return {t: list(names) for t, names in self.forbid.items()}

    def forbid_ops(self) -> dict[str, list[str]]:
        return {t: list(o) for t, o in self.ops.items()}
