"""Forbidden calls: a task's answer that calls the function it rebuilds scores 0.

The fast tests drive :class:`lmcourse.course.forbid.CallRecorder` in this process,
the way the grader's runner does: each "cell" is compiled under a name registered
as a solution cell of a task, a learner's own cell, or trusted code (a check or a
setup cell as the course wrote it), and runs in one namespace. The slow tests
grade a toy chapter end to end with ``python -m lmcourse grade`` (sandboxed where
bubblewrap runs) and ``python -m lmcourse check``: direct call, call under another
name, through a subclass, through a wrapper function, from code built with
``exec``, and a hidden check's own call of the reference, which stays allowed.
"""

import csv
import subprocess
import sys
import textwrap
import threading

import nbformat
import pytest
import torch
import torch.nn.functional as F

import lmcourse.positions
from lmcourse.course.exercises import forbid_of, forbidden_imports, generate
from lmcourse.course.forbid import CallRecorder, check_forbid, message, resolve

FORBID = {
    "table": ["lmcourse.positions.sinusoidal_table"],
    "norm": ["torch.nn.functional.rms_norm", "torch.rms_norm", "torch.nn.RMSNorm"],
}


class Notebook:
    """Cells run in one namespace under a CallRecorder, as the runner runs them."""

    def __init__(self, forbid=FORBID):
        self.recorder = CallRecorder(forbid)
        self.recorder.install()
        self.ns = {"__name__": "__main__"}
        self.recorder.user_globals = self.ns
        self.recorder.register(__file__, trusted=True)  # this test stands where the grader's runner stands
        self.count = 0

    def run(self, source, task=None, trusted=False, checking=None):
        self.count += 1
        name = f"<cell-{self.count}>"
        self.recorder.register(name, task=task, trusted=trusted)
        self.recorder.checking = checking
        code, raised = compile(textwrap.dedent(source), name, "exec"), []

        def cell() -> None:
            try:
                exec(code, self.ns)
            except BaseException as err:  # noqa: BLE001 - raised again in the test's thread
                raised.append(err)

        # In a thread of its own, as in the grader's runner, only library code stands below
        # the cell; pytest-xdist's worker would put code compiled from strings there.
        thread = threading.Thread(target=cell)
        thread.start()
        thread.join()
        self.recorder.checking = None
        if raised:
            raise raised[0]

    def setup(self):
        self.run("import torch\nimport torch.nn.functional as F\nimport lmcourse.positions", trusted=True)


@pytest.fixture
def nb():
    book = Notebook()
    book.setup()
    yield book
    book.recorder.uninstall()


CHECK_NORM = """
x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
w = torch.rand(8, generator=torch.Generator().manual_seed(1))
ref = F.rms_norm(x, (8,), w, 1e-6)  # the check's own call of the reference
assert torch.allclose(norm(x, w), ref, atol=1e-5)
"""
CHECK_TABLE = """
from lmcourse.positions import sinusoidal_table
assert torch.allclose(table(5, 6), sinusoidal_table(5, 6))
"""
GOOD_NORM = """
def norm(x, w, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
"""
GOOD_TABLE = """
def table(T, D):
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    angle = pos / 10000 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    out = torch.empty(T, D, dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = angle.sin(), angle.cos()
    return out.float()
"""


def test_the_message_is_exactly_the_one_the_grader_prints():
    assert message("rms_norm", "torch.nn.RMSNorm") == "task rms_norm must not call torch.nn.RMSNorm"


def test_a_correct_answer_and_the_checks_own_calls_of_the_reference_are_allowed(nb):
    nb.run(GOOD_NORM, task="norm")
    nb.run(GOOD_TABLE, task="table")
    nb.run(CHECK_NORM, trusted=True, checking="norm")
    nb.run(CHECK_TABLE, trusted=True, checking="table")
    assert nb.recorder.calls == {}


def test_a_direct_call_is_recorded_against_its_task_only(nb):
    nb.run("def norm(x, w, eps=1e-6):\n    return F.rms_norm(x, (x.shape[-1],), w, eps)", task="norm")
    nb.run(GOOD_TABLE, task="table")
    nb.run(CHECK_TABLE, trusted=True, checking="table")
    assert nb.recorder.calls == {}  # nothing yet: the answer has not run
    nb.run(CHECK_NORM, trusted=True, checking="norm")
    # F.rms_norm calls torch.rms_norm (also forbidden) itself: only the learner's call is reported
    assert nb.recorder.calls == {"norm": ["torch.nn.functional.rms_norm"]}
    assert nb.recorder.messages() == {"norm": "task norm must not call torch.nn.functional.rms_norm"}


