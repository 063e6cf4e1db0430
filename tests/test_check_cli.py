"""The one command line (``python -m lmcourse``) and the learner's self-check (``check``)."""

import re
import subprocess
import sys

import nbformat
import pytest

from lmcourse.course.check import visible_part
from lmcourse.course.exercises import BEGIN_HIDDEN, END_HIDDEN, EXERCISES_DIR, SOLUTIONS_DIR, checks_of

CHAPTER_1 = "01_chain_rule.ipynb"
TASKS = ("char_tokenizer", "sequence_log_prob", "perplexity", "wordpiece_merges")


def lmcourse(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lmcourse", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def statuses(stdout: str) -> dict[str, str]:
    """task -> status, read from the table that ``check`` prints."""
    found = {}
    for task in TASKS:
        match = re.search(rf"^{task}\s+(passed|failed|error|not attempted|timeout)\s+\d", stdout, re.MULTILINE)
        assert match, f"no row for {task} in:\n{stdout}"
        found[task] = match.group(1)
    return found


def hidden_lines(path) -> list[str]:
    """Every non-blank line of the hidden tests of a notebook's check cells."""
    lines = []
    for check in checks_of(nbformat.read(path, as_version=4)):
        inside = False
        for line in check.source.split("\n"):
            if line.strip() == BEGIN_HIDDEN:
                inside = True
            elif line.strip() == END_HIDDEN:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def test_help_lists_every_command():
    result = lmcourse("--help")
    assert result.returncode == 0, result.stderr
    for command in ("train", "check", "grade", "exercises", "notebooks", "bench"):
        listed = re.search(rf"^\s+{command}\s+\S", result.stdout, re.MULTILINE)
        assert listed, f"{command} missing from:\n{result.stdout}"


def test_no_command_or_an_unknown_one_exits_2_with_a_message():
    result = lmcourse("frobnicate", "--now")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr and "check" in result.stderr
    assert lmcourse().returncode == 2


def test_visible_part_drops_every_hidden_region_even_an_unclosed_one():
    source = f"a = 1\n{BEGIN_HIDDEN}\nb = 2\n{END_HIDDEN}\nc = 3\n  {BEGIN_HIDDEN}\nd = 4"
    assert visible_part(source) == "a = 1\nc = 3"


@pytest.mark.slow  # runs a chapter's notebook
def test_check_passes_the_solutions_and_prints_no_hidden_test():
    path = SOLUTIONS_DIR / CHAPTER_1
    result = lmcourse("check", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(statuses(result.stdout).values()) == {"passed"}
    assert "10 / 10 points" in result.stdout
    secret = hidden_lines(path)
    assert any("manual_seed(2)" in line for line in secret)  # the hidden tests are there...
    output = result.stdout + result.stderr
    # ...and none is printed (lines of a few characters, like a closing ")", are too
    # common to say anything)
    assert not [line for line in secret if len(line) > 8 and line in output]
    assert "HIDDEN" not in output


@pytest.mark.slow  # runs a chapter's notebook
def test_an_untouched_exercise_is_not_attempted():
    result = lmcourse("check", EXERCISES_DIR / CHAPTER_1)
    assert result.returncode == 0, result.stdout + result.stderr  # nothing attempted, nothing failed
    assert set(statuses(result.stdout).values()) == {"not attempted"}


@pytest.mark.slow  # runs a chapter's notebook
def test_hidden_tests_never_run_and_a_failed_check_shows_its_message(tmp_path):
    nb = nbformat.read(SOLUTIONS_DIR / CHAPTER_1, as_version=4)
    for cell in nb.cells:
        if BEGIN_HIDDEN in cell.source:  # a hidden test that would fail, loudly, if it ran
            cell.source = cell.source.replace(BEGIN_HIDDEN, f"{BEGIN_HIDDEN}\nraise SystemExit('hidden tests ran')")
        if "def perplexity_from_logits" in cell.source:
            cell.source = cell.source.replace("math.exp(-picked.mean().item())", "-picked.mean().item()")
    path = tmp_path / CHAPTER_1
    nbformat.write(nb, path)
    result = lmcourse("check", path)
    assert result.returncode == 1, result.stdout + result.stderr
    found = statuses(result.stdout)
    assert found.pop("perplexity") == "failed" and set(found.values()) == {"passed"}
    assert "perplexity must be 10" in result.stdout
    assert "hidden tests ran" not in result.stdout + result.stderr


@pytest.mark.parametrize("content, message", [(None, "no notebook"), ("{ not json", "error")])
def test_a_missing_or_broken_notebook_exits_2(tmp_path, content, message):
    path = tmp_path / CHAPTER_1
    if content is not None:
        path.write_text(content)
    result = lmcourse("check", path)
    assert result.returncode == 2 and message in result.stderr
