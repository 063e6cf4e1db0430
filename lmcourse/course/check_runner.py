"""The checks' process: runs a chapter's checks against a learner's answers in another process (issue 27).

    python -m lmcourse.course.check_runner SOCKET_FD

The grader (:mod:`lmcourse.course.grade`) starts one such server per grading
thread; it imports PyTorch, the package and the libraries the hidden checks
compare against once, then forks a child per submission. The child runs the
chapter's setup cells and check cells, as the course wrote them, in a namespace
of its own, where each name a task's answer defines (``rope_half``,
``MyCharTokenizer``) is bound to the learner's value as sent over the wire
(:mod:`lmcourse.course.wire`): a plain value, or a :class:`Remote` proxy that
forwards calls to the learner's process (:mod:`lmcourse.course.serve`). So:

- nothing the learner's code does can reach a check, its expected values or
  this process's modules: the learner's process receives inputs and sends back
  values, and the decoder here builds only plain values;
- hidden checks run with inputs drawn from a secret seed per grading run: before
  a check's hidden part, every generator in the namespace and PyTorch's global
  one are reseeded from it, and ``torch.manual_seed``, ``torch.Generator`` and
  ``random.seed`` mix it into the seeds the hidden code sets. Visible checks keep
  their fixed inputs, so a learner's self-check sees what the grader sees.

A job arrives as a length and two file descriptors (requests to the learner's
process, its answers) on the socket, then the program as JSON; the child writes
one JSON line per check (and per failing setup cell) back on the socket, and the
server ends the job with ``{"done": ...}``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import random
import signal
import socket
import struct
import sys
import types

import torch

from . import drivers
from .grade_runner import import_package, split_check
from .serve import _exception
from .wire import Decoder, WireError, dumps_request, receive, send

CHECKS_MODULE = "__lmcourse_checks__"
_LENGTH = struct.Struct(">Q")


class LearnerGone(RuntimeError):
    """The learner's process ended (it crashed, was killed at the time limit, or closed its pipes)."""


class Remote:
    """A learner's object that stays in the learner's process: attribute access, calls, indexing,
    ``len``, iteration, ``repr`` and truth go there as requests."""

    __slots__ = ("_channel", "_ref", "_type")

    def __init__(self, channel: Channel, ref: int, type_name: str) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_type", type_name)

    def _ask(self, op: str, **fields):
        return self._channel.ask({"op": op, "ref": self._ref, **fields})

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value) -> None:
        self._ask("setattr", name=name, value=value)

    def __call__(self, *args, **kwargs):
        return self._ask("call", args=args, kwargs=kwargs)

    def __getitem__(self, key):
        return self._ask("getitem", key=key)

    def __len__(self) -> int:
        n = self._ask("len")
        if type(n) is not int:
            raise TypeError("len() of a learner's object did not give an int")
        return n

    def __iter__(self):
        items = self._ask("iter")
        return iter(items if type(items) is list else [])

    def __bool__(self) -> bool:
        return self._ask("bool") is True

    def __repr__(self) -> str:
        text = self._ask("repr")
        return text if type(text) is str else f"<learner's {self._type}>"


class Channel:
    """The checks' end of the pipes to one learner's process."""

    def __init__(self, req_fd: int, rep_fd: int) -> None:
        self.req_fd, self.rep_fd = req_fd, rep_fd
        self.task: str | None = None
        self.gone = False
        self._proxies: dict[int, Remote] = {}
        self._callbacks: dict[int, object] = {}
        self._callback_ids: dict[int, int] = {}
        self.decoder = Decoder(self._handle)

    def _handle(self, ref: int, type_name: str) -> Remote:
        proxy = self._proxies.get(ref)
        if proxy is None:
            proxy = self._proxies[ref] = Remote(self, ref, type_name)
        return proxy

    def _ref_of(self, obj) -> int | None:
        if type(obj) is Remote and object.__getattribute__(obj, "_channel") is self:
            return object.__getattribute__(obj, "_ref")
        return None

    def _callback_of(self, obj) -> int | None:
        if isinstance(obj, types.FunctionType) and obj.__module__ == CHECKS_MODULE:
            n = self._callback_ids.get(id(obj))
            if n is None:
                n = self._callback_ids[id(obj)] = len(self._callbacks) + 1
                self._callbacks[n] = obj
            return n
        return None

    def _send(self, message: dict) -> None:
        try:
            send(self.req_fd, dumps_request(message, self._ref_of, self._callback_of))
        except (BrokenPipeError, OSError):
            self.gone = True
            raise LearnerGone("the notebook's process ended") from None

    def ask(self, request: dict):
        """Send a request; run the callbacks the learner's code makes meanwhile; the answer's value."""
        if self.gone:
            raise LearnerGone("the notebook's process ended")
        request["task"] = self.task
        self._send(request)
        while True:
            try:
                data = receive(self.rep_fd)
            except (OSError, WireError) as err:
                self.gone = True
                raise LearnerGone(f"the notebook's process ended ({err})") from None
            if data is None:
                self.gone = True
                raise LearnerGone("the notebook's process ended")
            try:
                message = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise WireError("the answer is not a message") from None
            if type(message) is not dict:
                raise WireError("the answer is not a message")
            if "callback" in message:
                self._run_callback(message)
            elif "ok" in message:
                return self.decoder.decode(message["ok"])
            elif type(message.get("error")) is dict:
                err = message["error"]
                raise _exception(str(err.get("etype"))[:100], str(err.get("message"))[:2000])
            else:
                raise WireError("the answer is not a message")

    def _run_callback(self, message: dict) -> None:
        fn = self._callbacks.get(message.get("callback")) if type(message.get("callback")) is int else None
        try:
            if fn is None:
                raise WireError("no such callback")
            args = self.decoder.decode(message.get("args"))
            kwargs = self.decoder.decode(message.get("kwargs"))
            if type(args) is not list or type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
                raise WireError("malformed callback arguments")
            reply = {"ok": fn(*args, **kwargs)}
        except Exception as err:  # noqa: BLE001 - the check's function failed on the learner's input
            reply = {"error": (type(err).__name__, str(err)[:2000])}
        self._send(reply)