def test_a_call_under_another_name_imported_in_another_cell(nb):
    nb.run("from lmcourse.positions import sinusoidal_table as my_table")  # the learner's own cell
    nb.run("def table(T, D):\n    return my_table(T, D)", task="table")
    nb.run(CHECK_TABLE, trusted=True, checking="table")
    assert nb.recorder.calls == {"table": ["lmcourse.positions.sinusoidal_table"]}


def test_a_name_bound_to_an_alias_inside_torch(nb):
    nb.run("rn = torch.rms_norm\ndef norm(x, w, eps=1e-6):\n    return rn(x, (x.shape[-1],), w, eps)",
           task="norm")
    nb.run(CHECK_NORM, trusted=True, checking="norm")
    assert nb.recorder.calls == {"norm": ["torch.rms_norm"]}


def test_a_call_through_a_subclass(nb):
    nb.run("""
    class MyNorm(torch.nn.RMSNorm):
        pass


    def norm(x, w, eps=1e-6):
        m = MyNorm(x.shape[-1], eps=eps)
        with torch.no_grad():
            m.weight.copy_(w)
        return m(x)
    """, task="norm")
    nb.run(CHECK_NORM, trusted=True, checking="norm")
    assert nb.recorder.calls == {"norm": ["torch.nn.RMSNorm"]}


def test_a_call_through_a_wrapper_function_in_another_cell(nb):
    nb.run("def helper(x, w, eps):\n    return F.rms_norm(x, (x.shape[-1],), w, eps)")  # no task: a helper cell
    nb.run("def norm(x, w, eps=1e-6):\n    return helper(x, w, eps)", task="norm")
    nb.run(CHECK_NORM, trusted=True, checking="norm")
    assert nb.recorder.calls == {"norm": ["torch.nn.functional.rms_norm"]}


def test_an_answer_built_with_exec_or_moved_out_of_its_cell_is_caught_while_its_checks_run(nb):
    nb.run('exec("def norm(x, w, eps=1e-6):\\n    return F.rms_norm(x, (x.shape[-1],), w, eps)")')
    # another task's check that happens to call norm: F.rms_norm is not among the table's forbidden names
    nb.run("from lmcourse.positions import sinusoidal_table\n"
           "assert sinusoidal_table(2, 6).shape == norm(torch.ones(2, 6), torch.ones(6)).shape",
           trusted=True, checking="table")
    assert nb.recorder.calls == {}
    nb.run(CHECK_NORM, trusted=True, checking="norm")
    assert nb.recorder.calls == {"norm": ["torch.nn.functional.rms_norm"]}


def test_a_call_at_the_top_of_the_solution_cell_counts(nb):
    nb.run("_cached = lmcourse.positions.sinusoidal_table(64, 64)\n"
           "def table(T, D):\n    return _cached[:T, :D]", task="table")  # the check never calls it
    assert nb.recorder.calls == {"table": ["lmcourse.positions.sinusoidal_table"]}


def test_setup_code_and_a_learners_comparison_outside_the_answer_are_not_the_answer(nb):
    nb.run("t = lmcourse.positions.sinusoidal_table(4, 4)", trusted=True)  # setup as the course wrote it
    nb.run(GOOD_NORM, task="norm")
    nb.run("print(torch.allclose(norm(torch.ones(3), torch.ones(3)), F.rms_norm(torch.ones(3), (3,))))")
    assert nb.recorder.calls == {}


