"""Write the student release: the course as learners get it, without solutions.

    python -m lmcourse release OUT/ [--force]

``OUT`` receives the book (``book/``, its notebooks and pages; the exercises page
without its section for instructors), the learners' notebooks (``exercises/``),
the package (``lmcourse/``), what builds and installs them (``_config.yml``,
``_toc.yml``, ``pyproject.toml``, ``requirements.txt``), a README made of the
course README's sections for learners, a Makefile (``setup``, ``smoke``,
``test``, ``book``) and a smoke test (``tests/test_release_smoke.py``). It holds
no ``solutions/``, no hidden tests, no grading fixtures and no test that needs
them.

Before it reports success, :func:`leaks` searches everything written for the
solutions' code and hidden tests, and the command fails (exit 1) if it finds any:
a solution region or a hidden test whole, one of their lines more often than
the public sources hold it (``loss.backward()`` is course code too), a marker
line outside the tooling that defines it, or a copy of a solutions notebook.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path

import nbformat

from .exercises import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, ROOT, SOLUTIONS_DIR, cell_info

TOP_FILES = ("_config.yml", "_toc.yml", "pyproject.toml", "requirements.txt", "requirements-lab.txt")
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", "_build", ".pytest_cache"}
SKIP_DIRS = ("book/_static/mathjax",)  # fetched by `make book`, not a source
LEARNER_SECTIONS = ("The chapters", "Learners: the exercises")
INSTRUCTOR_SECTION = "## For instructors"
MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)
# The tooling that defines the markers (to strip them) names them; nothing else may.
MARKER_TOOLING = ("lmcourse/course/markers.py", "lmcourse/course/exercises.py", "lmcourse/course/check.py")
MIN_LINE = 9  # shorter lines ("return x", a lone bracket) are too common to identify anything

MAKEFILE = """\
# The student release of the course (written by `python -m lmcourse release`).
#   make setup   a virtual environment in .venv with the course's requirements
#   make lab     JupyterLab on exercises/ (installed into .venv the first time)
#   make smoke   the release's smoke test (seconds)
#   make test    the smoke test, then every chapter notebook under strict nbval
#   make book    the HTML book in _build/html
PYTHON ?= python3
VENV   := .venv
PY     ?= $(VENV)/bin/python
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax/tex-chtml.js

.PHONY: setup lab smoke test book

setup:
\ttest -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
\t$(VENV)/bin/python -m pip install --quiet -r requirements.txt
\t$(VENV)/bin/python -m pip install --quiet --no-deps -e .

lab:
\ttest -x $(VENV)/bin/python || $(MAKE) setup
\ttest -x $(VENV)/bin/jupyter-lab || $(VENV)/bin/python -m pip install --quiet -r requirements-lab.txt
\t$(VENV)/bin/jupyter lab --ServerApp.root_dir=exercises $$([ "$$(id -u)" = 0 ] && echo --allow-root)

smoke:
\tOMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q tests/test_release_smoke.py

test: smoke
\tOMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest --nbval book

$(MATHJAX):
\trm -rf _build/vendor && mkdir -p _build/vendor
\tcd _build/vendor && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
\trm -rf book/_static/mathjax && mkdir -p book/_static
\tcp -r _build/vendor/package/es5 book/_static/mathjax

book: $(MATHJAX)
\t$(VENV)/bin/jupyter-book build . --all -W --keep-going
"""

SMOKE_TEST = '''\
"""The student release's smoke test: the package runs, the exercises are whole, nothing is hidden here.

Written by ``python -m lmcourse release``; run it with ``make smoke``.
"""

import json
import subprocess
import sys
from pathlib import Path

import nbformat

import lmcourse

HERE = Path(__file__).resolve().parent.parent
MARKERS = ("### BEGIN " + "SOLUTION", "### BEGIN " + "HIDDEN TESTS")


def test_the_package_is_this_release():
    assert Path(lmcourse.__file__).resolve().parent == HERE / "lmcourse"


def test_the_command_line_lists_the_self_check():
    result = subprocess.run([sys.executable, "-m", "lmcourse", "--help"], capture_output=True, text=True, cwd=HERE)
    assert result.returncode == 0 and "check" in result.stdout


def test_every_exercise_has_tasks_and_checks_and_nothing_hidden():
    notebooks = sorted((HERE / "exercises").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        roles = [c.metadata.get("lmcourse", {}).get("role") for c in nb.cells]
        assert "solution" in roles and "check" in roles, path
        assert not any(m in c.source for c in nb.cells for m in MARKERS), path


def test_no_solutions_here():
    assert not (HERE / "solutions").exists()


def test_the_self_check_runs_an_untouched_exercise():
    first = sorted((HERE / "exercises").glob("*.ipynb"))[0]
    result = subprocess.run([sys.executable, "-m", "lmcourse", "check", str(first)], capture_output=True, text=True,
                            cwd=HERE, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not attempted" in result.stdout and "passed" not in result.stdout.split("points")[0]


def test_the_book_lists_its_notebooks():
    toc = (HERE / "_toc.yml").read_text()
    for path in sorted((HERE / "book").glob("[0-9][0-9]_*.ipynb")):
        assert f"book/{path.stem}" in toc
        json.loads(path.read_text())
'''

NOTE = """\
This is the **student release** of the course: the book, your exercise notebooks
(`exercises/`) and the companion package. Solutions and the grader's hidden
checks are not part of it.

