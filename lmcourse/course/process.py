"""What the grader needs to run a runner process: its limits, its pipes, its signed records.

Shared by the cold path (:func:`lmcourse.course.grade.run_program`, a fresh
process per submission) and the warm one (:mod:`lmcourse.course.warm`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

from .sandbox import PidsCgroup

MAX_OUTPUT = 1_000_000  # bytes of a submission's printed output kept (the rest is read and dropped)
MAX_RESULTS = 4_000_000  # bytes of per-cell records read back (a submission may write to that pipe too)


def limits(memory_mb: int, cgroup: Path | None):
    join = PidsCgroup.join(cgroup) if cgroup is not None else None
    limit = memory_mb * 2**20

    def apply() -> None:  # runs in the child, before the submission (or bubblewrap) starts
        if join is not None:
            join()
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def drain(stream, keep: bytearray, limit: int) -> None:
    """Read a pipe to its end, keeping at most ``limit`` bytes."""
    while chunk := stream.read(65536):
        room = limit - len(keep)
        if room > 0:
            keep.extend(chunk[:room])


def feed(stream, data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except OSError:  # the process ended before reading its program
        pass


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def parse_records(results: bytes | bytearray, token: str, n_cells: int) -> list[dict | None]:
    """The runner's per-cell records, from the lines signed with ``token`` (the first for each cell)."""
    records: list[dict | None] = [None] * n_cells
    for line in bytes(results).decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            if rec.get("report"):
                continue
            i = int(rec["cell"])
            if rec.get("token") == token and 0 <= i < n_cells and records[i] is None:
                records[i] = rec
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return records


def parse_reports(results: bytes | bytearray, token: str) -> list[dict]:
    """The runner's reports (``"report": true``: what it found while answering the checks), in order."""
    reports = []
    for line in bytes(results).decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("token") == token and rec.get("report") is True:
                reports.append(rec)
        except ValueError:
            continue
    return reports
