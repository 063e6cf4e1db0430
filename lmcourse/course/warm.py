"""A warm runner: one sandbox that grades submissions one after another, each in a fresh fork.

Starting a runner costs about two seconds of CPU before any submitted code runs
(Python, PyTorch, IPython, the package, PyTorch's compiler front end); a cohort's
hundred notebooks, or the test suite's hundred and fifty, pay it again and again.
A :class:`WarmRunner` pays it once per worker: it starts one sandboxed *server*
(:mod:`lmcourse.course.warm_server`, in the same bubblewrap sandbox as a cold
runner) that imports all of that, then forks one child per submission, which runs
:func:`lmcourse.course.grade_runner.execute` exactly as a cold runner does.

What keeps submissions apart, though they share one sandbox:

- **One at a time.** The server forks the next child only after the previous
  one has ended and everything it left is gone: every other process in the
  sandbox's PID namespace is killed; ``/tmp`` (the working directory and
  ``$HOME`` included), ``/dev/shm`` and ``/dev/mqueue`` are emptied and what was
  added to ``/dev`` removed; the mounts, ``/dev`` and the folders on the way to
  the mounts must be as they began, no System V IPC object may be left, and the
  server's own resource limits, priority, scheduling and CPUs (which a process
  of the same user can change from outside) must be unchanged. If the server
  cannot leave the sandbox so, it ends, and the grader starts a fresh one.
- **No submission data in the server.** The grader hands each job over as file
  descriptors on a socket (``SCM_RIGHTS``): the program (its cells and the hidden
  checks) comes on a pipe that only the child reads, and the child writes its
  output and its signed records to pipes that only the grader reads. The server
  sees a small header (timeout) and sends back an exit status, so there is no
  earlier submission's code or output in its memory for a later one to find.
- **The server cannot be inspected.** It makes itself non-dumpable, so a child
  (the same user) can neither ``ptrace`` it nor open its ``/proc/PID/mem`` or
  its file descriptors; the child closes every inherited descriptor but its own
  (the records pipe and the two pipes to and from the checks' process) before
  the submission runs.
- **The server is the sandbox's PID 1** (bubblewrap's ``--as-pid-1``: no
  reaper of bubblewrap's, whose ``/proc/1/mem`` a submission could write, beside
  it), so the kernel drops every signal a child sends it that it does not handle
  (it ignores SIGINT), and it reaps the submission's orphans. Should it stop
  answering anyway, the grader's own deadline (the job's timeout plus a margin)
  kills the whole sandbox and starts a new one for the next job. The working
  directory is not on its import path.

Where bubblewrap does not run, the grader starts a cold runner per submission as
before (:func:`lmcourse.course.grade.run_program`): without a PID namespace the
server could not tell the submission's leftovers from the user's own processes.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

from .process import MAX_OUTPUT, MAX_RESULTS, Pool, drain, feed, kill_group, limits, parse_records, parse_reports
from .sandbox import WORKDIR, PidsCgroup, runner_env

GRACE = 30.0  # seconds the grader waits past a job's timeout before it gives up on the server
STARTUP_TIMEOUT = 120.0  # seconds for the server to import everything and say it is ready


class WarmUnavailable(RuntimeError):
    """The warm server could not start here; the grader falls back to a cold runner per submission."""


_SPAWN_QUEUE: queue.Queue = queue.Queue()
_SPAWN_LOCK = threading.Lock()
_SPAWNER: list[threading.Thread] = []


def _spawner() -> None:
    while True:
        make, box, event = _SPAWN_QUEUE.get()
        try:
            box.append((make(), None))
        except BaseException as err:  # noqa: BLE001 - handed back to the caller
            box.append((None, err))
        event.set()


def _spawn(make):
    """``make()`` (start a server) run by one thread that lives as long as this process.

    bubblewrap's ``--die-with-parent`` ends the sandbox when the *thread* that
    started it ends (Linux ties the parent-death signal to the thread), and a
    pool's runners outlive the grading threads of one batch.
    """
    with _SPAWN_LOCK:
        if not _SPAWNER:
            _SPAWNER.append(threading.Thread(target=_spawner, name="lmcourse-warm-spawner", daemon=True))
            _SPAWNER[0].start()
    box: list = []
    event = threading.Event()
    _SPAWN_QUEUE.put((make, box, event))
    event.wait()
    proc, err = box[0]
    if err is not None:
        raise err
    return proc


class WarmRunner:
    """The grader's handle on one warm, sandboxed server; :meth:`run` grades one program.

    Not thread-safe: one job at a time (:class:`WarmPool` hands runners out).
    """

    def __init__(self, sandbox, memory_mb: int, hide: tuple[Path, ...] = ()) -> None:
        self.sandbox, self.memory_mb, self.hide = sandbox, memory_mb, hide
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.cgroup: Path | None = None
        self.grace = GRACE  # seconds past a job's timeout before the grader gives up on the server
        self._log = bytearray()

    # the server's lifetime
    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = runner_env(WORKDIR, "/tmp")
        self.cgroup = self.sandbox.cgroup()
        nproc = self.sandbox.runner_nproc(self.cgroup is not None)
        if nproc:
            env["LMCOURSE_GRADE_NPROC"] = str(nproc)
        argv = [sys.executable, "-m", "lmcourse.course.warm_server", str(theirs.fileno()), WORKDIR]
        argv = self.sandbox.command(argv, env, self.hide, as_pid_1=True)
        try:
            self.proc = _spawn(lambda: subprocess.Popen(
                argv, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limits(self.memory_mb, self.cgroup),
                pass_fds=(theirs.fileno(),)))
        finally:
            theirs.close()
        self.sock = ours
        self._log = bytearray()
        log = threading.Thread(target=drain, args=(self.proc.stdout, self._log, 20_000), daemon=True)
        log.start()
        if self._reply(STARTUP_TIMEOUT) != {"ready": True}:
            self.close()
            log.join(timeout=5)
            problem = self._log.decode("utf-8", "replace").strip()[-300:]
            raise WarmUnavailable(f"the warm runner did not start: {problem or 'no message'}")

    def close(self) -> None:
        """End the server and everything in its sandbox."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None
        if self.cgroup is not None:
            PidsCgroup.remove(self.cgroup)
            self.cgroup = None

    def _reply(self, timeout: float) -> dict | str:
        """The server's next line as a dict, or ``"ended"`` (it closed) or ``"silent"`` (nothing in time)."""
        assert self.sock is not None
        self.sock.settimeout(timeout)
        line = bytearray()
        try:
            while not line.endswith(b"\n"):
                chunk = self.sock.recv(1)
                if not chunk:
                    return "ended"
                line += chunk
        except TimeoutError:
            return "silent"
        except OSError:
            return "ended"
        try:
            reply = json.loads(line)
        except ValueError:
            return "ended"
        return reply if isinstance(reply, dict) else "ended"

    # one job
    def run(self, cells: list[dict], timeout: float, forbid: dict[str, list[str]] | None = None,
            forbid_ops: dict[str, list[str]] | None = None, serve_fds: tuple[int, int] | None = None
            ) -> tuple[list[dict | None], list[dict], str | None]:
        """Like :func:`lmcourse.course.grade.run_learner`: per-cell records, reports and a problem.

        ``serve_fds`` (the checks' requests, read; the answers, written) are handed
        to the child and closed here.
        """
        try:
            if self.proc is None or self.proc.poll() is not None:
                self.close()
                self._start()
        except BaseException:
            for fd in serve_fds or ():
                os.close(fd)
            raise
        token = secrets.token_hex(16)
        prog_r, prog_w = os.pipe()
        out_r, out_w = os.pipe()
        res_r, res_w = os.pipe()
        if serve_fds is None:  # nothing to serve: pipes that end at once
            a, b = os.pipe()
            c, d = os.pipe()
            os.close(b)
            os.close(c)
            serve_fds = (a, d)
        output, results = bytearray(), bytearray()
        try:
            header = json.dumps({"timeout": timeout}).encode()
            try:
                socket.send_fds(self.sock, [header], [prog_r, out_w, res_w, *serve_fds])
                sent = True
            except OSError:
                sent = False
        finally:
            for fd in (prog_r, out_w, res_w, *serve_fds):
                os.close(fd)
        program = (token + "\n" + json.dumps({"cells": cells, "forbid": forbid or {},
                                               "forbid_ops": forbid_ops or {}, "cell_limit": timeout / 2})).encode()
        threads = [threading.Thread(target=drain, args=(os.fdopen(out_r, "rb"), output, MAX_OUTPUT), daemon=True),
                   threading.Thread(target=drain, args=(os.fdopen(res_r, "rb"), results, MAX_RESULTS), daemon=True),
                   threading.Thread(target=feed, args=(os.fdopen(prog_w, "wb"), program), daemon=True)]
        for t in threads:
            t.start()
        reply = self._reply(timeout + self.grace) if sent else "ended"
        if not isinstance(reply, dict) or not reply.get("clean", False):
            # the server ended, stopped or gave up: the whole sandbox goes, the next job gets a fresh one
            self.close()
        for t in threads:
            t.join(timeout=10)
        if reply == "silent" or (isinstance(reply, dict) and reply.get("timeout")):
            problem = "timeout"
        elif isinstance(reply, dict):
            problem = f"the notebook's process ended (exit code {reply.get('exit')})"
        else:
            problem = "the notebook's process ended (its runner was stopped)"
        return parse_records(results, token, len(cells)), parse_reports(results, token), problem


class WarmPool(Pool):
    """Warm runners for a batch (:class:`~lmcourse.course.process.Pool`): one per job running at once, kept
    between batches until :meth:`close`; or none at all once one failed to start (:meth:`give_up`)."""

    def __init__(self, sandbox, memory_mb: int, hide: tuple[Path, ...] = ()) -> None:
        super().__init__(lambda: WarmRunner(sandbox, memory_mb, hide))
        self.sandbox, self.memory_mb, self.hide = sandbox, memory_mb, hide
        self._given_up = False

    def usable(self) -> bool:
        """Whether submissions go to warm runners: the sandbox is active and no runner failed to start."""
        return not self._given_up and self.sandbox.active()

    def give_up(self, reason: str) -> None:
        """A runner could not start: say so once; from now on every submission gets a cold runner."""
        with self._lock:
            if not self._given_up:
                self._given_up = True
                print(f"note: {reason}; each submission gets its own fresh runner instead (slower)", file=sys.stderr)