## Set up and check

You need Python 3.10+ with `venv` and `make` (and `npm` to build the book):

    make setup                 # .venv with the course's requirements and lmcourse
    make lab                   # JupyterLab on exercises/ (installed the first time)
    source .venv/bin/activate
    make smoke                 # the release's smoke test
    make book                  # the HTML book in _build/html
    make test                  # the smoke test, then every chapter notebook (strict nbval)
"""


def sections(markdown: str) -> tuple[str, dict[str, str]]:
    """A Markdown text's preamble (before its first second-level heading) and its ``##`` sections by title."""
    preamble, found, title, lines = "", {}, None, []
    for line in markdown.splitlines(keepends=True):
        if line.startswith("## "):
            if title is None:
                preamble = "".join(lines)
            else:
                found[title] = "".join(lines)
            title, lines = line[3:].strip(), [line]
        else:
            lines.append(line)
    if title is None:
        preamble = "".join(lines)
    else:
        found[title] = "".join(lines)
    return preamble, found


def learner_readme(readme: str) -> str:
    """The release's README: the course README's preamble and its sections for learners."""
    preamble, found = sections(readme)
    parts = [preamble.rstrip() + "\n", NOTE] + [found[t].rstrip() + "\n" for t in LEARNER_SECTIONS if t in found]
    return "\n".join(parts)


def without_instructors(page: str) -> str:
    """The exercises page of the book without its section for instructors."""
    if INSTRUCTOR_SECTION not in page:
        return page
    head, _, tail = page.partition(INSTRUCTOR_SECTION)
    rest = tail.split("\n## ", 1)
    return head.rstrip() + "\n" + ("\n## " + rest[1] if len(rest) > 1 else "")


def _files(folder: Path, root: Path = ROOT) -> list[Path]:
    out = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if f.is_file() and not SKIP_PARTS & set(f.parts) and not rel.endswith((".pyc", ".pyo")) \
                and not any(rel.startswith(d + "/") for d in SKIP_DIRS):
            out.append(f)
    return out


def release(out: Path, root: Path = ROOT, force: bool = False) -> list[str]:
    """Write the student release into ``out``; returns the paths written (relative, sorted)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty (--force replaces it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def put(rel: str, data: bytes) -> None:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        written.append(rel)

    for folder in ("book", "lmcourse"):
        for f in _files(root / folder, root):
            rel = f.relative_to(root).as_posix()
            data = f.read_bytes()
            if rel == "book/exercises.md":
                data = without_instructors(data.decode("utf-8")).encode("utf-8")
            put(rel, data)
    for f in sorted((root / "exercises").glob("*.ipynb")):
        put(f"exercises/{f.name}", f.read_bytes())
    for name in TOP_FILES:
        if (root / name).exists():
            put(name, (root / name).read_bytes())
    put("README.md", learner_readme((root / "README.md").read_text(encoding="utf-8")).encode("utf-8"))
    put("Makefile", MAKEFILE.encode())
    put("tests/test_release_smoke.py", SMOKE_TEST.encode())
    return sorted(written)


def _regions(source: str, begin: str, end: str) -> list[list[str]]:
    """The non-blank lines (stripped) of each ``begin``..``end`` region of a cell."""
    regions, inside = [], None
    for line in source.split("\n"):
        if line.strip() == begin:
            inside = []
        elif line.strip() == end and inside is not None:
            regions.append(inside)
            inside = None
        elif inside is not None and line.strip():
            inside.append(line.strip())
    return regions


def secret_regions(solutions: Path = SOLUTIONS_DIR) -> list[list[str]]:
    """Every solution region and every hidden test of the solutions notebooks, as lists of lines."""
    found = []
    for path in sorted(Path(solutions).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                found += _regions(cell.source, BEGIN_SOLUTION, END_SOLUTION)
                found += _regions(cell.source, BEGIN_HIDDEN, END_HIDDEN)
    return [r for r in found if r]


def _text_lines(path: Path) -> list[str]:
    """A file's lines, stripped; for a notebook, its cells' sources and outputs, decoded, then its raw text."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return []
    if path.suffix == ".ipynb":
        try:
            nb = nbformat.reads(text, as_version=4)
        except Exception:  # noqa: BLE001 - an unreadable notebook is searched as text
            nb = None
        if nb is not None:
            parts = []
            for cell in nb.cells:
                parts.append(cell.source)
                for output in cell.get("outputs", []):
                    parts.append(str(output.get("text", "")))
                    parts.append(str(output.get("data", {}).get("text/plain", "")))
            text = "\n".join(parts) + "\n" + text
    return [line.strip() for line in text.split("\n")]


