"""The sandbox a submission runs in: bubblewrap (``bwrap``) and a process limit.

:func:`lmcourse.course.grade.run_program` starts each submission's process
through :class:`Sandbox`. Under bubblewrap the process sees

* a **read-only view** of the system (``/usr`` and the few files of ``/etc`` that
  programs read), of the Python environment and of the ``lmcourse`` package, and
  nothing else of the machine: not ``solutions/``, not the submissions, not the
  instructor's home, not the repository around the package;
* a **private writable** ``/tmp`` (a size-capped tmpfs, gone when the process
  ends) holding its working directory, which is also its ``$HOME``;
* its **own network namespace** (loopback only, nothing listening), its own PID,
  IPC and UTS namespaces (nothing it starts outlives it: when the runner ends,
  the kernel ends every process of the namespace), no capabilities, user 65534
  where user namespaces allow it, and a **minimal environment** (no variable of
  the grader's is passed on but those listed in :func:`runner_env`).

A **process limit** (:data:`PROCESS_LIMIT` tasks, threads included) holds with or
without bubblewrap where a pids cgroup is writable (cgroup v2 or v1; the usual
case when grading as root); otherwise, for a grader that is not root and runs
bubblewrap, ``RLIMIT_NPROC`` counted inside the sandbox's own user namespace.

Where bubblewrap cannot run (not installed, or no user namespaces), mode
``auto`` says so once on standard error and runs submissions without it, as the
grader did before; mode ``require`` (``--require-sandbox``) raises
:class:`SandboxUnavailable` instead. ``LMCOURSE_BWRAP`` names the bwrap program
to use (tests point it at a missing one to exercise the fallback).
"""

from __future__ import annotations

import os
import secrets
import shutil
import site
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROCESS_LIMIT = 256  # tasks (processes and threads) a submission may have at once
TMP_SIZE_MB = 512  # the private /tmp (tmpfs, held in memory)
SANDBOX_UID = 65534  # "nobody", where a user namespace maps it
WORKDIR = "/tmp/work"  # the submission's working directory and $HOME inside the sandbox
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# what programs read from /etc (not ssl/, whose private keys a root grader could otherwise expose)
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group",
              "hosts", "fonts", "alternatives", "mime.types", "matplotlibrc")


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here, and the sandbox was required."""


def package_dir() -> Path:
    """The ``lmcourse`` package folder (the only part of the repository a submission sees)."""
    return Path(__file__).resolve().parents[1]


def python_dirs() -> list[Path]:
    """The folders of the Python installation and environment that runs the grader."""
    found = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    found.add(Path(os.path.realpath(sys.executable)).parent.parent)
    found.update(Path(p) for p in site.getsitepackages())
    dirs = sorted({p.resolve() for p in found if p.is_dir()}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for d in dirs:
        if any(d == k or k in d.parents for k in kept) or _under_system(d):
            continue
        kept.append(d)
    return kept


def _under_system(path: Path) -> bool:
    return any(path == Path(s) or Path(s) in path.parents for s in _SYSTEM_DIRS if Path(s).is_dir())


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def runner_env(home: str, tmpdir: str) -> dict[str, str]:
    """The whole environment a submission gets: nothing else of the grader's leaks in."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": home,
        "TMPDIR": tmpdir,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "LMCOURSE_DEVICE": os.environ.get("LMCOURSE_DEVICE", "cpu"),
        "PYTHONPATH": str(package_dir().parent),  # the folder that holds lmcourse/
    }
    return env


