"""The markers of solution regions and hidden checks (nbgrader's), in a module of their own.

The grade runner needs them in every graded submission's process; keeping them
here means that process does not import :mod:`lmcourse.course.exercises` and,
through it, ``nbformat`` and ``jsonschema`` (seconds of start-up per submission
where JupyterLab's format checkers are installed).
"""

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