# -- secret seeds for the hidden part -------------------------------------------------------------------------------
class SecretSeeds:
    """While active, seeds set by check code are mixed with a secret."""

    def __init__(self, secret: int) -> None:
        self.secret = secret

    def mix(self, seed) -> int:
        digest = hashlib.sha256(f"{self.secret}:{seed}".encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    def __enter__(self) -> SecretSeeds:
        mix = self.mix
        self._saved = (torch.manual_seed, torch.Generator, random.seed)

        class Generator(torch.Generator):
            def manual_seed(self, seed):  # noqa: D102
                return super().manual_seed(mix(seed))

        manual_seed = self._saved[0]
        seed_random = self._saved[2]
        torch.manual_seed = lambda seed: manual_seed(mix(seed))
        torch.Generator = Generator
        random.seed = lambda a=None, version=2: seed_random(mix(a), version)
        return self

    def __exit__(self, *exc) -> None:
        torch.manual_seed, torch.Generator, random.seed = self._saved

    def reseed(self, namespace: dict, label: str) -> None:
        """Reseed every generator the namespace holds, and the global ones, for the hidden part of ``label``."""
        manual_seed = self._saved[0] if hasattr(self, "_saved") else torch.manual_seed
        manual_seed(self.mix(f"torch:{label}"))
        random.Random.seed(random._inst, self.mix(f"random:{label}"))
        for name, value in list(namespace.items()):
            if isinstance(value, torch.Generator):
                torch.Generator.manual_seed(value, self.mix(f"{label}:{name}"))


# -- one job ----------------------------------------------------------------------------------------------------------
def run_job(program: dict, req_fd: int, rep_fd: int, write) -> None:
    """Run the checks of ``program`` against the learner's process at the other end of the pipes.

    ``program``: ``cells`` (setup and check cells, in the chapter's order: dicts
    with ``role``, ``source``, ``task``, ``check``), ``names`` (what the learner's
    answers define), ``secret`` (an int, or None: the hidden parts keep their
    seeds) and ``visible_only`` (the learner's self-check).
    """
    channel = Channel(req_fd, rep_fd)
    namespace: dict = {"__name__": CHECKS_MODULE, "__builtins__": builtins}
    secret = program.get("secret")
    seeds = SecretSeeds(int(secret)) if secret is not None else None
    names = [n for n in program.get("names", []) if isinstance(n, str)]
    torch.manual_seed(0)
    random.seed(0)
    drivers._REMOTE = lambda fn, args, kwargs: channel.ask({"op": "run", "fn": fn, "args": args, "kwargs": kwargs})

    def execute(source: str, label: str):
        exec(compile(source, f"<{label}>", "exec"), namespace)  # noqa: S102 - the course's own checks

    for i, cell in enumerate(program["cells"]):
        if cell["role"] != "check":
            channel.task = None
            try:
                execute(cell["source"], f"setup cell {i}")
            except Exception as err:  # noqa: BLE001 - reported; the checks that need it fail on their own
                write({"setup": i, "etype": type(err).__name__, "message": str(err)[:500]})
            continue
        channel.task = cell["task"]
        record = {"check": cell["check"], "status": "ok", "etype": None, "message": None, "part": None}
        visible, hidden = split_check(cell["source"])
        parts = [("visible", visible)] + ([] if program.get("visible_only") else [("hidden", hidden)])
        for part, source in parts:
            try:
                bound = channel.ask({"op": "names", "names": names})
                if type(bound) is not dict:
                    raise WireError("the names did not come back as a dict")
                for n in names:  # an answer the learner deleted stays unbound: a NameError, as in Jupyter
                    if n in bound:
                        namespace[n] = bound[n]
                    else:
                        namespace.pop(n, None)
                if part == "hidden" and seeds is not None and source.strip():
                    seeds.reseed(namespace, cell["check"])
                    with seeds:
                        execute(source, f"check {cell['check']} ({part})")
                else:
                    execute(source, f"check {cell['check']} ({part})")
            except Exception as err:  # noqa: BLE001 - a failed check, whatever it raised
                record.update(status="error", etype=type(err).__name__, message=str(err)[:500], part=part)
                break
        write(record)


# -- the server -------------------------------------------------------------------------------------------------------
def _warm_up() -> None:
    import_package()
    for name in ("transformers.models.llama.modeling_llama", "transformers.models.t5.modeling_t5",
                 "transformers.generation.logits_process"):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a check that needs it imports it (and fails) itself
            pass


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(sock_fd: int) -> int:
    _warm_up()
    sock = socket.socket(fileno=sock_fd)
    sock.sendall(b'{"ready": true}\n')
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, 2)
        except OSError:
            return 0
        if not head:
            return 0
        if len(fds) != 2 or len(head) != _LENGTH.size:
            return 3
        (n,) = _LENGTH.unpack(head)
        data = _read_exactly(sock, n)
        if data is None:
            return 0
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)  # what the checks print goes nowhere
                os.close(null)

                def write(record: dict) -> None:
                    sock.sendall(json.dumps(record).encode() + b"\n")

                run_job(json.loads(data), fds[0], fds[1], write)
                code = 0
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        try:
            sock.sendall(json.dumps({"done": True, "exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        except OSError:
            return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(serve(int(sys.argv[1])))