class PidsCgroup:
    """A pids cgroup per submission under the grader's own (v2 or v1), where one is writable.

    :meth:`create` makes one with ``pids.max`` set; the submission's process joins it
    before it starts (:meth:`join`, in the child); :meth:`remove` kills whatever is
    left in it and deletes it.
    """

    def __init__(self) -> None:
        self.base = self._find_base()

    @staticmethod
    def _find_base() -> Path | None:
        """The folder of the grader's own pids cgroup, under which submissions get theirs."""
        try:
            own = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
            mounts = [line.split(" - ", 1) for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        except OSError:
            return None
        for before, after in (m for m in mounts if len(m) == 2):
            fields, (fstype, _, options) = before.split(), after.split(" ", 2)
            root, point = fields[3], Path(fields[4])
            if fstype == "cgroup" and "pids" in options.split(","):
                wanted = [p for h, c, p in own if "pids" in c.split(",")]
            elif fstype == "cgroup2" and "pids" in _read(point / "cgroup.controllers").split():
                wanted = [p for h, c, p in own if h == "0"]
            else:
                continue
            if wanted and (wanted[0] + "/").startswith(root.rstrip("/") + "/"):
                base = point / wanted[0][len(root.rstrip("/")):].lstrip("/")
                if base.is_dir():
                    return base
        return None

    def create(self, limit: int) -> Path | None:
        """A new cgroup limited to ``limit`` tasks, or ``None`` where that is not possible."""
        if self.base is None:
            return None
        group = self.base / f"lmcourse-grade-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            group.mkdir()
        except OSError:
            return None
        try:
            (group / "pids.max").write_text(str(limit))
            return group
        except OSError:
            self.remove(group)
            return None

    @staticmethod
    def join(group: Path):
        """A function for ``preexec_fn``: moves the new process into ``group``."""
        procs = str(group / "cgroup.procs")

        def apply() -> None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        return apply

    @staticmethod
    def remove(group: Path) -> None:
        """Kill every process left in ``group`` and delete it."""
        for _ in range(50):
            try:
                kill = group / "cgroup.kill"
                if kill.exists():
                    kill.write_text("1")
                else:
                    for pid in (group / "cgroup.procs").read_text().split():
                        try:
                            os.kill(int(pid), 9)
                        except (ProcessLookupError, PermissionError):
                            pass
                group.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)


