"""Test-session settings for the whole repository (book/, lmcourse/ and tests/).

``make test`` runs pytest-xdist with ``--dist loadgroup``: tests of one group run
in one worker, one after another. Every test without a group of its own is put in
the group of its file, so a notebook's cells run in order in one kernel and a
module's fixtures are built once; tests that read one chapter's grading batch
carry that chapter's group (``tests/chapter_grades.py``), whatever their file,
and tests that use a session-wide fixture (:data:`SESSION_FIXTURES`) share its
group, so that fixture is built once.

xdist hands out the groups with the most tests first, so a group of a few long
tests (the built book and the browser, the sandbox) would start last and run alone
at the end; :data:`LONG_FIRST` names those, and they are handed out first.
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


# groups of few tests that take minutes, longest first (measured on 2 cores under load: about
# 140, 150, 105 and 70 s); every other group keeps xdist's order (most tests first)
LONG_FIRST = ("built-book", "tests/test_sandbox.py", "tests/test_grading_robustness.py", "tests/test_check_cli.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling  # only where xdist runs the tests

    class LongFirst(LoadGroupScheduling):
        def _assign_work_unit(self, node) -> None:
            queue = getattr(self, "workqueue", None)
            for group in LONG_FIRST if hasattr(queue, "move_to_end") else ():
                if group in queue:
                    queue.move_to_end(group, last=False)
                    break
            super()._assign_work_unit(node)

    return LongFirst(config, log)