def test_uninstall_puts_every_original_back_and_reinstall_undoes_tampering():
    original_fn, original_init = F.rms_norm, torch.nn.RMSNorm.__dict__["__init__"]
    original_table = lmcourse.positions.sinusoidal_table
    book = Notebook()
    try:
        assert F.rms_norm is not original_fn and torch.nn.functional.rms_norm is F.rms_norm
        assert torch.nn.RMSNorm.__dict__["__init__"] is not original_init
        assert F.rms_norm.__name__ == "rms_norm" and "normalized_shape" in str(
            __import__("inspect").signature(F.rms_norm))
        torch.nn.functional.rms_norm = original_fn  # a submission undoing the recorder
        assert book.recorder.reinstall() == ["torch.nn.functional.rms_norm"]
        assert torch.nn.functional.rms_norm is not original_fn
        assert book.recorder.reinstall() == []
    finally:
        book.recorder.uninstall()
    assert F.rms_norm is original_fn and torch.nn.RMSNorm.__dict__["__init__"] is original_init
    assert lmcourse.positions.sinusoidal_table is original_table


def test_recorded_functions_still_compute_the_same():
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    expected = F.rms_norm(x, (6,))
    book = Notebook()
    try:
        assert torch.equal(F.rms_norm(x, (6,)), expected)
        assert torch.equal(torch.nn.RMSNorm(6)(x), torch.rms_norm(x, (6,), torch.ones(6)))
    finally:
        book.recorder.uninstall()


@pytest.mark.parametrize("name, fragment", [
    ("torch.nn.functional.no_such_thing", "does not exist"),
    ("lmcourse.transformer", "not a function, class or method"),
    ("no_such_module.f", "no module"),
    ("torch..nn", "not a dotted name"),
    (3, "not a dotted name"),
])
def test_resolve_rejects_bad_names_with_a_message(name, fragment):
    with pytest.raises(ValueError, match=fragment):
        resolve(name)


def test_resolve_finds_functions_classes_and_methods():
    assert resolve("torch.nn.functional.rms_norm")[2] is F.rms_norm
    assert resolve("torch.nn.RMSNorm")[2] is torch.nn.RMSNorm
    owner, attr, obj = resolve("lmcourse.optim.MuonAdamW.step")
    assert owner.__name__ == "MuonAdamW" and attr == "step" and callable(obj)


@pytest.mark.parametrize("forbid", [["a"], {"t": "torch.rms_norm"}, {"t": [1]}])
def test_a_malformed_forbid_list_is_refused(forbid):
    with pytest.raises(ValueError, match="forbid"):
        check_forbid(forbid)


# -- the exercise generator: setup cells never import a graded task's reference; the appendix

def _chapter(setup: str, check: str = "assert f(1) == 1", forbid=("lmcourse.positions.sinusoidal_table",)):
    nb = nbformat.v4.new_notebook(metadata={"lmcourse": {"chapter": "98"}})
    nb.cells = [
        nbformat.v4.new_code_cell(setup),
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION",
                                  metadata={"lmcourse": {"role": "solution", "task": "f", "forbid": list(forbid)}}),
        nbformat.v4.new_code_cell(check, metadata={"lmcourse": {"role": "check", "task": "f", "check": "f",
                                                                "points": 1}}),
    ]
    return nb


@pytest.mark.parametrize("setup, leaks", [
    ("import torch", False),
    ("from lmcourse.positions import sinusoidal_table", True),
    ("from lmcourse.positions import sinusoidal_table as table", True),
    ("from lmcourse.positions import *", True),
    ("from lmcourse.positions import SinusoidalPositions", False),
])
def test_a_setup_cell_that_imports_a_forbidden_name_is_reported(setup, leaks):
    problems = forbidden_imports(_chapter(setup), "98_toy")
    assert bool(problems) == leaks, problems
    if leaks:
        assert "cell 0 (a setup cell)" in problems[0] and "task f forbids" in problems[0]


def test_a_visible_check_may_not_import_it_but_a_hidden_one_may():
    visible = _chapter("import torch", "from lmcourse.positions import sinusoidal_table\nassert f(1) == 1")
    assert "a visible check" in forbidden_imports(visible)[0]
    hidden = _chapter("import torch", "assert f(1) == 1\n### BEGIN HIDDEN TESTS\n"
                      "from lmcourse.positions import sinusoidal_table\n### END HIDDEN TESTS")
    assert forbidden_imports(hidden) == []


