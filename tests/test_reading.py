"""Reading a learner's code before it runs: every honest solution passes, every route of issue 27 is refused."""

import nbformat
import pytest

from lmcourse.course.exercises import SOLUTIONS_DIR, cell_info, forbid_of
from lmcourse.course.reading import Rules, read_answer, read_cell

RMS = Rules(forbid=("torch.nn.functional.rms_norm", "torch.rms_norm", "torch.nn.RMSNorm"))


def solution_cells():
    for path in sorted(SOLUTIONS_DIR.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        forbid = forbid_of(nb)
        for k, cell in enumerate(nb.cells):
            info = cell_info(cell)
            if info.get("role") == "solution":
                yield pytest.param(cell.source, tuple(forbid.get(info["task"], ())), id=f"{path.stem}-{k}")


@pytest.mark.parametrize(("source", "forbid"), list(solution_cells()))
def test_every_solution_of_the_course_reads_clean(source, forbid):
    assert read_cell(source, Rules(forbid=forbid)) == []


HONEST = [
    "class Norm(torch.nn.Module):\n    def __init__(self, d):\n        super().__init__()\n"
    "        self.w = torch.nn.Parameter(torch.ones(d))\n    def forward(self, input):\n        return input * self.w",
    "_cached = {}\ndef f(x, max=3, input=None):\n    sum = 0\n    for i in range(max):\n        sum += i\n"
    "    return sum",
    "from collections import Counter\nimport torch.nn.functional as F\ny = F.softmax(torch.randn(3), dim=-1)",
    "import math\nimport numpy as np\nz = np.log(math.pi) + x.T.sum().item()",
]


@pytest.mark.parametrize("source", HONEST)
def test_honest_code_reads_clean(source):
    assert read_cell(source, RMS) == []


# each a route by which code in the checks' process earned points without solving anything
HOSTILE = {
    "assert_to_pass_transformer": ("import ast\nclass T(ast.NodeTransformer):\n    def visit_Assert(self, n):\n"
                                   "        return ast.Pass()\nget_ipython().ast_transformers.append(T())",
                                   "imports ast"),
    "input_transformers_post": ("get_ipython().input_transformers_post.append(lambda lines: [])", "get_ipython"),
    "replaced_run_cell": ("ip = get_ipython()\nip.run_cell = lambda *a, **k: None", "get_ipython"),
    "gc_digging": ("import gc\nrefs = [o for o in gc.get_objects() if isinstance(o, dict) and 'token' in o]",
                   "imports gc"),
    "sys_modules": ("import sys\nsys.modules['__main__'].__dict__['want']", "imports sys"),
    "rebind_abs": ("abs = lambda x: 0", "rebinds the built-in abs"),
    "rebind_isinstance": ("def isinstance(a, b):\n    return True", "rebinds the built-in isinstance"),
    "rebind_all": ("all = any", "rebinds the built-in all"),
    "patch_allclose": ("torch.allclose = lambda *a, **k: True", "changes torch.allclose"),
    "patch_allclose_alias": ("import torch as t\nt.testing.assert_close = print", "changes torch.testing.assert_close"),
    "torch_function_subclass": ("class Yes(torch.Tensor):\n    @classmethod\n"
                                "    def __torch_function__(cls, f, types, args=(), kwargs=None):\n        return True",
                                "defines __torch_function__"),
    "float_always_equal": ("class F(float):\n    def __eq__(self, other):\n        return True", "defines __eq__"),
    "frozen_file_name": ("exec(compile('y = 1', '<frozen importlib>', 'exec'))", "reflection"),
    "aten": ("y = torch.ops.aten.rms_norm(x, [4], None, 1e-6)", "torch.ops"),
    "private_vf": ("h = torch._VF.gru_cell(x, h, w1, w2, b1, b2)", "._VF"),
    "private_nn": ("loss = torch._C._nn.cross_entropy_loss(z, y)", "._C"),
    "closure_dig": ("orig = F.rms_norm.__closure__[0].cell_contents", ".__closure__"),
    "module_dict_exec": ("exec('def f(): pass', torch.nn.functional.__dict__)", "reflection"),
    "getattr_by_string": ("f = getattr(F, 'rms' + '_norm')", "getattr"),
    "dunder_import": ("m = __import__('torch').rms_norm", "__import__"),
    "forbidden_alias": ("import torch.nn.functional as G\ny = G.rms_norm(x, (4,))", "torch.nn.functional.rms_norm"),
    "forbidden_from_import": ("from torch.nn.functional import rms_norm as r", "torch.nn.functional.rms_norm"),
    "forbidden_module_rebound": ("H = F\ny = H.rms_norm(x, (4,))", "torch.nn.functional.rms_norm"),
    "forbidden_class": ("norm = torch.nn.RMSNorm(4)", "torch.nn.RMSNorm"),
    "magic": ("%time y = 1", "get_ipython"),
    "shell": ("!cat /etc/passwd", "get_ipython"),
    "star_import": ("from torch.nn.functional import *", "import *"),
    "importlib": ("import importlib\nm = importlib.import_module('torch')", "imports importlib"),
    "ctypes": ("import ctypes", "imports ctypes"),
    "open_file": ("text = open('/proc/self/environ').read()", "open"),
    "globals": ("globals()['want']", "globals"),
    "vars": ("vars()['expected']", "vars"),
    "class_graph": ("subs = ().__class__.__base__.__subclasses__()", ".__class__"),
    "builtins_module": ("__builtins__['abs'] = None", "__builtins__"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_route_is_refused_with_where_and_what(name):
    source, fragment = HOSTILE[name]
    setup = "import torch\nimport torch.nn.functional as F\n"  # as the course's setup cell binds them
    problems = read_cell(setup + source, RMS)
    assert problems and any(fragment in p for p in problems), problems
    assert all(p.startswith("line ") for p in problems)


def test_an_answer_is_read_cell_by_cell_and_a_syntax_error_is_reported():
    problems = read_answer(["y = 1", "import sys", "def f(:"])
    assert problems == ["cell 2, line 1: imports sys, which an answer may not import",
                        "cell 3, line 1: a syntax error (invalid syntax)"]