@dataclass
class Sandbox:
    """How submissions run: ``auto`` (bubblewrap where it works), ``require`` or ``off``.

    ``hide`` lists paths that must stay invisible even where they lie inside a
    folder the sandbox shows (``solutions/``, the submissions); they are covered
    by an empty folder (or file).
    """

    mode: str = "auto"
    hide: tuple[Path, ...] = ()
    bwrap: str | None = None
    tmp_size_mb: int = TMP_SIZE_MB
    process_limit: int = PROCESS_LIMIT
    _probe: tuple[list[str], str] | None = field(default=None, init=False, repr=False)
    _noted: bool = field(default=False, init=False, repr=False)
    _noted_procs: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _cgroups: PidsCgroup | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "require", "off"):
            raise ValueError(f"sandbox mode must be auto, require or off, not {self.mode!r}")
        if self.bwrap is None:
            self.bwrap = os.environ.get("LMCOURSE_BWRAP") or shutil.which("bwrap") or "bwrap"

    # -- can bubblewrap run? ------------------------------------------------------------
    def probe(self) -> tuple[list[str], str]:
        """The namespace options that work here (``[]`` and a reason when none do); run once."""
        with self._lock:
            if self._probe is None:
                self._probe = self._run_probe()
            return self._probe

    def _run_probe(self) -> tuple[list[str], str]:
        reason = f"bubblewrap ({self.bwrap}) is not installed"
        if not (shutil.which(self.bwrap) or Path(self.bwrap).is_file()):
            return [], reason
        userns = ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        for options in (userns + ["--size"], ["--size"], userns, []):
            try:
                result = subprocess.run(self._command(["true"], {}, options), capture_output=True, text=True,
                                        timeout=30, env={"PATH": "/usr/bin:/bin"})
            except (OSError, subprocess.SubprocessError) as err:
                return [], f"bubblewrap cannot start: {err}"
            if result.returncode == 0:
                return options, ""
            reason = "bubblewrap cannot run here: " + (result.stderr.strip().splitlines() or ["?"])[-1]
        return [], reason

    def active(self) -> bool:
        """Whether submissions run in bubblewrap; says once why not (``auto``), or raises (``require``)."""
        if self.mode == "off":
            return False
        options, reason = self.probe()
        if reason == "":
            return True
        if self.mode == "require":
            raise SandboxUnavailable(f"{reason}; --require-sandbox refuses to grade without it")
        with self._lock:
            if not self._noted:
                self._noted = True
                print(f"note: {reason}: submissions run WITHOUT the sandbox, with your user's rights "
                      f"(they can read solutions/ and write your files; see README, 'Instructors: grading'); "
                      f"--require-sandbox refuses instead", file=sys.stderr)
        return False

    # -- the process limit --------------------------------------------------------------
    def cgroup(self) -> Path | None:
        """A fresh pids cgroup for one submission, or ``None`` (then says once if nothing limits processes)."""
        if self.process_limit <= 0:
            return None
        with self._lock:
            if self._cgroups is None:
                self._cgroups = PidsCgroup()
        group = self._cgroups.create(self.process_limit)
        if group is None and self.mode != "off" and self.runner_nproc(False) is None:
            with self._lock:
                if not self._noted_procs:
                    self._noted_procs = True
                    print("note: no pids cgroup is writable here (and root is exempt from RLIMIT_NPROC): the number "
                          "of processes a submission starts is not limited", file=sys.stderr)
        return group

    def runner_nproc(self, have_cgroup: bool) -> int | None:
        """The RLIMIT_NPROC the runner sets on itself, inside the sandbox's user namespace, or ``None``.

        Only where no cgroup limits the submission and the grader is not root
        (root is exempt from RLIMIT_NPROC) and a user namespace counts the
        sandbox's processes on their own.
        """
        options, _ = self.probe()
        if have_cgroup or os.getuid() == 0 or "--unshare-user" not in options:
            return None
        return self.process_limit

    # -- the command ------------------------------------------------------------------
    def command(self, argv: list[str], env: dict[str, str], hide: tuple[Path, ...] = (),
                as_pid_1: bool = False) -> list[str]:
        """``argv`` wrapped in bubblewrap with environment ``env`` (call :meth:`active` first).

        ``as_pid_1``: ``argv`` is the sandbox's PID 1 itself (no reaper process of
        bubblewrap's in the sandbox), so it must reap orphans; the kernel then
        ignores any signal a process of the sandbox sends it that it does not handle.
        """
        options, _ = self.probe()
        return self._command(argv, env, options, hide, as_pid_1)

    def _command(self, argv: list[str], env: dict[str, str], options: list[str],
                 hide: tuple[Path, ...] = (), as_pid_1: bool = False) -> list[str]:
        cmd = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        cmd += ["--as-pid-1"] if as_pid_1 else []
        cmd += [o for o in options if o != "--size"]
        # The private /tmp first: folders bound below may lie under the grader's /tmp.
        if "--size" in options:
            cmd += ["--size", str(self.tmp_size_mb * 2**20)]
        cmd += ["--tmpfs", "/tmp"]
        binds: list[Path] = []
        for d in _SYSTEM_DIRS:
            p = Path(d)
            if p.is_symlink():
                cmd += ["--symlink", os.readlink(p), d]
            elif p.is_dir():
                cmd += ["--ro-bind", d, d]
                binds.append(p)
        for name in _ETC_FILES:
            cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for d in python_dirs() + [package_dir()]:
            if not any(_inside(d, b) for b in binds):
                cmd += ["--ro-bind", str(d), str(d)]
                binds.append(d)
        for h in (*self.hide, *hide):
            h = Path(h).resolve()
            if any(_inside(h, b) for b in binds) and h.exists():
                cmd += ["--tmpfs", str(h), "--remount-ro", str(h)] if h.is_dir() else ["--ro-bind", "/dev/null", str(h)]
        if env.get("LMCOURSE_DEVICE", "cpu").startswith("cuda"):
            for dev in sorted(Path("/dev").glob("nvidia*")):
                cmd += ["--dev-bind", str(dev), str(dev)]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--dir", WORKDIR, "--remount-ro", "/", "--chdir", WORKDIR,
                "--clearenv"]
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        return cmd + ["--", *argv]
