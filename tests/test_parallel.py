"""The test suite's own parallel setup (conftest.py): groups that keep shared work in one worker."""

import os
from pathlib import Path

from chapter_grades import notebooks_of

ROOT = Path(__file__).resolve().parent.parent


def test_under_loadgroup_every_test_carries_its_group(request):
    # pytest-xdist groups tests by a suffix it adds to their ids; a pytest that ignores
    # it (9.2 did) would run a notebook's cells in several kernels and grade a chapter twice
    if os.environ.get("PYTEST_XDIST_WORKER") and request.config.getvalue("loadgroup"):
        assert request.node.nodeid.endswith("@tests/test_parallel.py"), request.node.nodeid


def test_a_chapter_batch_is_its_solution_exercise_and_every_fixture():
    paths = notebooks_of("05")
    assert [p.parent.name for p in paths[:2]] == ["solutions", "exercises"]
    assert paths[0].name == paths[1].name == "05_positions.ipynb"
    assert len(paths) > 3 and all(p.parent.name == "wrong_answers" and p.name[:3] == "05_" for p in paths[2:])


def test_the_groups_handed_out_first_exist(request):
    root = next(p for p in request.config.pluginmanager.get_plugins()
                if getattr(p, "__file__", None) == str(ROOT / "conftest.py"))
    assert root.LONG_FIRST and all(g in root.SESSION_FIXTURES.values() or (ROOT / g).is_file()
                                   for g in root.LONG_FIRST), root.LONG_FIRST
