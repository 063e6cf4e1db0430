# Two commands on a fresh machine (each sets itself up):
#   make book   build the HTML book into _build/html (offline MathJax included)
#   make test   ruff, then unit tests + doctests, strict nbval of book/, exercise sync, grading,
#               the browser tests (the book, and an exercise in JupyterLab)
# and while working:
#   make lint   ruff (bugbear included) on the package, the tests and the notebooks
#   make check  ruff, then the fast tests and doctests (no notebooks, no slow tests)
#   make pdf    the whole book as one PDF, _build/pdf/lmcourse.pdf (builds the HTML, Chromium prints it)
# and for learners:
#   make lab    JupyterLab on exercises/ (installed into .venv the first time)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax/tex-chtml.js

.PHONY: setup book pdf lint test check lab chromium bubblewrap poppler grading-scale notebooks exercises clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

# JupyterLab (requirements-lab.txt), installed on first use, then opened on exercises/.
# LAB_ARGS passes options on (e.g. LAB_ARGS="--no-browser --port 8890").
LAB_STAMP := $(VENV)/.lab-installed
LAB_ARGS ?=

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=exercises $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

$(LAB_STAMP): $(STAMP) requirements-lab.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-lab.txt
	touch $(LAB_STAMP)

# MathJax 3 from the npm registry, unpacked beside the book's static files (not committed).
$(MATHJAX):
	rm -rf _build/vendor && mkdir -p _build/vendor
	cd _build/vendor && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf book/_static/mathjax && mkdir -p book/_static
	cp -r _build/vendor/package/es5 book/_static/mathjax

book: $(STAMP) $(MATHJAX)
	$(VENV)/bin/jupyter-book build . --all -W --keep-going

# The built book as one PDF (title page, contents, page numbers, bookmarks), printed
# offline by Debian's Chromium: lmcourse/course/pdf.py.
pdf: book chromium
	$(PY) -m lmcourse pdf

# Debian's Chromium for the browser test of the built book (skipped, with a
# message, where it cannot be installed).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium could not be installed; the browser test will be skipped"

# Debian's bubblewrap, the sandbox each graded submission runs in (where it cannot be
# installed or cannot run, the grader says so and the sandbox tests are skipped).
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; }; }; } || \
	  echo "note: bubblewrap could not be installed; graded submissions will run without the sandbox"

# Debian's poppler-utils (pdftotext, pdfimages), with which the PDF test reads the
# printed book (skipped, with a message, where it cannot be installed).
poppler:
	@command -v pdftotext >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q poppler-utils >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q poppler-utils >/dev/null 2>&1; }; }; } || \
	  echo "note: poppler-utils could not be installed; the PDF test will be skipped"

# pytest-xdist: one worker per core (TEST_WORKERS=0: no workers, all in one process);
# --dist loadgroup keeps each notebook, each test file and each chapter's grading
# batch in one worker (conftest.py, tests/chapter_grades.py).
TEST_WORKERS ?= auto

# One torch thread unless you say otherwise: on 2 cores, torch's default 2 threads
# run up to 35x slower as soon as anything else holds a core, and the stored
# outputs are the same either way.
test: $(STAMP) $(LAB_STAMP) lint $(MATHJAX) chromium bubblewrap poppler
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations 25 \
	  --nbval --doctest-modules lmcourse tests book

# Settings in pyproject.toml; book/ and solutions/ hold their code lines to the width
# of a code cell in the HTML book (book/ruff.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

check: lint
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow" \
	  --doctest-modules lmcourse tests

# Grade 100 submissions of one chapter with --jobs 2 (minutes): wall time and peak memory.
grading-scale: $(STAMP) bubblewrap
	LMCOURSE_SCALE_TEST=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -s -m scale tests/test_grading_scale.py

# Authoring helpers
notebooks: $(STAMP)
	$(PY) -m lmcourse notebooks run book/*.ipynb

exercises: $(STAMP)
	$(PY) -m lmcourse exercises

clean:
	rm -rf _build
