"""Test-session settings for the whole repository (book/, lmcourse/ and tests/).

``make test`` runs pytest-xdist with ``--dist loadgroup``: tests of one group run
in one worker, one after another. Every test without a group of its own is put in
the group of its file, so a notebook's cells run in order in one kernel and a
module's fixtures are built once; tests that read one chapter's grading batch
carry that chapter's group (``tests/chapter_grades.py``), whatever their file,
and tests that use a session-wide fixture (:data:`SESSION_FIXTURES`) share its
group, so that fixture is built once.
"""

import pytest

# session-scoped fixtures that take minutes (tests/conftest.py): name -> their group
SESSION_FIXTURES = {"html": "built-book"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        shared = [g for f, g in SESSION_FIXTURES.items() if f in getattr(item, "fixturenames", ())]
        name = shared[0] if shared else item.path.relative_to(item.config.rootpath).as_posix()
        item.add_marker(pytest.mark.xdist_group(name))
