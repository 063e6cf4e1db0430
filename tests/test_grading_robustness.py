"""One batch of misbehaving submissions: each gets exactly the points it earned.

The fixtures are made by tests/grading_fixtures/make_fixtures.py from chapter 1's
solution and exercise; EXPECTED there lists the points each really earned.
"""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from lmcourse.course.exercises import SOLUTIONS_DIR

FIXTURES = Path(__file__).resolve().parent / "grading_fixtures"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import EXPECTED  # noqa: E402

pytestmark = pytest.mark.slow  # grades a batch of notebooks in subprocesses

SOLUTION = str(SOLUTIONS_DIR / "01_chain_rule.ipynb")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("grades")
    # the fixtures by name: sub-folders of grading_fixtures/ hold other tests' fixtures
    fixtures = [str(p) for p in sorted(FIXTURES.glob("*.ipynb"))]
    cmd = [sys.executable, "-m", "lmcourse.course.grade", *fixtures, SOLUTION, "--chapter", "01",
           "--jobs", "2", "--timeout", "15", "--memory", "2048",
           "--out", str(out / "grades.csv"), "--feedback", str(out / "feedback")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=out)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "grades.csv").open(encoding="utf-8")))
    by_sub: dict[str, list[dict]] = {}
    for row in rows:
        by_sub.setdefault(row["submission"], []).append(row)
    return by_sub, out, result.stdout


def rows_of(batch, name):
    return batch[0][str(FIXTURES / f"{name}.ipynb")]


def points(rows):
    return sum(float(r["points"]) for r in rows)


def test_fixtures_are_up_to_date():
    assert {p.stem for p in FIXTURES.glob("*.ipynb")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_submission_gets_the_points_it_earned(batch, name):
    rows = rows_of(batch, name)
    tasks = {"char_tokenizer", "sequence_log_prob", "perplexity", "wordpiece_merges"}
    assert len(rows) == 4 and {r["task"] for r in rows} == tasks
    assert points(rows) == EXPECTED[name], [(r["task"], r["points"], r["status"], r["message"]) for r in rows]


def test_the_batch_completes_and_the_honest_submission_is_unaffected(batch):
    by_sub, out, stdout = batch
    assert len(by_sub) == len(EXPECTED) + 1
    assert points(by_sub[SOLUTION]) == 10
    assert "10/10 points, 100%" in stdout
    assert not (out / "solutions").exists(), "a submission wrote outside its own working directory"


def reasons(batch, name):
    return {r["task"]: (r["status"], r["message"]) for r in rows_of(batch, name)}


def test_reasons_are_in_the_csv(batch):
    assert all("not a readable notebook" in m for _, m in reasons(batch, "invalid_json").values())
    assert all("chapter 02, not chapter 01" in m for _, m in reasons(batch, "other_chapter").values())
    status, message = reasons(batch, "syntax_error")["perplexity"]
    assert status == "error" and "SyntaxError" in message
    # the checks run after the notebook's last cell, wherever their cells are
    assert {s for s, _ in reasons(batch, "check_before_solution").values()} == {"passed"}
    assert "MemoryError" in reasons(batch, "memory_bomb")["perplexity"][1]
    # a cell that never ends is stopped after half the time limit; the checks still run
    assert {s for s, _ in reasons(batch, "endless_loop").values()} == {"passed"}
    assert {s for s, _ in reasons(batch, "fake_passing_output").values()} == {"not-attempted"}
    patched = reasons(batch, "monkeypatch")  # read before it runs: refused, so nothing is patched
    assert all("was not run" in m and "changes torch.allclose" in m for _, m in patched.values())


def test_feedback_never_quotes_hidden_checks(batch):
    _, out, _ = batch
    files = sorted((out / "feedback").glob("*.md"))
    assert len(files) == len(EXPECTED) + 1
    text = next((out / "feedback").glob("*grading_fixtures_hardcoded_visible.ipynb.md")).read_text()
    assert "failed a hidden one" in text and "0 / 10 points" in text
    hidden_sources = (SOLUTIONS_DIR / "01_chain_rule.ipynb").read_text()
    assert "manual_seed(2)" in hidden_sources  # a line of a hidden test...
    assert not any("manual_seed" in f.read_text() for f in files)  # ...quoted in no feedback
