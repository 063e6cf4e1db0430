"""The warm runner (lmcourse/course/warm.py): submissions share a sandbox one after another, never their traces.

Each test sends small programs (plain code cells) to one WarmRunner, as the
grader does for a batch, and reads the per-cell records: a cell that finds what
it must not raises, and its record says so. A cell reports a value by raising
``ValueError(value)`` on purpose (its message comes back in the record).
"""

import secrets
import sys
from pathlib import Path

import pytest

from lmcourse.course.exercises import SOLUTIONS_DIR
from lmcourse.course.grade import grade_notebook, grade_notebooks
from lmcourse.course.sandbox import Sandbox
from lmcourse.course.warm import WarmPool, WarmRunner

SANDBOX = Sandbox("auto", hide=(SOLUTIONS_DIR,))
_, WHY_NOT = SANDBOX.probe()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(WHY_NOT != "", reason=f"no sandbox here: {WHY_NOT}")]


def program(*sources: str) -> list[dict]:
    return [{"source": s, "role": "code", "task": None, "check": None, "trusted": False} for s in sources]


def run(runner, cells, timeout):
    """A warm runner's records and problem (its reports, what it found answering checks, left out)."""
    records, _, problem = runner.run(cells, timeout)
    return records, problem


def said(record: dict | None) -> str:
    """What a reporting cell said (its ValueError's message)."""
    assert record is not None and record["etype"] == "ValueError", record
    return record["message"]


def ok(records: list[dict | None]) -> None:
    bad = [(i, r and (r["etype"], r["message"])) for i, r in enumerate(records) if r is None or r["status"] != "ok"]
    assert not bad, bad


@pytest.fixture
def runner():
    r = WarmRunner(SANDBOX, memory_mb=4096)
    yield r
    r.close()


# the server's identity: its PID (2 in every sandbox) and its start time
SERVER = "import os\nraise ValueError(open(f'/proc/{os.getppid()}/stat').read().split()[21])"

LITTER = r"""
import os, subprocess, sys
os.makedirs("/tmp/work/sub/locked", exist_ok=True)
open("/tmp/work/answer.txt", "w").write("copied")
open("/tmp/left.txt", "w").write("x")
open("/dev/shm/left", "w").write("x")
os.chmod("/tmp/work/sub/locked", 0)
os.chmod("/tmp/work/sub", 0o500)
import lmcourse
beside = os.path.dirname(os.path.dirname(lmcourse.__file__))  # the folder that holds the package
if beside.startswith("/tmp/"):  # bubblewrap made the folders on the way to it, in the sandbox's /tmp
    open(os.path.join(beside, "litter.txt"), "w").write("x")
# a process that outlives the submission: its own session, double-forked
subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork(): os._exit(0)\ntime.sleep(120)"],
                 start_new_session=True)
"""

FIND_LITTER = r"""
import os
import lmcourse
beside = os.path.join(os.path.dirname(os.path.dirname(lmcourse.__file__)), "litter.txt")
left = [p for p in ("/tmp/work/answer.txt", "/tmp/left.txt", "/dev/shm/left", "/tmp/work/sub", beside)
        if os.path.exists(p)]
others = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
others = [p for p in others if p not in (1, os.getpid(), os.getppid())]
assert not left and not others, (left, others)
# IPython's own profile folder is made afresh by every runner, cold or warm
assert os.getcwd() == "/tmp/work" and os.listdir(".") == [".ipython"], (os.getcwd(), os.listdir("."))
"""


# /tmp as the sandbox made it (it also holds the folders that lead to the package, where that lies under /tmp)
TMP = "import glob\nraise ValueError(repr(sorted(glob.glob('/tmp/*') + glob.glob('/tmp/*/*'))))"


def test_the_next_submission_finds_nothing_the_last_one_left(runner):
    first = run(runner, program(SERVER, TMP, LITTER, "import time\ntime.sleep(0.5)"), timeout=60)
    second = run(runner, program(SERVER, TMP, FIND_LITTER), timeout=60)
    assert said(first[0][0]) == said(second[0][0]), "both ran as children of one warm server"
    assert said(first[0][1]) == said(second[0][1])
    ok(first[0][2:])
    ok(second[0][2:])
    assert first[1] == second[1] == "the notebook's process ended (exit code 0)"


INSPECT_SERVER = r"""
import ctypes, os
server = os.getppid()
reached = []
paths = [f"/proc/{server}/{name}" for name in ("mem", "environ", "cwd", "root", "maps")]
for path in paths + [f"/proc/{server}/fd/{fd}" for fd in os.listdir(f"/proc/{server}/fd")]:
    try:
        open(path, "rb").close()
        reached.append(path)
    except OSError:
        pass
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, server, 0, 0) == 0:  # PTRACE_ATTACH
    reached.append("ptrace")
assert not reached, reached
"""


MOVE_THE_PACKAGE = r"""
import os, lmcourse
top = os.path.dirname(os.path.dirname(lmcourse.__file__))
while os.path.dirname(top) != "/tmp" and top != "/":
    top = os.path.dirname(top)
if top.startswith("/tmp/"):  # the package lies under /tmp: move the folder that leads to it
    os.rename(top, top + "-moved")
    raise ValueError("moved")
"""


def test_a_submission_that_moves_the_package_away_gets_the_next_one_a_fresh_sandbox(runner):
    first, _ = run(runner, program(SERVER, MOVE_THE_PACKAGE), timeout=60)
    second, problem = run(runner, program(SERVER, "from lmcourse.data import load_shakespeare\n"
                                                 "assert load_shakespeare('val')[:1]"), timeout=60)
    ok(second[1:])
    if first[1]["status"] == "error":  # it could move it (a clone under /tmp): the next one runs elsewhere
        assert said(first[1]) == "moved" and said(first[0]) != said(second[0])