class _Lines:
    """A file's non-blank lines with an index, to find a run of lines quickly."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = [line for line in lines if line]
        self.at: dict[str, list[int]] = {}
        for i, line in enumerate(self.lines):
            self.at.setdefault(line, []).append(i)

    def has_run(self, run: list[str]) -> bool:
        return any(self.lines[i:i + len(run)] == run for i in self.at.get(run[0], ()))


def public_sources(root: Path = ROOT) -> list[Path]:
    """What learners read anyway, against which a common line is measured: the book, the package, the exercises."""
    return _files(root / "book", root) + _files(root / "lmcourse", root) + sorted((root / "exercises").glob("*.ipynb"))


def leaks(out: Path, solutions: Path = SOLUTIONS_DIR, root: Path = ROOT) -> list[str]:
    """Everything in the release ``out`` that gives away a solution or a hidden test (empty: nothing).

    Checked: a ``solutions`` folder or a copy of a solutions notebook; a marker
    line outside :data:`MARKER_TOOLING`; a solution region or hidden test whole
    (unless the book or the package holds it whole too: then it is course code);
    and each distinctive line of them (:data:`MIN_LINE` characters or more) found
    more often in the release than in the book, the package and the exercises.
    """
    out = Path(out)
    problems: list[str] = []
    files = [f for f in sorted(out.rglob("*")) if f.is_file()]
    solution_bytes = {p.read_bytes() for p in Path(solutions).glob("*.ipynb")}
    mine = {f: _Lines(_text_lines(f)) for f in files}
    public = [_Lines(_text_lines(f)) for f in public_sources(root)]
    for f in files:
        rel = f.relative_to(out).as_posix()
        if "solutions" in f.relative_to(out).parts:
            problems.append(f"{rel}: a solutions folder")
        if f.read_bytes() in solution_bytes:
            problems.append(f"{rel}: a copy of a solutions notebook")
        if rel not in MARKER_TOOLING and any(m in line for line in mine[f].lines for m in MARKERS):
            problems.append(f"{rel}: a solution or hidden-test marker")
    regions = secret_regions(solutions)
    for region in regions:
        if len(region) == 1 and len(region[0]) < MIN_LINE:
            continue
        if any(p.has_run(region) for p in public):
            continue  # the book or the package holds it whole: course code, not an answer
        for f in files:
            if mine[f].has_run(region):
                problems.append(f"{f.relative_to(out)}: a whole solution region or hidden test: {region[0][:60]}")
    distinctive = {line for region in regions for line in region if len(line) >= MIN_LINE}
    in_release = Counter(line for f in files for line in mine[f].lines if line in distinctive)
    in_public = Counter(line for p in public for line in p.lines if line in distinctive)
    for line, count in sorted(in_release.items()):
        if count > in_public[line]:
            problems.append(f"a line of a solution or hidden test appears {count} times (the book, the package "
                            f"and the exercises hold it {in_public[line]} times): {line[:80]}")
    return problems


def solution_cells(solutions: Path = SOLUTIONS_DIR) -> int:
    """How many solution cells the solutions notebooks have (for the report)."""
    return sum(cell_info(c).get("role") == "solution"
               for p in Path(solutions).glob("*.ipynb") for c in nbformat.read(p, as_version=4).cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse release", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write (must be empty or absent, unless --force)")
    parser.add_argument("--force", action="store_true", help="replace what is in OUT")
    args = parser.parse_args(argv)
    try:
        written = release(args.out, force=args.force)
    except (FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problems = leaks(args.out)
    if problems:
        print(f"error: the release in {args.out} gives answers away:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    regions = len(secret_regions())
    print(f"wrote {len(written)} files to {args.out}: the book, exercises/, the package, a README for learners; "
          f"searched for {regions} solution regions and hidden tests ({solution_cells()} solution cells): none found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
