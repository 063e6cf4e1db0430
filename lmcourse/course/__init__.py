"""Course tooling: the machinery around the notebooks, not a concept of the course.

* :mod:`lmcourse.course.exercises`: writes ``exercises/`` from ``solutions/``
  (``python -m lmcourse exercises``).
* :mod:`lmcourse.course.grade`: grades submitted exercise notebooks
  (``python -m lmcourse grade``) and runs a learner's visible self-checks
  (``python -m lmcourse check``).
* :mod:`lmcourse.course.grade_runner`: runs one submission in its own process for
  the grader.
* :mod:`lmcourse.course.sandbox`: the bubblewrap sandbox and the process limit a
  submission runs under.
* :mod:`lmcourse.course.export`: an LMS gradebook CSV and a Gradescope autograder;
  :mod:`lmcourse.course.gradescope` is what that autograder runs on Gradescope.
* :mod:`lmcourse.course.release`: writes the student release, without solutions
  (``python -m lmcourse release``).
* :mod:`lmcourse.course.notebooks`: executes the book's notebooks and stores stable
  outputs (``python -m lmcourse notebooks``).

These modules import the concept modules (the grader's runner guards them), never
the other way round.
"""