def test_a_submission_cannot_inspect_the_server(runner):
    records, problem = run(runner, program(INSPECT_SERVER), timeout=60)
    ok(records)
    assert problem.endswith("(exit code 0)")


def test_no_earlier_submission_is_in_the_next_ones_memory(runner):
    secret = secrets.token_hex(12)
    first = run(runner, program(f"answer = {secret!r}\nprint(answer)", SERVER), timeout=60)
    assert first[0][0]["status"] == "ok"
    # the second program searches its whole writable memory (inherited from the server) for the secret,
    # spelled backwards in its own source so that it does not find itself
    search = f"""
import re
needle = {secret[::-1]!r}[::-1].encode()
found = 0
with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw", line)
        if not m:
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16)
        if end - start > 1 << 30:
            continue
        try:
            mem.seek(start)
            chunk = mem.read(end - start)
        except (OSError, OverflowError, ValueError):
            continue
        found += chunk.count(needle)
del chunk
# the search's own needle is in memory once or twice (the bytes object, maybe a copy)
assert found <= 2, found
"""
    second = run(runner, program(SERVER, search), timeout=120)
    assert said(first[0][1]) == said(second[0][0]), "one server ran both"
    ok(second[0][1:])


def test_the_server_is_pid_1_and_ignores_a_submissions_signals(runner):
    signals = "import os, signal\nassert os.getppid() == 1\n" + "\n".join(
        f"os.kill(1, signal.{name})" for name in ("SIGKILL", "SIGSTOP", "SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1"))
    records, problem = run(runner, program(SERVER, signals, "import time\ntime.sleep(0.2)"), timeout=60)
    ok(records[1:])
    assert problem.endswith("(exit code 0)")
    again, problem = run(runner, program(SERVER, "x = 1"), timeout=60)
    assert said(again[0]) == said(records[0]), "the same server went on"
    ok(again[1:])


# What a process of the same user can change about the server from outside, or leave in the
# sandbox's kernel objects; each must cost the next submission nothing: the server removes what it
# can (a file in /dev) and otherwise ends, so that a fresh sandbox grades the next one.
TAMPER = {
    "open files": "import os, resource\nresource.prlimit(1, resource.RLIMIT_NOFILE, (12, 12))",
    "priority": "import os\nos.setpriority(os.PRIO_PROCESS, 1, 19)",
    "shared memory": "import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget(1234, 1 << 20, 0o1666) >= 0",
    "a file in /dev": "open('/dev/left', 'w').write('x')",
}
FRESH = r"""
import os
assert os.getpriority(os.PRIO_PROCESS, 0) == 0
assert not [l for l in open("/proc/sysvipc/shm").readlines()[1:] if l.strip()]
assert not os.path.exists("/dev/left")
"""


@pytest.mark.parametrize("how", sorted(TAMPER))
def test_tampering_with_the_server_costs_the_next_submission_nothing(runner, how):
    first, _ = run(runner, program(SERVER, TAMPER[how]), timeout=60)
    second, problem = run(runner, program(SERVER, FRESH, "x = 1"), timeout=60)
    ok(second[1:])
    assert problem.endswith("(exit code 0)")
    if first[1]["status"] == "ok" and how != "a file in /dev":  # the change took: a fresh sandbox
        assert said(first[0]) != said(second[0]), how


def test_a_timeout_ends_the_submission_and_the_server_goes_on(runner):
    # a loop that swallows the stop at half the time limit (a cell's own limit): the whole job times out
    endless = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    records, problem = run(runner, program(SERVER, endless), timeout=3)
    assert problem == "timeout" and records[1] is None
    again, problem = run(runner, program(SERVER), timeout=60)
    assert said(again[0]) == said(records[0]), "the same server graded the next one"


def test_a_batch_on_warm_runners_grades_as_cold_runners_do(tmp_path):
    solution = SOLUTIONS_DIR / "01_chain_rule.ipynb"
    exercise = Path(__file__).resolve().parent.parent / "exercises" / "01_chain_rule.ipynb"
    items = [(solution, "s"), (exercise, "e"), (solution, "s2")]
    warm = grade_notebooks(items, jobs=1, sandbox=SANDBOX)
    cold = [grade_notebook(p, name=n, sandbox=SANDBOX) for p, n in items]
    as_text = [[(r.task, r.points, r.status, r.message) for r in rows] for rows in warm]
    assert as_text == [[(r.task, r.points, r.status, r.message) for r in rows] for rows in cold]
    assert [sum(r.points for r in rows) for rows in warm] == [10, 0, 10]


def test_without_a_sandbox_the_pool_is_not_used(capsys):
    pool = WarmPool(Sandbox("off"), 4096)
    assert not pool.usable()
    assert sys.modules.get("lmcourse.course.warm") is not None


def test_cold_on_the_command_line_grades_the_same(tmp_path):
    import csv
    import subprocess
    solution = SOLUTIONS_DIR / "01_chain_rule.ipynb"
    rows = {}
    for how in ("warm", "cold"):
        out = tmp_path / f"{how}.csv"
        cmd = [sys.executable, "-m", "lmcourse", "grade", str(solution), "--out", str(out)] + \
            (["--cold"] if how == "cold" else [])
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        rows[how] = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows["warm"] == rows["cold"] and sum(float(r["points"]) for r in rows["cold"]) == 10
