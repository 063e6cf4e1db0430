"""Exports: an LMS gradebook and a Gradescope autograder (results.json in Gradescope's schema)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from lmcourse.course.exercises import EXERCISES_DIR, SOLUTIONS_DIR
from lmcourse.course.export import gradebook, gradescope_results, student_of
from lmcourse.course.grade import TaskRow

VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def validate_results(results: dict) -> None:
    """Check a results.json against Gradescope's autograder specification (the fields it defines)."""
    assert set(results) <= {"score", "execution_time", "output", "output_format", "test_output_format",
                            "test_name_format", "visibility", "stdout_visibility", "extra_data", "tests",
                            "leaderboard"}, set(results)
    assert isinstance(results["score"], (int, float))
    assert results.get("stdout_visibility", "hidden") in VISIBILITY
    for test in results["tests"]:
        assert set(test) <= {"score", "max_score", "status", "name", "name_format", "number", "output",
                             "output_format", "tags", "visibility", "extra_data"}, set(test)
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"] or test["max_score"] == 0 == test["score"]
        assert test["visibility"] in VISIBILITY and test["status"] in ("passed", "failed")
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))


def row(task, points, max_points, status, hidden=True, visible_status=None, feedback="", visible_feedback=""):
    return TaskRow("subs/ann/01_chain_rule.ipynb", "01", task, points, max_points, status, "", feedback, hidden,
                   visible_status or status, visible_feedback)


def test_results_json_has_a_test_per_task_and_hidden_outcomes_after_the_due_date():
    rows = [row("tokenizer", 3, 3, "passed"),
            row("perplexity", 0, 2, "failed", visible_status="passed",
                feedback="passed the visible checks but failed a hidden one: test your code on more cases"),
            row("bits", 0, 1, "failed", visible_feedback="bits must be 1.0", feedback="bits must be 1.0"),
            row("plain", 1, 1, "passed", hidden=False)]
    results = gradescope_results(rows, 12.3)
    validate_results(results)
    tests = {t["name"]: t for t in results["tests"]}
    assert results["score"] == 4 and results["execution_time"] == 12
    assert tests["perplexity"]["visibility"] == "after_due_date" and tests["perplexity"]["max_score"] == 2
    assert tests["perplexity: visible checks"]["visibility"] == "visible"
    assert tests["perplexity: visible checks"]["status"] == "passed"
    assert "hidden one" not in tests["perplexity: visible checks"]["output"]
    assert tests["bits: visible checks"]["status"] == "failed"
    assert tests["bits: visible checks"]["output"] == "bits must be 1.0"
    assert tests["plain"]["visibility"] == "visible" and "plain: visible checks" not in tests
    assert sum(t["max_score"] for t in results["tests"]) == 7


def test_the_gradebook_has_a_row_per_student_and_a_column_per_chapter():
    def rows(sub, chapter, points):
        return [TaskRow(sub, chapter, "t", points, 8, "passed", "")]
    all_rows = (rows("subs/ann/01_chain_rule.ipynb", "01", 8) + rows("subs/ann/05_positions.ipynb", "05", 4)
                + rows("subs/bob/01_chain_rule.ipynb", "01", 2.5) + rows("subs/bob/01_again.ipynb", "01", 6)
                + rows("subs/cid.ipynb", "05", 0))
    header, body = gradebook(all_rows, {"01": "01_chain_rule"})
    assert header == ["student", "01_chain_rule", "chapter 05"]
    assert body == [["ann", "8", "4"], ["bob", "6", ""], ["cid", "", "0"]]  # best of bob's two
    assert student_of("/abs/path/to/eve.ipynb") == "eve"


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    """The autograder zip for chapter 1, unpacked as Gradescope unpacks it."""
    tmp = tmp_path_factory.mktemp("gradescope")
    zip_path = tmp / "autograder.zip"
    result = subprocess.run([sys.executable, "-m", "lmcourse", "grade", "--gradescope", str(zip_path),
                             "--chapter", "01"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return zip_path


def test_the_autograder_zip_has_what_gradescope_needs_and_no_solution_code(autograder):
    with zipfile.ZipFile(autograder) as z:
        names = z.namelist()
        assert {"setup.sh", "run_autograder", "requirements-autograder.txt"} <= set(names)
        assert (z.getinfo("run_autograder").external_attr >> 16) & 0o111, "run_autograder is executable"
        assert "lmcourse/course/grade.py" in names and "solutions/01_chain_rule.ipynb" in names
        assert [n for n in names if n.startswith("solutions/")] == ["solutions/01_chain_rule.ipynb"]
        checks = json.loads(z.read("solutions/01_chain_rule.ipynb"))
        roles = [c["metadata"].get("lmcourse", {}).get("role") for c in checks["cells"]]
        assert "check" in roles and set(roles) <= {"check", "solution", None}  # setup cells have no role
        text = z.read("solutions/01_chain_rule.ipynb").decode()
        assert "BEGIN SOLUTION" not in text and "NotImplementedError" in text  # the exercise's stubs
        assert "self.stoi = {ch: i" not in text, "an answer went into the autograder"
        assert "HIDDEN TESTS" in z.read("solutions/01_chain_rule.ipynb").decode()
        assert "bubblewrap" in z.read("setup.sh").decode() and "torch==" in z.read("setup.sh").decode()


def run_autograder(zip_path, tmp_path, submission):
    """Lay out an /autograder-like tree, as Gradescope does, and run run_autograder on one submission."""
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    shutil.copy(submission, root / "submission" / "notebook.ipynb")
    (root / "results").mkdir()
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", str(root / "run_autograder")], capture_output=True, text=True, timeout=600,
                            cwd=root, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text()), result.stdout


@pytest.mark.slow  # grades two notebooks through run_autograder
@pytest.mark.parametrize("which", ["solution", "exercise"])
def test_run_autograder_writes_a_valid_results_json(autograder, tmp_path, which):
    source = (SOLUTIONS_DIR if which == "solution" else EXERCISES_DIR) / "01_chain_rule.ipynb"
    results, stdout = run_autograder(autograder, tmp_path, source)
    validate_results(results)
    scored = [t for t in results["tests"] if t["max_score"] > 0]
    assert [t["name"] for t in scored] == ["char_tokenizer", "sequence_log_prob", "perplexity", "wordpiece_merges"]
    assert sum(t["max_score"] for t in scored) == 10
    if which == "solution":
        assert results["score"] == 10 and all(t["status"] == "passed" for t in results["tests"])
    else:
        assert results["score"] == 0 and all(t["status"] == "failed" for t in results["tests"])
        assert any("not-attempted" in t["output"] or "NotImplementedError" in t["output"] for t in results["tests"])
    assert "(chapter 01)" in stdout  # the grade table goes to the instructor's autograder output
    print(json.dumps(results, indent=1))
