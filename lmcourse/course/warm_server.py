"""The warm runner's server, inside the sandbox: warm up once, then fork a fresh child per job.

    python -m lmcourse.course.warm_server SOCKET_FD WORKDIR

Started by :class:`lmcourse.course.warm.WarmRunner` (read its module's
docstring for what keeps submissions apart). Each job arrives on the socket as a
small header (its timeout) and five file descriptors: the program's pipe (read
by the child only), the output pipe and the records pipe (written by the child
only), and the two pipes to and from the checks' process
(:mod:`lmcourse.course.serve`). The server answers one line per job: the child's exit status, whether it
timed out, and whether the sandbox could be cleaned afterwards.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
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
    """Every process of this PID namespace but this server (its PID 1)."""
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]


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


SCRATCH = ("/tmp", "/dev/shm")  # what a submission can write: emptied between submissions


def _mounts() -> list[str]:
    """The sandbox's mount points (read-only binds of Python and the package may lie under /tmp)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    # mountinfo escapes blanks and backslashes in octal (\040)
    return [p.encode("latin-1").decode("unicode_escape") if "\\" in p else p for p in points]


def _dev_entries() -> dict[str, tuple]:
    """/dev's entries as the sandbox made them: type, mode, device number, link target."""
    out = {}
    for name in sorted(os.listdir("/dev")):
        path = os.path.join("/dev", name)
        st = os.lstat(path)
        out[name] = (st.st_mode, st.st_rdev, os.readlink(path) if os.path.islink(path) else None)
    return out


def _ipc_objects() -> list[str]:
    """System V shared memory, semaphores and message queues left in the sandbox's IPC namespace."""
    left = []
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}", encoding="utf-8") as f:
                left += [f"{kind}: {line.strip()}" for line in f.readlines()[1:] if line.strip()]
        except OSError:
            continue
    return left


def _own_settings() -> tuple:
    """What another process of the same user can change about this server from outside:
    its resource limits (``prlimit``), its priority, scheduling policy and CPUs."""
    limits = tuple(resource.getrlimit(getattr(resource, name)) for name in sorted(dir(resource))
                   if name.startswith("RLIMIT_"))
    return (limits, os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0),
            tuple(sorted(os.sched_getaffinity(0))))


class Baseline:
    """The scratch folders as the sandbox made them: the folders that lead to a mount point, with
    their modes, and the mount points themselves (never entered, never touched)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.mounts = _mounts()
        for folder in SCRATCH:  # writable by all, as restore() leaves them
            if os.path.isdir(folder):
                os.chmod(folder, 0o1777)
        self.dev = _dev_entries()
        self.own = _own_settings()
        inside = [m for m in self.mounts if any(m.startswith(f"{s}/") for s in SCRATCH)]
        self.keep: dict[str, int] = {}  # folder -> mode, on the way to a mount point
        for m in inside:
            parent = os.path.dirname(m)
            while parent not in SCRATCH and parent not in self.keep:
                self.keep[parent] = os.stat(parent).st_mode & 0o7777
                parent = os.path.dirname(parent)
        self.points = set(inside)

    def _scrub(self, folder: str) -> None:
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if path in self.points:
                continue
            if path in self.keep and os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                self._scrub(path)
                os.chmod(path, self.keep[path])
            else:
                _remove(path)

    def _listing(self, folder: str) -> list[str]:
        """Every path under ``folder``, not entering mount points."""
        out = []
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            out.append(path)
            if path not in self.points and os.path.isdir(path) and not os.path.islink(path):
                out += self._listing(path)
        return out

    def restore(self) -> bool:
        """Kill every other process, empty the scratch folders but what leads to a mount point, make a
        fresh working directory; whether the sandbox is now as it began (same mounts, same folders).

        Anything unexpected (a folder nested too deep to delete, a folder renamed away from a mount
        point) answers ``False``: the server then ends and the grader starts a fresh sandbox.
        """
        try:
            if not _kill_others():
                return False
            for folder in SCRATCH:
                if os.path.isdir(folder):
                    os.chmod(folder, 0o1777)
                    self._scrub(folder)
            self.workdir.mkdir(mode=0o755)
            os.chdir(self.workdir)
            for name in set(os.listdir("/dev")) - set(self.dev):  # what a submission added to /dev
                _remove(os.path.join("/dev", name))
            if os.path.isdir("/dev/mqueue"):  # POSIX message queues
                for name in os.listdir("/dev/mqueue"):
                    os.unlink(os.path.join("/dev/mqueue", name))
            expected = sorted([*self.keep, *self.points, str(self.workdir)])
            found = sorted(p for s in SCRATCH if os.path.isdir(s) for p in self._listing(s))
            return (_mounts() == self.mounts and found == expected and _dev_entries() == self.dev
                    and not _ipc_objects() and _own_settings() == self.own and _kill_others())
        except Exception:  # noqa: BLE001 - see the docstring
            return False


def _child(prog_fd: int, out_fd: int, res_fd: int, req_fd: int, rep_fd: int, sock_fd: int) -> None:
    """In the fork: read the program, keep only our descriptors, run it; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a cold runner
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        program = read_program(prog_fd)  # closes it
        for fd in (out_fd, sock_fd):
            os.close(fd)
        # the records pipe, then the checks' requests and our answers, as 3, 4, 5
        moved = [os.dup(fd) for fd in (res_fd, req_fd, rep_fd)]
        for target, fd in zip((3, 4, 5), moved, strict=True):
            os.dup2(fd, target)
        os.closerange(6, 65536)  # the server's socket and anything else inherited
        os.setsid()
        code = execute(program, 3, (4, 5))
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
        # as PID 1 the server also reaps the submission's orphans as they end (bubblewrap's init would)
        done, status = os.waitpid(-1, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        if done:
            continue
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
    # ``python -m`` put the working directory first on the path: a file a submission leaves there
    # must not be what a later one imports (the cold runner's path has it too, for one submission)
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd(), workdir)]
    # As the sandbox's PID 1 the kernel drops signals the server does not handle; Python handles
    # SIGINT (KeyboardInterrupt), so a child could still stop the server with it: ignore it here
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    sock = socket.socket(fileno=sock_fd)
    work = Path(workdir)
    baseline = Baseline(work)
    if not baseline.restore():
        return _fatal("the sandbox is not clean at the start")
    sock.sendall(b'{"ready": true}\n')
    while True:
        try:
            header, fds, _, _ = socket.recv_fds(sock, HEADER_MAX, 5)
        except OSError:
            return 0
        if not header:
            return 0  # the grader is done
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            return _fatal("a job came without its five descriptors")
        timeout = float(json.loads(header)["timeout"])
        pid = os.fork()
        if pid == 0:
            _child(*fds, sock.fileno())
        for fd in fds:
            os.close(fd)
        code = _wait(pid, timeout)
        if code is None:
            os.kill(pid, signal.SIGKILL)
        clean = baseline.restore()  # kills and reaps whatever the child left
        reply = {"exit": code, "timeout": code is None, "clean": clean}
        try:
            sock.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            return 0
        if not clean:
            return _fatal("could not empty the sandbox after a submission; a fresh one takes over")


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]), sys.argv[2]))
