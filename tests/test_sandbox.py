"""The sandbox a submission runs in: what it sees, what it cannot reach, and hostile submissions.

The first tests run small programs in the sandbox directly; the batch grades one
hostile submission per way out (tests/grading_fixtures/hostile.py) among honest
ones, as an instructor would: ``python -m lmcourse grade`` with ``--jobs 2``.
Where bubblewrap cannot run here, the sandboxed tests are skipped (with the
reason) and the fallback tests still run.
"""

import csv
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from lmcourse.course.exercises import ROOT, SOLUTIONS_DIR
from lmcourse.course.sandbox import PROCESS_LIMIT, WORKDIR, PidsCgroup, Sandbox, runner_env

FIXTURES = Path(__file__).resolve().parent / "grading_fixtures"
sys.path.insert(0, str(FIXTURES))
import hostile  # noqa: E402

SANDBOX = Sandbox("auto", hide=(SOLUTIONS_DIR,))
_, WHY_NOT = SANDBOX.probe()
needs_bwrap = pytest.mark.skipif(WHY_NOT != "", reason=f"no sandbox here: {WHY_NOT}")


def in_sandbox(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run Python ``code`` in the sandbox as the grader would (its environment, its view)."""
    argv = SANDBOX.command([sys.executable, "-c", code], runner_env(WORKDIR, "/tmp"))
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})


@needs_bwrap
def test_the_sandbox_sees_the_package_but_not_the_repository_and_owns_nothing_else():
    probe = f"""
import json, os, pathlib, socket
import lmcourse
repo = pathlib.Path({str(ROOT)!r})
out = {{"solutions": (repo / "solutions").exists(), "repo": sorted(os.listdir(repo)),
       "package": pathlib.Path(lmcourse.__file__).exists(), "cwd": os.getcwd(), "home": os.environ["HOME"],
       "env": sorted(os.environ), "pid": os.getpid(), "uid": os.getuid(),
       "nics": [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]],
       "root_home": os.path.exists({str(Path.home())!r} + "/.bashrc")}}
writable = []
for place in (repo / "lmcourse", repo, pathlib.Path("/usr"), pathlib.Path("/")):
    try:
        (place / "probe").write_text("x")
        writable.append(str(place))
    except OSError:
        pass
out["writable"] = writable
(pathlib.Path.home() / "mine").write_text("x")
print(json.dumps(out))
"""
    result = in_sandbox(probe)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["solutions"] is False and "solutions" not in seen["repo"]
    assert set(seen["repo"]) <= {"lmcourse", ".venv"}, seen["repo"]
    # Inside, only the private /tmp takes writes. A repository that itself lives under
    # /tmp (a CI clone) shows up there as the empty mount points of the read-only
    # binds, in the private tmpfs: writable, but nothing written reaches the host.
    private = [w for w in seen["writable"] if w == "/tmp" or w.startswith("/tmp/")]
    assert seen["package"] and seen["writable"] == private, seen["writable"]
    for place in (ROOT / "lmcourse", ROOT, Path("/usr"), Path("/")):
        assert not (place / "probe").exists(), f"the sandbox wrote into {place}"
    assert seen["cwd"] == seen["home"] == WORKDIR
    assert set(seen["env"]) <= set(runner_env("", "")) | {"PWD"}, seen["env"]
    assert seen["nics"] == ["lo"], seen["nics"]
    assert seen["pid"] <= 3, "its own PID namespace"
    assert not seen["root_home"]


@needs_bwrap
def test_forks_stop_at_the_process_limit():
    code = """
import os, time
n = 0
try:
    while n < 3 * LIMIT:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError:
    pass
