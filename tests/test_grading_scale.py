"""Grading at the size of a cohort: 100 submissions of chapter 1 with ``--jobs 2``.

Measures the wall time and the peak memory of the whole batch (the PSS of the
grader and every process it starts, summed, sampled every 0.2 s) and the
largest single process (its peak resident size),
and checks that the one hostile submission among them (it writes into the last
student's notebook, forks until the process limit and holds, and starts a
detached child) changes nobody else's grade. Minutes long: skipped unless
``LMCOURSE_SCALE_TEST=1`` (``make grading-scale``); the numbers are printed and,
with ``LMCOURSE_SCALE_OUT=FILE``, written as JSON.
"""

import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from lmcourse.course.exercises import EXERCISES_DIR, ROOT, SOLUTIONS_DIR

FIXTURES = Path(__file__).resolve().parent / "grading_fixtures"
sys.path.insert(0, str(FIXTURES))
import hostile  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.scale,
              pytest.mark.skipif(os.environ.get("LMCOURSE_SCALE_TEST") != "1",
                                 reason="minutes long: LMCOURSE_SCALE_TEST=1 (make grading-scale) runs it")]

N = 100


def partial(nb):
    """Chapter 1's solution with perplexity wrong (8 of 10 points)."""
    for cell in nb.cells:
        if "def perplexity_from_logits" in cell.source:
            cell.source = cell.source.replace("math.exp(-picked.mean().item())", "-picked.mean().item()")
    return nb


def tree_memory(root: int) -> int:
    """The memory (bytes) of a process and all its descendants now: the sum of their PSS.

    PSS (proportional set size) splits each shared page among the processes that
    share it; summing resident sizes instead would count a forked child's pages
    once per child.
    """
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(proc.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total


def test_grading_100_submissions_with_two_jobs(tmp_path):
    subs = tmp_path / "subs"
    expected: dict[str, float] = {}
    last = subs / f"s{N - 1:03d}" / "01_chain_rule.ipynb"
    tag = uuid.uuid4().hex[:12]
    written = [f"/tmp/HOSTILE-{tag}", str(ROOT / f"HOSTILE-{tag}")]
    for i in range(N):
        name = f"s{i:03d}/01_chain_rule.ipynb"
        if i == 1:  # the hostile one, early in the batch
            nb, points = hostile.writes_everywhere(written, str(last))
            for extra in (hostile.fork_bomb(cap=1000, hold=5.0)[0], hostile.detached_child(
                    str(tmp_path / "escaped"), f"lmcourse-scale-{tag}")[0]):
                nb.cells.append(extra.cells[-1])
        elif i % 3 == 0:
            nb, points = nbformat.read(SOLUTIONS_DIR / "01_chain_rule.ipynb", as_version=4), 10
        elif i % 3 == 1:
            nb, points = nbformat.read(EXERCISES_DIR / "01_chain_rule.ipynb", as_version=4), 0
        else:
            nb, points = partial(nbformat.read(SOLUTIONS_DIR / "01_chain_rule.ipynb", as_version=4)), 8
        (subs / name).parent.mkdir(parents=True)
        nbformat.write(nb, subs / name)
        expected[name] = points
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    cmd = [sys.executable, "-m", "lmcourse", "grade", str(subs), "--jobs", "2", "--out", str(tmp_path / "g.csv"),
           "--gradebook", str(tmp_path / "gradebook.csv")]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_memory(proc.pid))
            time.sleep(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate(timeout=7200)
    seconds = time.monotonic() - start
    done.set()
    sampler.join()
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    try:
        assert proc.returncode == 0, stderr[-3000:]
        got: dict[str, float] = {}
        for row in csv.DictReader((tmp_path / "g.csv").open(encoding="utf-8")):
            key = row["submission"].split("/", 1)[1]
            got[key] = got.get(key, 0.0) + float(row["points"])
        assert got == expected, {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
        assert hashlib.sha256(last.read_bytes()).hexdigest() == before
        assert not any(Path(p).exists() for p in written)
        assert len((tmp_path / "gradebook.csv").read_text().splitlines()) == N + 1
    finally:
        for p in written:
            Path(p).unlink(missing_ok=True)
    report = {"submissions": N, "jobs": 2, "wall_s": round(seconds, 1), "per_submission_s": round(seconds / N, 2),
              "peak_memory_mb": round(peak[0] / 2**20), "largest_process_rss_mb": round(largest / 2**20),
              "sandbox": "WITHOUT the sandbox" not in stderr}
    print("\n" + json.dumps(report))
    if os.environ.get("LMCOURSE_SCALE_OUT"):
        Path(os.environ["LMCOURSE_SCALE_OUT"]).write_text(json.dumps(report, indent=1) + "\n")
