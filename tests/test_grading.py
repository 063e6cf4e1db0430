"""The grader: solutions score full marks, untouched exercises zero, broken notebooks zero."""

import csv
import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from lmcourse.course.exercises import EXERCISES_DIR, SOLUTIONS_DIR
from lmcourse.course.grade import FIELDS, find_notebooks, grade_notebook, write_csv

pytestmark = pytest.mark.slow  # runs every solution and exercise notebook

CHAPTERS = sorted(p.name for p in SOLUTIONS_DIR.glob("*.ipynb"))


@pytest.fixture(scope="module")
def graded():
    """Grade every solution and every exercise once (two at a time)."""
    paths = [SOLUTIONS_DIR / n for n in CHAPTERS] + [EXERCISES_DIR / n for n in CHAPTERS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(grade_notebook, paths))
    return dict(zip(paths, rows, strict=True))


@pytest.mark.parametrize("name", CHAPTERS)
def test_solution_scores_full_marks(graded, name):
    rows = graded[SOLUTIONS_DIR / name]
    failures = [(r.task, r.status, r.message) for r in rows if r.points != r.max_points]
    assert not failures, failures
    assert all(r.status == "passed" for r in rows) and sum(r.max_points for r in rows) > 0
    assert all(r.message == "" for r in rows), [r.message for r in rows]  # no false alarm of tampering


@pytest.mark.parametrize("name", CHAPTERS)
def test_untouched_exercise_scores_zero(graded, name):
    rows = graded[EXERCISES_DIR / name]
    assert sum(r.points for r in rows) == 0
    assert {r.status for r in rows} == {"not-attempted"}


def _broken_copy(tmp_path, mutate, source=SOLUTIONS_DIR):
    nb = nbformat.read(source / "01_chain_rule.ipynb", as_version=4)
    mutate(nb)
    path = tmp_path / "01_chain_rule.ipynb"
    nbformat.write(nb, path)
    return path


def test_notebook_raising_in_first_cell_scores_zero_and_batch_completes(tmp_path):
    def first_cell_raises(nb):
        nb.cells[1].source = "raise RuntimeError('boom')\n" + nb.cells[1].source
    bad = _broken_copy(tmp_path, first_cell_raises, source=EXERCISES_DIR)
    (tmp_path / "invalid").mkdir()
    (tmp_path / "invalid" / "01_chain_rule.ipynb").write_text("{ this is not json")
    out = tmp_path / "grades.csv"
    result = subprocess.run(
        [sys.executable, "-m", "lmcourse.course.grade", str(bad), str(tmp_path / "invalid"),
         str(SOLUTIONS_DIR / "01_chain_rule.ipynb"), "--out", str(out), "--jobs", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == FIELDS
    by_sub = {}
    for r in rows:
        by_sub.setdefault(r["submission"], []).append(r)
    assert len(by_sub) == 3
    assert sum(float(r["points"]) for r in by_sub[str(bad)]) == 0
    invalid = by_sub["invalid/01_chain_rule.ipynb"]
    assert all(r["status"] == "error" and "not a readable notebook" in r["message"] for r in invalid)
    full = by_sub[str(SOLUTIONS_DIR / "01_chain_rule.ipynb")]
    assert all(r["points"] == r["max_points"] for r in full)


def test_partial_credit_and_reasons(tmp_path):
    def break_tasks(nb):
        for cell in nb.cells:
            if "def perplexity_from_logits" in cell.source:
                cell.source = cell.source.replace("math.exp(-picked.mean().item())", "-picked.mean().item()")
            if "def bits_per_character" in cell.source:
                cell.source = "def bits_per_character(total_nats, n_tokens, n_chars):\n    return 1 / 0\n"
    rows = {r.task: r for r in grade_notebook(_broken_copy(tmp_path, break_tasks))}
    assert rows["char_tokenizer"].points == 3 and rows["sequence_log_prob"].status == "passed"
    assert rows["perplexity"].status == "failed" and "perplexity must be 10" in rows["perplexity"].message
    assert rows["bits_per_char"].status == "error" and "ZeroDivisionError" in rows["bits_per_char"].message


def test_deleted_check_cells_still_run_and_timeout_is_reported(tmp_path):
    def delete_checks_and_hang(nb):
        nb.cells = [c for c in nb.cells if c.metadata.get("lmcourse", {}).get("role") != "check"]
        nb.cells.append(nbformat.v4.new_code_cell("import time\nwhile True: time.sleep(1)"))
    rows = grade_notebook(_broken_copy(tmp_path, delete_checks_and_hang), timeout=20)
    assert {r.status for r in rows} == {"timeout"} and sum(r.points for r in rows) == 0

    def delete_checks(nb):
        nb.cells = [c for c in nb.cells if c.metadata.get("lmcourse", {}).get("role") != "check"]
    rows = grade_notebook(_broken_copy(tmp_path, delete_checks))
    assert all(r.points == r.max_points for r in rows), "deleting a check does not skip it"


def test_csv_is_deterministic(graded):
    def text(rows):
        buf = io.StringIO()
        write_csv(rows, buf)
        return buf.getvalue()
    path = SOLUTIONS_DIR / CHAPTERS[0]
    assert text(graded[path]) == text(grade_notebook(path))


def test_first_cell_raising_costs_only_what_depends_on_it(tmp_path):
    def first_cell_raises(nb):
        nb.cells[1].source = "raise RuntimeError('boom')\n" + nb.cells[1].source
    rows = {r.task: r for r in grade_notebook(_broken_copy(tmp_path, first_cell_raises))}
    # the tokenizer needs no import and keeps its points; the rest needed torch/math
    assert rows["char_tokenizer"].points == 3
    assert all(rows[t].points == 0 and rows[t].status == "error" for t in ("sequence_log_prob", "perplexity"))
    assert "NameError" in rows["perplexity"].message


def test_submission_names_stay_unique(tmp_path):
    for student in ("alice", "bob"):
        (tmp_path / student).mkdir()
        (tmp_path / student / "01_chain_rule.ipynb").write_text("{}")
    names = [name for _, name in find_notebooks([tmp_path / "alice", tmp_path / "bob"])]
    assert names == ["alice/01_chain_rule.ipynb", "bob/01_chain_rule.ipynb"]
    names = [name for _, name in find_notebooks([tmp_path])]
    assert names == [f"{tmp_path.name}/alice/01_chain_rule.ipynb", f"{tmp_path.name}/bob/01_chain_rule.ipynb"]
