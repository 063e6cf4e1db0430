"""The grader: solutions score full marks, untouched exercises zero, broken notebooks zero,
and every wrong-answer fixture loses its task's points (a fixture that calls what its
task forbids loses all of them)."""

import csv
import io
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from chapter_grades import WRONG_ANSWERS_DIR, assert_other_tasks_full, grades_of, group

from lmcourse.course.exercises import EXERCISES_DIR, SOLUTIONS_DIR, checks_of, forbid_of
from lmcourse.course.grade import FIELDS, find_notebooks, grade_notebook, write_csv

pytestmark = pytest.mark.slow  # runs every solution and exercise notebook

CHAPTERS = sorted(p.name for p in SOLUTIONS_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("name", [pytest.param(n, marks=group(n[:2])) for n in CHAPTERS])
def test_solution_scores_full_marks(name):
    rows = list(grades_of(SOLUTIONS_DIR / name).values())
    failures = [(r.task, r.status, r.message) for r in rows if r.points != r.max_points]
    assert not failures, failures
    assert all(r.status == "passed" for r in rows) and sum(r.max_points for r in rows) > 0
    assert all(r.message == "" for r in rows), [r.message for r in rows]  # no false alarm of tampering


@pytest.mark.parametrize("name", [pytest.param(n, marks=group(n[:2])) for n in CHAPTERS])
def test_untouched_exercise_scores_zero(name):
    rows = list(grades_of(EXERCISES_DIR / name).values())
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
            if "def wordpiece_merges" in cell.source:
                cell.source = "def wordpiece_merges(word_counts, num_merges):\n    return 1 / 0\n"
    rows = {r.task: r for r in grade_notebook(_broken_copy(tmp_path, break_tasks))}
    assert rows["char_tokenizer"].points == 3 and rows["sequence_log_prob"].status == "passed"
    assert rows["perplexity"].status == "failed" and "perplexity must be 10" in rows["perplexity"].message
    assert rows["wordpiece_merges"].status == "error" and "ZeroDivisionError" in rows["wordpiece_merges"].message


def test_deleted_check_cells_still_run_and_timeout_is_reported(tmp_path):
    def delete_checks_and_hang(nb):
        nb.cells = [c for c in nb.cells if c.metadata.get("lmcourse", {}).get("role") != "check"]
        nb.cells.append(nbformat.v4.new_code_cell("import time\nwhile True: time.sleep(1)"))
    rows = grade_notebook(_broken_copy(tmp_path, delete_checks_and_hang), timeout=3)
    assert {r.status for r in rows} == {"timeout"} and sum(r.points for r in rows) == 0

    def delete_checks(nb):
        nb.cells = [c for c in nb.cells if c.metadata.get("lmcourse", {}).get("role") != "check"]
    rows = grade_notebook(_broken_copy(tmp_path, delete_checks))
    assert all(r.points == r.max_points for r in rows), "deleting a check does not skip it"


@group("01")
def test_csv_is_deterministic():
    def text(rows):
        buf = io.StringIO()
        write_csv(rows, buf)
        return buf.getvalue()
    path = SOLUTIONS_DIR / CHAPTERS[0]
    assert text(list(grades_of(path).values())) == text(grade_notebook(path))


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


# -- every wrong-answer fixture, whatever its chapter --------------------------------------
#
# tests/grading_fixtures/wrong_answers/NN_*.ipynb: a chapter's solutions notebook
# with one task's solution code replaced by a plausible wrong answer. Its task is
# the one whose solution cells differ from solutions/ (exactly one must). It must
# score below full marks on that task and full marks on every other. A fixture
# named NN_*_calls_package.ipynb answers by calling what the task forbids: it must
# score 0 on that task, with the grader's message "task T must not call NAME".
# Adding a fixture file is enough for it to be graded here; fixtures that a
# table-driven test (WRONG_ANSWERS in tests/test_exercises*.py) checks, with the
# message of the check that must catch each, are not checked twice. Every
# notebook is graded once, in its chapter's batch (tests/chapter_grades.py).

SOLUTION_11 = SOLUTIONS_DIR / "11_modern_gpt.ipynb"

# Chapter 11's answers that call the package's own implementation (or PyTorch's),
# written by ``python tests/test_grading.py``: name -> (function, body).
CALLS_PACKAGE = {
    "11_rms_norm_calls_package": ("rms_norm", """
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    """),
    "11_muon_calls_package": ("orthogonalise", """
        from lmcourse.optim import newton_schulz

        return newton_schulz(G, steps=steps, dtype=G.dtype)
    """),
    "11_copying_calls_package": ("later_vs_first", """
        from lmcourse.copying import new_word_occurrences, occurrence_losses

        res = occurrence_losses(nll, new_word_occurrences([text], known),
                                len(text))
        return res["first"]["nats"], res["later"]["nats"]
    """),
    "11_cache_calls_package": ("cache_mixture", """
        from lmcourse.copying import cache_ngram_log_probs

        out = base.clone().double()
        for v in range(base.shape[1]):  # each candidate as if it came next
            for t in range(1, len(ids)):
                seq = list(ids[:t]) + [v]
                lp = cache_ngram_log_probs(seq, base[range(t), seq[1:]].log(),
                                           window=window, orders=(k,),
                                           weight=weight)
                out[t - 1, v] = lp[-1].exp()
        return out
    """),
}


def calls_package_notebook(name: str):
    from test_exercises import with_wrong_answer

    function, body = CALLS_PACKAGE[name]
    return with_wrong_answer(nbformat.read(SOLUTION_11, as_version=4), function, body)


def fixture_task(path: Path) -> str:
    """The task whose solution cells differ from the chapter's solutions notebook."""
    nb = nbformat.read(path, as_version=4)
    solution = nbformat.read(next(SOLUTIONS_DIR.glob(f"{path.name[:2]}_*.ipynb")), as_version=4)

    def solutions_of(notebook):
        cells = [c for c in notebook.cells if c.metadata.get("lmcourse", {}).get("role") == "solution"]
        return [(c.metadata["lmcourse"]["task"], c.source) for c in cells]

    mine, theirs = solutions_of(nb), solutions_of(solution)
    assert [t for t, _ in mine] == [t for t, _ in theirs], f"{path.name}: its solution cells are not the chapter's"
    changed = {t for (t, a), (_, b) in zip(mine, theirs, strict=True) if a != b}
    assert len(changed) == 1, f"{path.name}: a fixture changes the answer to exactly one task, not {sorted(changed)}"
    return changed.pop()


def _graded_elsewhere() -> set[str]:
    names: set[str] = set()
    for module in ("test_exercises", "test_exercises_05", "test_exercises_06", "test_exercises_07", "test_exercises_08",
                   "test_exercises_11", "test_exercises_12", "test_exercises_13"):
        try:
            names |= set(__import__(module).WRONG_ANSWERS)
        except (ImportError, AttributeError):
            pass
    return names


ALL_FIXTURES = sorted(p.stem for p in WRONG_ANSWERS_DIR.glob("[0-9][0-9]_*.ipynb"))
GRADED_HERE = [n for n in ALL_FIXTURES if n not in _graded_elsewhere()]


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_a_fixture_changes_one_task_and_a_calls_package_one_calls_a_forbidden_name(name):
    path = WRONG_ANSWERS_DIR / f"{name}.ipynb"
    task = fixture_task(path)
    if name.endswith("_calls_package"):
        forbid = forbid_of(nbformat.read(next(SOLUTIONS_DIR.glob(f"{name[:2]}_*.ipynb")), as_version=4))
        assert forbid.get(task), f"{name}: task {task} forbids nothing, so calling the package cannot cost it"


def test_chapter_11_calls_package_fixtures_are_up_to_date():
    for name in CALLS_PACKAGE:
        path = WRONG_ANSWERS_DIR / f"{name}.ipynb"
        assert path.exists() and path.read_text() == nbformat.writes(calls_package_notebook(name)) + "\n", (
            f"{path} is missing or out of date: run python tests/test_grading.py"
        )


@pytest.mark.parametrize("chapter", sorted(p.name[:2] for p in SOLUTIONS_DIR.glob("[0-9][0-9]_*.ipynb")))
def test_every_task_has_a_wrong_answer_fixture(chapter):
    solution = next(SOLUTIONS_DIR.glob(f"{chapter}_*.ipynb"))
    tasks = {c.task for c in checks_of(nbformat.read(solution, as_version=4))}
    covered = {fixture_task(WRONG_ANSWERS_DIR / f"{n}.ipynb") for n in ALL_FIXTURES
               if n[:2] == chapter and not n.endswith("_calls_package")}
    assert tasks <= covered, (f"chapter {chapter}: no wrong-answer fixture in {WRONG_ANSWERS_DIR.name}/ for "
                              f"{sorted(tasks - covered)}")


@pytest.mark.parametrize("name", [pytest.param(n, marks=group(n[:2])) for n in GRADED_HERE])
def test_a_wrong_answer_costs_its_task_points_and_no_others(name):
    task = fixture_task(WRONG_ANSWERS_DIR / f"{name}.ipynb")
    rows = grades_of(WRONG_ANSWERS_DIR / f"{name}.ipynb")
    wrong = rows[task]
    if name.endswith("_calls_package"):
        assert wrong.points == 0 and wrong.status == "failed", (wrong.status, wrong.message)
        # refused by reading before it runs (an import or a name the task forbids), else recorded as it runs
        assert wrong.message.startswith((f"task {task} must not call ", "not run: code cell ")), wrong.message
    else:
        assert wrong.points < wrong.max_points and wrong.status in ("failed", "error"), (wrong.status, wrong.message)
    assert_other_tasks_full(name, rows, task)


if __name__ == "__main__":
    for fixture in CALLS_PACKAGE:
        nbformat.write(calls_package_notebook(fixture), WRONG_ANSWERS_DIR / f"{fixture}.ipynb")
    print(f"wrote {len(CALLS_PACKAGE)} fixtures to {WRONG_ANSWERS_DIR}")
