"""The student release: what learners get, with no solution code and no hidden test anywhere."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lmcourse.course.exercises import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, ROOT, SOLUTIONS_DIR
from lmcourse.course.release import MARKER_TOOLING, leaks, release

MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "course"
    result = subprocess.run([sys.executable, "-m", "lmcourse", "release", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "none found" in result.stdout
    return out


def secret_lines() -> list[str]:
    """Every line of every solution region and every hidden test (stripped, non-blank)."""
    lines = []
    for path in sorted(SOLUTIONS_DIR.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = False
            for line in cell.source.split("\n"):
                if line.strip() in (BEGIN_SOLUTION, BEGIN_HIDDEN):
                    inside = True
                elif line.strip() in (END_SOLUTION, END_HIDDEN):
                    inside = False
                elif inside and line.strip():
                    lines.append(line.strip())
    return lines


def texts(folder: Path) -> dict[str, str]:
    """Each file's text; a notebook's also with its cells' sources decoded."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or "__pycache__" in f.parts or "_static" in f.parts:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if f.suffix == ".ipynb":
            text += "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
        out[f.relative_to(folder).as_posix()] = text
    return out


def test_the_release_holds_the_book_the_exercises_and_the_package_and_no_solutions(bundle):
    top = sorted(p.name for p in bundle.iterdir())
    assert {"book", "exercises", "lmcourse", "README.md", "Makefile", "tests", "pyproject.toml"} <= set(top)
    assert not (bundle / "solutions").exists() and not list(bundle.rglob("solutions"))
    assert sorted(p.name for p in (bundle / "exercises").glob("*.ipynb")) == \
        sorted(p.name for p in (ROOT / "exercises").glob("*.ipynb"))
    assert sorted(p.name for p in (bundle / "book").glob("*.ipynb")) == \
        sorted(p.name for p in (ROOT / "book").glob("*.ipynb"))
    assert sorted(p.name for p in (bundle / "tests").iterdir()) == ["test_release_smoke.py"]
    assert not list(bundle.rglob("grading_fixtures"))
    readme = (bundle / "README.md").read_text()
    assert "## Learners: the exercises" in readme and "## Instructors" not in readme
    assert "For instructors" not in (bundle / "book" / "exercises.md").read_text()


def test_no_line_of_a_solution_or_a_hidden_test_is_in_the_release(bundle):
    """Every line of 9 characters or more of every solution region and hidden test is searched for.

    A line the book, the package or the generated exercises hold anyway (course
    code like ``loss.backward()``) cannot give an answer away and is skipped;
    how many were is printed.
    """
    public = "\n".join(texts(ROOT / "book").values()) + "\n".join(texts(ROOT / "lmcourse").values()) + \
        "\n".join(texts(ROOT / "exercises").values())
    released = texts(bundle)
    searched, skipped, found = 0, 0, []
    for line in dict.fromkeys(secret_lines()):
        if len(line) < 9:
            continue
        if line in public:
            skipped += 1
            continue
        searched += 1
        found += [(name, line) for name, text in released.items() if line in text]
    print(f"searched the release for {searched} lines of solutions and hidden tests "
          f"({skipped} more are course code the book or the package holds)")
    assert searched > 100 and found == []


def test_no_marker_outside_the_tooling_that_strips_them(bundle):
    for name, text in texts(bundle).items():
        if name not in MARKER_TOOLING:
            assert not any(m in text for m in MARKERS), name


def test_the_release_command_finds_nothing_to_flag(bundle):
    assert leaks(bundle) == []


def test_planted_answers_are_found(tmp_path):
    """The release's own search catches a copied solutions notebook, a solution cell, a hidden test, a marker."""
    src = SOLUTIONS_DIR / "01_chain_rule.ipynb"
    nb = nbformat.read(src, as_version=4)
    solution = next(c.source for c in nb.cells if c.metadata.get("lmcourse", {}).get("role") == "solution")
    hidden = next(c.source for c in nb.cells if BEGIN_HIDDEN in c.source)
    body = solution.split(BEGIN_SOLUTION, 1)[1].split(END_SOLUTION, 1)[0]
    (tmp_path / "notes").mkdir()
    shutil.copy(src, tmp_path / "notes" / "copy.ipynb")
    (tmp_path / "helper.py").write_text(body)
    (tmp_path / "README.md").write_text("tests:\n" + hidden.split(BEGIN_HIDDEN, 1)[1].split(END_HIDDEN, 1)[0])
    (tmp_path / "page.md").write_text(f"{BEGIN_HIDDEN}\n")
    problems = "\n".join(leaks(tmp_path))
    assert "notes/copy.ipynb: a copy of a solutions notebook" in problems
    assert "helper.py: a whole solution region" in problems
    assert "README.md: a whole solution region or hidden test" in problems
    assert "page.md: a solution or hidden-test marker" in problems


def test_release_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        release(tmp_path)
    assert (tmp_path / "keep.txt").exists()


@pytest.mark.slow  # runs an exercise notebook in the release
def test_the_release_passes_its_smoke_test(bundle):
    result = subprocess.run(["make", "-C", str(bundle), "smoke", f"PY={sys.executable}"], capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