print(n)
""".replace("LIMIT", str(PROCESS_LIMIT))
    group = SANDBOX.cgroup()
    nproc = SANDBOX.runner_nproc(group is not None)
    if group is None and nproc is None:
        pytest.skip("no writable pids cgroup, and root is exempt from RLIMIT_NPROC")
    if nproc:  # as the runner does, inside the sandbox's user namespace
        code = f"import resource\nresource.setrlimit(resource.RLIMIT_NPROC, ({nproc}, {nproc}))\n{code}"
    env = runner_env(WORKDIR, "/tmp")
    argv = SANDBOX.command([sys.executable, "-c", code], env)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
                                preexec_fn=PidsCgroup.join(group) if group else None)
    finally:
        if group:
            PidsCgroup.remove(group)
    assert result.returncode == 0, result.stderr
    assert 0 < int(result.stdout) < PROCESS_LIMIT


def test_require_sandbox_refuses_where_bubblewrap_is_missing(tmp_path):
    env = dict(os.environ, LMCOURSE_BWRAP=str(tmp_path / "no-bwrap"))
    result = subprocess.run([sys.executable, "-m", "lmcourse", "grade", str(SOLUTIONS_DIR / "01_chain_rule.ipynb"),
                             "--require-sandbox", "--out", str(tmp_path / "g.csv")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "not installed" in result.stderr and "--require-sandbox refuses" in result.stderr
    assert not (tmp_path / "g.csv").exists()


@pytest.mark.slow  # grades two notebooks
def test_without_bubblewrap_the_grader_says_so_once_and_grades_as_before(tmp_path):
    env = dict(os.environ, LMCOURSE_BWRAP=str(tmp_path / "no-bwrap"))
    for student in ("ann", "ben"):
        (tmp_path / "subs" / student).mkdir(parents=True)
        shutil.copy(SOLUTIONS_DIR / "01_chain_rule.ipynb", tmp_path / "subs" / student)
    result = subprocess.run([sys.executable, "-m", "lmcourse", "grade", str(tmp_path / "subs"), "--jobs", "2",
                             "--out", str(tmp_path / "g.csv")], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("WITHOUT the sandbox") == 1, result.stderr
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert len(rows) == 8 and all(r["points"] == r["max_points"] for r in rows)


# -- one batch of hostile submissions among honest ones -------------------------------------

class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(str(addr))
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def processes_with(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(proc.name)
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    if WHY_NOT:
        pytest.skip(f"no sandbox here: {WHY_NOT}")
    tmp = tmp_path_factory.mktemp("hostile")
    tag = uuid.uuid4().hex[:12]
    home, subs = tmp / "home", tmp / "subs"
    home.mkdir()
    marker = f"lmcourse-hostile-{tag}"
    written = [str(home / f"HOSTILE-{tag}"), f"/tmp/HOSTILE-{tag}", str(ROOT / f"HOSTILE-{tag}"),
               str(ROOT / "lmcourse" / f"HOSTILE-{tag}")]
    escaped = str(tmp / f"escaped-{tag}")
    listener = Listener()
    sibling = subs / "zoe" / "01_chain_rule.ipynb"
    notebooks = {
        "alice/01_chain_rule.ipynb": hostile.writes_everywhere(written, str(sibling)),
        "carol/05_positions.ipynb": hostile.reads_solutions(),
        "dave/01_chain_rule.ipynb": hostile.connects(listener.port),
        "erin/01_chain_rule.ipynb": hostile.detached_child(escaped, marker),
        "frank/01_chain_rule.ipynb": hostile.fork_bomb(),
        "grace/01_chain_rule.ipynb": (nbformat.read(ROOT / "exercises" / "01_chain_rule.ipynb", as_version=4), 0),
        "zoe/01_chain_rule.ipynb": (nbformat.read(SOLUTIONS_DIR / "01_chain_rule.ipynb", as_version=4), 10),
    }
    for name, (nb, _) in notebooks.items():
        (subs / name).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, subs / name)
    before = hashlib.sha256(sibling.read_bytes()).hexdigest()
    env = dict(os.environ, HOME=str(home), LMCOURSE_SECRET_FOR_TEST="hunter2")
    cmd = [sys.executable, "-m", "lmcourse", "grade", str(subs), "--jobs", "2", "--timeout", "120",
           "--out", str(tmp / "grades.csv"), "--gradebook", str(tmp / "gradebook.csv")]
    start = time.monotonic()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp)
        seconds = time.monotonic() - start
        alive = processes_with(marker)
        time.sleep(max(0.0, 6.0 - (time.monotonic() - start)))  # past the children's delay
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr[-3000:]
    rows: dict[str, list[dict]] = {}
    for row in csv.DictReader((tmp / "grades.csv").open(encoding="utf-8")):
        rows.setdefault(row["submission"].split("/", 1)[1], []).append(row)
    try:
        yield {"rows": rows, "expected": {k: v for k, (_, v) in notebooks.items()}, "written": written,
               "escaped": escaped, "alive": alive, "accepted": list(listener.accepted), "sibling": sibling,
               "before": before, "tmp": tmp, "seconds": seconds, "stderr": result.stderr}
    finally:
        for path in written:  # in case a write got through, leave no trace in the repository
            Path(path).unlink(missing_ok=True)


def points(rows) -> float:
    return sum(float(r["points"]) for r in rows)


@pytest.mark.slow
def test_every_submission_gets_what_it_earned(batch):
    got = {name: points(rows) for name, rows in batch["rows"].items()}
    assert got == batch["expected"], {n: [(r["task"], r["status"], r["message"]) for r in batch["rows"][n]]
                                      for n in got if got[n] != batch["expected"][n]}


@pytest.mark.slow
def test_reading_the_solutions_from_disk_scores_zero(batch):
    rows = batch["rows"]["carol/05_positions.ipynb"]
    assert points(rows) == 0 and len(rows) == 3
    # refused before it runs (it imports glob and json, and uses globals); the sandbox would hide them anyway
    assert all("no solutions notebook in sight" in r["message"] or "not run" in r["message"]
               for r in rows), [r["message"] for r in rows]


@pytest.mark.slow
def test_writes_outside_the_sandbox_leave_no_file_and_change_no_grade(batch):
    assert [p for p in batch["written"] if Path(p).exists()] == []
    assert hashlib.sha256(batch["sibling"].read_bytes()).hexdigest() == batch["before"]
    assert points(batch["rows"]["zoe/01_chain_rule.ipynb"]) == 10


@pytest.mark.slow
def test_no_connection_reaches_a_listener_on_the_loopback(batch):
    assert batch["accepted"] == []


@pytest.mark.slow
def test_nothing_a_submission_starts_outlives_it(batch):
    assert batch["alive"] == []
    assert not Path(batch["escaped"]).exists() and not Path(batch["escaped"] + ".sh").exists()


@pytest.mark.slow
def test_a_fork_bomb_costs_no_one_else_anything(batch):
    assert points(batch["rows"]["frank/01_chain_rule.ipynb"]) == 10
    assert points(batch["rows"]["grace/01_chain_rule.ipynb"]) == 0
    assert points(batch["rows"]["zoe/01_chain_rule.ipynb"]) == 10


@pytest.mark.slow
def test_the_gradebook_has_a_row_per_student_and_a_column_per_chapter(batch):
    with (batch["tmp"] / "gradebook.csv").open(encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["student", "01_chain_rule", "05_positions"]
    body = {row[0]: row[1:] for row in table[1:]}
    assert body["zoe"] == ["10", ""] and body["carol"] == ["", "0"] and body["grace"] == ["0", ""]
    assert len(body) == 7