def test_the_generator_refuses_a_leak_and_a_name_that_does_not_exist(tmp_path):
    sols, exs = tmp_path / "solutions", tmp_path / "exercises"
    sols.mkdir()
    nbformat.write(_chapter("from lmcourse.positions import sinusoidal_table"), sols / "98_toy.ipynb")
    with pytest.raises(ValueError, match="imports lmcourse.positions.sinusoidal_table, which task f forbids"):
        generate(sols, exs)
    nbformat.write(_chapter("import torch", forbid=["lmcourse.positions.no_such_table"]), sols / "98_toy.ipynb")
    with pytest.raises(ValueError, match="does not exist"):
        generate(sols, exs)
    nbformat.write(_chapter("import torch"), sols / "98_toy.ipynb")
    assert generate(sols, exs) == [] and generate(sols, exs, check=True) == []


def test_the_generator_writes_the_appendix_table_of_tasks_and_points(tmp_path):
    sols, exs, page = tmp_path / "solutions", tmp_path / "exercises", tmp_path / "runtimes.md"
    sols.mkdir()
    nbformat.write(_chapter("import torch"), sols / "98_toy.ipynb")
    page.write_text("# Appendix\n\n| chapter | run time |\n\n## Exercises and points\n\n| old | table |\n\n"
                    "## Later\n\nkept\n")
    assert generate(sols, exs, check=True, appendix=page)[-1].endswith(f"differs from what {sols} gives")
    assert generate(sols, exs, appendix=page) == [] and generate(sols, exs, check=True, appendix=page) == []
    text = page.read_text()
    assert text.startswith("# Appendix\n\n| chapter | run time |\n\n## Exercises and points\n")
    assert "| 98 | `f` (1) | 1 |" in text and "| old | table |" not in text and text.endswith("## Later\n\nkept\n")
    page.write_text("# Appendix\n")  # no such section yet: appended
    generate(sols, exs, appendix=page)
    assert page.read_text().startswith("# Appendix\n\n## Exercises and points\n")


def test_every_forbid_list_of_the_course_names_something_that_exists():
    from lmcourse.course.exercises import SOLUTIONS_DIR

    for path in sorted(SOLUTIONS_DIR.glob("*.ipynb")):
        for task, names in forbid_of(nbformat.read(path, as_version=4), path.name).items():
            for name in names:
                resolve(name)  # raises with the name if it does not
            assert task, path


# -- end to end: the grader and the self-check ---------------------------------------------

TOY_SETUP = "import torch\nimport torch.nn.functional as F\n\ngen = torch.Generator().manual_seed(0)"
TOY_HIDDEN_NORM = """
### BEGIN HIDDEN TESTS
from torch.nn import RMSNorm

m = RMSNorm(8, eps=1e-6)
with torch.no_grad():
    m.weight.copy_(w)
    assert torch.allclose(norm(x, w), m(x), atol=1e-5), "differs from RMSNorm"
### END HIDDEN TESTS
print("norm: all checks passed")
"""
TOY_HIDDEN_TABLE = """
### BEGIN HIDDEN TESTS
from lmcourse.positions import sinusoidal_table

assert torch.allclose(table(7, 10), sinusoidal_table(7, 10), atol=1e-6)
### END HIDDEN TESTS
print("table: all checks passed")
"""


def toy_solutions() -> nbformat.NotebookNode:
    """A chapter of two tasks whose hidden checks call the references they forbid."""
    nb = nbformat.v4.new_notebook(metadata={"lmcourse": {"chapter": "98"}})

    def solution(task, source):
        body = textwrap.dedent(source).strip("\n").split("\n")
        code = "\n".join([body[0], "    ### BEGIN SOLUTION", *body[1:], "    ### END SOLUTION"])
        return nbformat.v4.new_code_cell(code, metadata={"lmcourse": {
            "role": "solution", "task": task, "forbid": FORBID[task]}})

    def check(task, source):
        return nbformat.v4.new_code_cell(textwrap.dedent(source).strip("\n"), metadata={"lmcourse": {
            "role": "check", "task": task, "check": task, "points": 2}})

    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy exercises"),
        nbformat.v4.new_code_cell(TOY_SETUP),
        solution("norm", GOOD_NORM),
        check("norm", "x = torch.randn(3, 8, generator=gen)\nw = torch.rand(8, generator=gen)\n"
              "assert norm(x, w).shape == x.shape, 'keep the shape'" + TOY_HIDDEN_NORM),
        solution("table", GOOD_TABLE),
        check("table", "assert table(3, 4).shape == (3, 4), 'shape (T, D)'" + TOY_HIDDEN_TABLE),
    ]
    return nb


