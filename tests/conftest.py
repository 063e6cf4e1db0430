# The grading fixtures are misbehaving submissions, graded by tests; they are not
# notebooks for nbval to run.
collect_ignore_glob = ["grading_fixtures/*"]
