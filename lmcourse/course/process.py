"""What the grader needs to run a runner process: its limits, its pipes, its signed records.

Shared by the cold path (:func:`lmcourse.course.grade.run_program`, a fresh
process per submission) and the warm one (:mod:`lmcourse.course.warm`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
from contextlib import contextmanager
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


class Pool:
    """Long-lived workers (warm runners, checks' servers) handed out one job at a time.

    A job checks one out (:meth:`checkout`), idle or made by ``make()``, and gives
    it back after; so there are as many as jobs run at once, kept between batches
    until :meth:`close`, which closes each (its ``close()``).
    """

    def __init__(self, make) -> None:
        self._make = make
        self._idle: list = []
        self._all: list = []
        self._lock = threading.Lock()

    @contextmanager
    def checkout(self):
        """A worker for one job, nobody else's while the job runs."""
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
            else:
                worker = self._make()
                self._all.append(worker)
        try:
            yield worker
        finally:
            with self._lock:
                self._idle.append(worker)

    def close(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.close()
            self._all.clear()
            self._idle.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