SUBMISSIONS = {  # name: (cells to insert after the setup cell, new body of norm, new body of table, expected)
    "honest": ([], None, None, {}),
    "direct": ([], "return F.rms_norm(x, (x.shape[-1],), w, eps)",
               "from lmcourse.positions import sinusoidal_table\n    return sinusoidal_table(T, D)",
               {"norm": "torch.nn.functional.rms_norm", "table": "lmcourse.positions.sinusoidal_table"}),
    "another_name": (["from lmcourse.positions import sinusoidal_table as pe"], None, "return pe(T, D)",
                     {"table": "lmcourse.positions.sinusoidal_table"}),
    "subclass": (["class Norm(torch.nn.RMSNorm):\n    pass"],
                 "m = Norm(x.shape[-1], eps=eps)\n    with torch.no_grad():\n        m.weight.copy_(w)\n"
                 "    return m(x)", None, {"norm": "torch.nn.RMSNorm"}),
    "wrapper": (["def helper(x, w, eps):\n    return torch.rms_norm(x, (x.shape[-1],), w, eps)"],
                "return helper(x, w, eps)", None, {"norm": "torch.rms_norm"}),
}


def submission(base, extra, norm_body, table_body):
    nb = nbformat.from_dict(base)
    for cell in nb.cells:
        for fn, body in (("def norm(", norm_body), ("def table(", table_body)):
            if body and cell.source.startswith(fn):
                head = cell.source.split("\n")[0]
                cell.source = f"{head}\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION"
    nb.cells[2:2] = [nbformat.v4.new_code_cell(src) for src in extra]
    return nb


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    (root / "solutions").mkdir()
    base = toy_solutions()
    nbformat.write(base, root / "solutions" / "98_toy.ipynb")
    for name, (extra, norm_body, table_body, _) in SUBMISSIONS.items():
        (root / "submissions" / name).mkdir(parents=True)
        nbformat.write(submission(base, extra, norm_body, table_body),
                       root / "submissions" / name / "98_toy.ipynb")
    return root


@pytest.mark.slow
def test_the_grader_scores_each_forbidden_call_zero_with_its_message(toy):
    out = toy / "grades.csv"
    result = subprocess.run([sys.executable, "-m", "lmcourse", "grade", str(toy / "submissions"),
                             "--solutions", str(toy / "solutions"), "--out", str(out), "--timeout", "120"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {(r["submission"].split("/")[1], r["task"]): r for r in csv.DictReader(out.open())}
    assert len(rows) == 2 * len(SUBMISSIONS)
    for name, (_, _, _, expected) in SUBMISSIONS.items():
        for task in ("norm", "table"):
            row = rows[(name, task)]
            if task in expected:
                # refused by reading before it runs (the name, or its import), else recorded as it runs
                assert row["points"] == "0" and row["status"] in ("failed", "error"), (name, row)
                assert expected[task] in row["message"], (name, row)
                assert row["message"].startswith((f"task {task} must not call ", "not run: ")) or \
                    "a cell you added was not run" in row["message"], (name, row)
            else:  # the honest answer, and the hidden checks' own calls of the reference
                assert row["points"] == row["max_points"] == "2" and row["message"] == "", (name, row)


@pytest.mark.slow
def test_the_self_check_reports_a_forbidden_call_too(toy):
    path = toy / "submissions" / "direct" / "98_toy.ipynb"
    result = subprocess.run([sys.executable, "-m", "lmcourse", "check", str(path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    # the self-check reads the answers as the grader does, and says the same
    assert "uses torch.nn.functional.rms_norm, which this task forbids" in result.stdout
    assert "lmcourse.positions.sinusoidal_table, which this task" in result.stdout
    assert "HIDDEN" not in result.stdout


def test_the_forbid_list_reaches_the_notebook_metadata_of_the_autograder(tmp_path):
    from lmcourse.course.export import checks_notebook

    nb = checks_notebook(toy_solutions())
    assert forbid_of(nb) == FORBID
    assert TOY_SETUP in nb.metadata["lmcourse"]["provided"]
    assert {c.metadata.get("lmcourse", {}).get("role") for c in nb.cells} <= {"check", "solution", None}
    assert not any("### BEGIN SOLUTION" in c.source for c in nb.cells), "no answer goes into the autograder"
