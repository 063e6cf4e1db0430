"""The learner's side of a check: answer the checks' requests with plain values (issue 27).

After the submission's cells have run, :func:`lmcourse.course.grade_runner.execute`
calls :func:`serve`: it reads requests (:mod:`lmcourse.course.wire`) from the checks'
process, runs each on the learner's objects and writes back the value, a handle,
or the exception's type and message. The requests:

- ``names``: the values (or handles) the notebook's namespace binds to these names;
- ``call``: call a handle with arguments;
- ``getattr``, ``setattr``, ``getitem``, ``len``, ``iter``, ``repr``, ``bool``: the
  same on a handle;
- ``run``: run one of the course's own functions (a *driver*,
  :mod:`lmcourse.course.drivers`) here, on the learner's objects: for checks of
  behaviour, such as a resume from a checkpoint, that need objects to stay in one
  process.

Each request names the task whose check sent it; while it runs, the forbidden
calls and the aten operators of that task are recorded (:class:`OpRecorder`), and
a new finding is written to the grader (``report``) *before* the answer goes back,
so a submission that hangs afterwards cannot hide it.
"""

from __future__ import annotations

import builtins
import json

from torch.utils._python_dispatch import TorchDispatchMode

from .wire import Encoder, WireError, dumps_request, loads_request, receive, send

MAX_MESSAGE_CHARS = 2000


class OpRecorder(TorchDispatchMode):
    """Records the aten operators run while it is active whose names start with a forbidden prefix."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name().split("::")[-1].split(".")[0]
        if name.startswith(self.prefixes) and name not in self.seen:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


class LearnerSide:
    def __init__(self, namespace: dict, recorder, forbid_ops: dict[str, list[str]], report) -> None:
        self.ns = namespace
        self.recorder = recorder
        self.forbid_ops = {t: tuple(ops) for t, ops in forbid_ops.items() if ops}
        self.ops: dict[str, list[str]] = {}
        self.report = report
        self.encoder = Encoder()
        self.req_fd = self.rep_fd = -1
        self._reported = ""

    # -- callbacks: a check's function, run in the checks' process ---------------------------------------------
    def _callback(self, n: int):
        def callback(*args, **kwargs):
            message = {"callback": n, "args": self.encoder.encode(list(args)),
                       "kwargs": self.encoder.encode(dict(kwargs))}
            send(self.rep_fd, json.dumps(message).encode())
            data = receive(self.req_fd)
            if data is None:
                raise SystemExit(0)
            reply = loads_request(data, self._resolve, self._callback)
            if "error" in reply:
                etype, text = reply["error"]
                raise _exception(etype, text)
            return reply["ok"]

        return callback

    def _resolve(self, ref: int):
        try:
            return self.encoder.objects[ref]
        except KeyError:
            raise WireError(f"no object with handle {ref}") from None

    # -- one request ---------------------------------------------------------------------------------------------
    def _do(self, req: dict) -> object:
        op = req["op"]
        if op == "names":
            return {n: self.ns[n] for n in req["names"] if n in self.ns}
        if op == "run":
            return req["fn"](*req.get("args", ()), **req.get("kwargs", {}))
        target = self._resolve(req["ref"])
        if op == "call":
            return target(*req.get("args", ()), **req.get("kwargs", {}))
        if op == "getattr":
            return getattr(target, req["name"])
        if op == "setattr":
            setattr(target, req["name"], req["value"])
            return None
        if op == "getitem":
            return target[req["key"]]
        if op == "len":
            return len(target)
        if op == "iter":
            return list(target)
        if op == "repr":
            return repr(target)[:MAX_MESSAGE_CHARS]
        if op == "bool":
            return bool(target)
        raise WireError(f"unknown request {op!r}")

    def _answer(self, req: dict) -> bytes:
        task = req.get("task")
        self.recorder.checking = task
        prefixes = self.forbid_ops.get(task, ())
        ops = OpRecorder(prefixes) if prefixes and req["op"] != "names" else None
        try:
            if ops is not None:
                with ops:
                    value = self._do(req)
            else:
                value = self._do(req)
            reply = {"ok": self.encoder.encode(value)}
        except BaseException as err:  # noqa: BLE001 - the learner's code may raise anything
            reply = {"error": {"etype": type(err).__name__, "message": _text(err)}}
        finally:
            self.recorder.checking = None
        if ops is not None and ops.seen:
            found = self.ops.setdefault(task, [])
            found.extend(n for n in ops.seen if n not in found)
        state = json.dumps([self.recorder.calls, self.ops], sort_keys=True)
        if state != self._reported:  # what was found goes to the grader before the answer goes back
            self._reported = state
            self.report({"forbidden": {t: list(n) for t, n in self.recorder.calls.items()},
                         "ops": {t: list(n) for t, n in self.ops.items()}})
        try:
            return json.dumps(reply, allow_nan=False).encode()
        except (TypeError, ValueError) as err:
            return json.dumps({"error": {"etype": "WireError", "message": str(err)[:200]}}).encode()

    def serve(self, req_fd: int, rep_fd: int) -> None:
        """Answer requests until the checks' process closes its end."""
        self.req_fd, self.rep_fd = req_fd, rep_fd
        while True:
            try:
                data = receive(req_fd)
            except (OSError, WireError):
                return
            if data is None:
                return
            try:
                req = loads_request(data, self._resolve, self._callback)
            except Exception as err:  # noqa: BLE001 - a handle that does not exist, a class not importable here
                reply = json.dumps({"error": {"etype": type(err).__name__, "message": _text(err)}}).encode()
            else:
                reply = self._answer(req)
            try:
                send(rep_fd, reply)
            except OSError:
                return


def _text(err: BaseException) -> str:
    try:
        return str(err)[:MAX_MESSAGE_CHARS]
    except Exception:  # noqa: BLE001
        return "(an exception whose message cannot be shown)"


def _exception(etype: str, text: str) -> BaseException:
    cls = getattr(builtins, etype, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls is not StopIteration:
        return cls(text)
    return RuntimeError(f"{etype}: {text}")


__all__ = ["LearnerSide", "OpRecorder", "dumps_request"]
