"""The warm runner's server, inside the sandbox: warm up once, then fork a fresh child per job.

    python -m lmcourse.course.warm_server SOCKET_FD WORKDIR

Started by :class:`lmcourse.course.warm.WarmRunner` (read its module's
docstring for what keeps submissions apart). Each job arrives on the socket as a
small header (its timeout) and three file descriptors: the program's pipe (read
by the child only), the output pipe and the records pipe (written by the child
only). The server answers one line per job: the child's exit status, whether it
timed out, and whether the sandbox could be cleaned afterwards.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell  # noqa: F401 - imported once, for every child

from .grade_runner import execute, import_package, read_program

PR_SET_DUMPABLE = 4
HEADER_MAX = 4096


def _fatal(message: str) -> int:
    print(f"lmcourse warm runner: {message}", file=sys.stderr, flush=True)
    return 3


def _others() -> list[int]:
    """Every process of this PID namespace but the init (1) and this server."""
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]


def _kill_others() -> bool:
    """Kill every other process of the sandbox; whether none is left."""
    for _ in range(200):
        left = _others()
        if not left:
            return True
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _reap()
        time.sleep(0.005)
    return not _others()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _remove(path: str) -> None:
    """Delete a file or a folder tree, even folders a submission made unreadable (it owns them all)."""
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        for name in os.listdir(path):
            _remove(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


def _clean(workdir: Path) -> bool:
    """The sandbox as a fresh one: no other process, empty /tmp and /dev/shm, an empty working directory.

    Anything unexpected (a folder nested too deep to delete, say) answers
    ``False``: the server then ends and the grader starts a fresh sandbox.
    """
    try:
        if not _kill_others():
            return False
        for folder in ("/tmp", "/dev/shm"):
            if os.path.isdir(folder):
                os.chmod(folder, 0o1777)
                for name in os.listdir(folder):
                    _remove(os.path.join(folder, name))
        workdir.mkdir(mode=0o755, parents=True)
        os.chdir(workdir)
        return os.listdir("/tmp") == [workdir.name] and not os.listdir(workdir) and _kill_others()
    except Exception:  # noqa: BLE001 - see the docstring
        return False


def _child(prog_fd: int, out_fd: int, res_fd: int, sock_fd: int) -> None:
    """In the fork: read the program, keep only our three descriptors, run it; never returns."""
    code = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        token, cells, forbid = read_program(prog_fd)  # closes it
        for fd in (out_fd, sock_fd):
            os.close(fd)
        os.dup2(res_fd, 3)
        os.closerange(4, 65536)  # the server's socket and anything else inherited
        res_fd = 3
        os.setsid()
        code = execute(token, cells, forbid, res_fd)
    except BaseException:  # noqa: BLE001 - report it as the process's end, like a cold runner
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)


def _wait(pid: int, timeout: float) -> int | None:
    """The child's exit status (negative: killed by that signal), or ``None`` at the timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def serve(sock_fd: int, workdir: str) -> int:
    """The server: warm up, then one job per message on ``sock_fd`` until it closes."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return _fatal("cannot make itself non-dumpable")
    import torch._dynamo  # noqa: F401 - PyTorch's compiler front end, imported by any optimizer step
    import_package()

    sock = socket.socket(fileno=sock_fd)
    work = Path(workdir)
    if not _clean(work):
        return _fatal("the sandbox is not clean at the start")
    sock.sendall(b'{"ready": true}\n')
    while True:
        try:
            header, fds, _, _ = socket.recv_fds(sock, HEADER_MAX, 3)
        except OSError:
            return 0
        if not header:
            return 0  # the grader is done
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            return _fatal("a job came without its three descriptors")
        timeout = float(json.loads(header)["timeout"])
        prog_fd, out_fd, res_fd = fds
        pid = os.fork()
        if pid == 0:
            _child(prog_fd, out_fd, res_fd, sock.fileno())
        for fd in fds:
            os.close(fd)
        code = _wait(pid, timeout)
        if code is None:
            os.kill(pid, signal.SIGKILL)
        clean = _clean(work)
        _reap()
        reply = {"exit": code, "timeout": code is None, "clean": clean}
        try:
            sock.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            return 0
        if not clean:
            return _fatal("could not empty the sandbox after a submission; a fresh one takes over")


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), sys.argv[2]))
