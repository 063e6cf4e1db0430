"""Gradescope's side of the autograder that ``python -m lmcourse grade --gradescope`` writes.

    python -m lmcourse.course.gradescope [--root /autograder] [--chapter NN]

``run_autograder`` runs this in Gradescope's container for each submission: it
grades the notebook found in ``ROOT/submission`` against the checks in
``ROOT/source/solutions`` (check cells only: see
:func:`lmcourse.course.export.write_autograder`), in the sandbox where bubblewrap
runs there, and writes ``ROOT/results/results.json``
(:func:`lmcourse.course.export.gradescope_results`). What it prints goes to
Gradescope's autograder output, which students do not see.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .exercises import SOLUTIONS_DIR
from .export import gradescope_results
from .grade import Chapters, find_notebooks, grade_notebook, summary
from .sandbox import Sandbox


def run_autograder(root: Path, chapter: str | None = None, solutions: Path = SOLUTIONS_DIR,
                   timeout: float = 300.0) -> dict:
    """Grade the notebook in ``root/submission`` and write ``root/results/results.json``; returns it."""
    start = time.monotonic()
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    found = [p for p, _ in find_notebooks([root / "submission"])] if (root / "submission").is_dir() else []
    results = {"score": 0.0, "tests": [],
               "output": "No notebook (.ipynb) in your submission: upload your exercise notebook."}
    if found:
        if len(found) > 1:
            print(f"note: {len(found)} notebooks submitted; grading {found[0].name}")
        sandbox = Sandbox("auto", hide=(Path(solutions), root / "submission"))
        try:
            rows = grade_notebook(found[0], chapter, solutions, timeout, found[0].name,
                                  chapters=Chapters(solutions), sandbox=sandbox)
        except ValueError as err:  # no such chapter
            results["output"] = f"This notebook cannot be graded here: {err}"
        else:
            print(summary(rows))
            results = gradescope_results(rows, time.monotonic() - start)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcourse.course.gradescope", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/autograder"), help="Gradescope's /autograder tree")
    parser.add_argument("--chapter", help="the chapter (NN) of this assignment")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the notebook")
    args = parser.parse_args(argv)
    results = run_autograder(args.root, args.chapter, timeout=args.timeout)
    print(json.dumps({k: v for k, v in results.items() if k != "tests"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
