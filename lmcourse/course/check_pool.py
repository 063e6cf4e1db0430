"""The grader's handles on the checks' processes (:mod:`lmcourse.course.check_runner`).

A :class:`CheckServer` is one warm process that has imported PyTorch, the
package and the libraries hidden checks compare against; each job forks it
afresh. A :class:`CheckPool` hands servers to grading threads, one job at a
time each, and keeps them for the next batch until :meth:`CheckPool.close`.
The checks' process is the course's own code: it runs outside the sandbox, and
what it gets from the learner's process is plain values (:mod:`lmcourse.course.wire`).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

from .process import Pool, drain, kill_group

STARTUP_TIMEOUT = 180.0


class CheckServerError(RuntimeError):
    """The checks' process could not start or stopped answering."""


class CheckServer:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self._log = bytearray()
        self._buffer = b""

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmcourse.course.check_runner", str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),), start_new_session=True, env=env)
        finally:
            theirs.close()
        self.sock = ours
        self._buffer = b""
        self._log = bytearray()
        threading.Thread(target=drain, args=(self.proc.stdout, self._log, 20_000), daemon=True).start()
        if self._line(time.monotonic() + STARTUP_TIMEOUT) != {"ready": True}:
            log = self._log.decode("utf-8", "replace")[-500:]
            self.close()
            raise CheckServerError(f"the checks' process did not start: {log or 'no message'}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None

    def _line(self, deadline: float) -> dict | None:
        assert self.sock is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            out = json.loads(line)
        except ValueError:
            return None
        return out if isinstance(out, dict) else None

    def run(self, program: dict, req_w: int, rep_r: int, deadline: float) -> tuple[list[dict], bool]:
        """Run one job; the records it wrote, and whether it finished (False: it was stopped at ``deadline``).

        ``req_w`` and ``rep_r`` are this process's copies of the pipes' ends; they
        are handed over and closed here.
        """
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.close()
                self._start()
            data = json.dumps(program).encode()
            socket.send_fds(self.sock, [struct.pack(">Q", len(data))], [req_w, rep_r])
            self.sock.sendall(data)
        finally:
            os.close(req_w)
            os.close(rep_r)
        records: list[dict] = []
        while True:
            line = self._line(deadline)
            if line is None:  # stopped answering, or past the deadline: a fresh server next time
                self.close()
                return records, False
            if line.get("done"):
                return records, True
            records.append(line)


class CheckPool(Pool):
    """Checks' servers for a batch (:class:`~lmcourse.course.process.Pool`): one per job running at once."""

    def __init__(self) -> None:
        super().__init__(CheckServer)
