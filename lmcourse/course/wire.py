"""What crosses between the learner's process and the checks' process (issue 27).

The checks run in a trusted process of their own (:mod:`lmcourse.course.check_runner`);
the learner's code runs in the sandboxed runner (:mod:`lmcourse.course.grade_runner`).
A check calls a learner's function through a :class:`~lmcourse.course.check_runner.Remote`
proxy: the call goes to the learner's process as a message, the answer comes back
as a message. The two directions are not alike:

* **checks -> learner** (:func:`dumps_request`): a pickle. The learner's process
  trusts the grader, so anything picklable may go: tensors, numbers, a model, an
  optimizer, a ``GPTConfig``. Two things go by reference instead of by value: a
  proxy of a learner's object (the learner's process looks it up in its table)
  and a function a check defined (it becomes a *callback*: calling it in the
  learner's process asks the checks' process to run it and send the result).
* **learner -> checks** (:func:`encode` / :func:`decode`): plain values only, in
  JSON. A tensor is its bytes with a dtype and a shape, rebuilt as exactly
  ``torch.Tensor``; numbers, strings, ``None`` and booleans as themselves, exactly
  ``int``, ``float``, ``str``; lists, tuples, dicts and sets of those. A value of
  a subclass is converted by its base type's own method (an ``int`` subclass
  becomes the int it holds), so no method of the learner's runs in the checks'
  process. Anything else (a function, a model, a generator) stays in the
  learner's process: the checks get a *handle* to it, a number, which a proxy
  uses to ask for its attributes, call it or index it.

So no object of the learner's ever exists in the checks' process, and nothing
the learner sends can run code there: the decoder builds only the types above.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import pickle
import struct

import torch

MAX_MESSAGE = 256 * 2**20  # bytes in one message, either way
DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}
_HEADER = struct.Struct(">Q")
_GENERATOR = torch.Generator  # the class itself: the checks' secret seeding replaces the module's name for a while


class WireError(ValueError):
    """A message that breaks the format (the checks treat it as the learner's error)."""


# -- framing: a length, then the bytes ---------------------------------------------------------------------------
def send(fd: int, payload: bytes) -> None:
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd: int) -> bytes | None:
    """The next message's bytes; None at the end of the stream (the other side ended)."""
    head = _read_exactly(fd, _HEADER.size)
    if head is None:
        return None
    (n,) = _HEADER.unpack(head)
    if n > MAX_MESSAGE:
        raise WireError(f"a message of {n:,} bytes (at most {MAX_MESSAGE:,})")
    return _read_exactly(fd, n)


# -- learner -> checks: plain values -----------------------------------------------------------------------------
class Encoder:
    """Turns the learner's values into JSON-able trees; keeps what cannot be a value in a table of handles.

    ``objects``: handle -> object (kept alive, so a handle always means the same
    object). Tensors carry their handle and version too, so that the checks can
    tell one tensor fetched twice (``model.head.weight is model.tok_emb.weight``).
    """

    def __init__(self) -> None:
        self.objects: dict[int, object] = {}
        self._ids: dict[int, int] = {}

    def handle(self, obj: object) -> int:
        ref = self._ids.get(id(obj))
        if ref is None or self.objects.get(ref) is not obj:
            ref = len(self.objects) + 1
            self.objects[ref] = obj
            self._ids[id(obj)] = ref
        return ref

    def encode(self, value: object, depth: int = 0) -> object:
        if depth > 50:
            raise WireError("a value nested more than 50 deep")
        if value is None or type(value) is bool:
            return value
        if isinstance(value, bool):
            return bool(int.__index__(value))
        if isinstance(value, int):
            return {"i": str(int.__index__(value))}
        if isinstance(value, float):
            x = float.__float__(value)
            return x if math.isfinite(x) else {"f": repr(x)}
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, torch.Tensor):
            return self._tensor(value)
        if isinstance(value, (torch.dtype, torch.device)):
            return {"s": str(value)}  # shown as text: '<torch.float64>' compares as a string
        if type(value).__module__ == "numpy":
            return self._numpy(value, depth)
        if type(value) in (list, tuple, set, frozenset, torch.Size):
            tag = {list: "L", set: "S", frozenset: "S"}.get(type(value), "T")
            return {tag: [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
            return {"D": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in dict.items(value)]}
        if isinstance(value, bytes) and type(value) is bytes:
            return {"B": base64.b64encode(value).decode()}
        return {"H": [self.handle(value), _type_name(value)]}

    def _tensor(self, t: torch.Tensor) -> dict:
        if type(t) not in (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer):
            raise WireError(f"a {_type_name(t)}: return a plain torch.Tensor")
        with torch.no_grad():
            d = torch.Tensor.detach(t)
            if d.layout != torch.strided or d.is_quantized or d.is_meta:
                raise WireError("a tensor that is not a plain strided one: return a plain torch.Tensor")
            name = str(d.dtype).removeprefix("torch.")
            if name not in DTYPES:
                raise WireError(f"a tensor of dtype {d.dtype}")
            d = d.cpu().resolve_conj().resolve_neg().contiguous()
            raw = d.reshape(-1).view(torch.uint8).numpy().tobytes() if d.numel() else b""
        return {"X": [name, list(d.shape), base64.b64encode(raw).decode(), bool(t.requires_grad),
                      self.handle(t), int(t._version)]}

    def _numpy(self, value, depth: int) -> object:
        import numpy as np

        if isinstance(value, np.ndarray) and type(value) is np.ndarray and value.dtype.kind in "biufc":
            return self._tensor(torch.from_numpy(np.array(value, copy=True)))
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return {"i": str(int(value))}
        if isinstance(value, np.floating):
            return self.encode(float(value), depth)
        return {"H": [self.handle(value), _type_name(value)]}


def _type_name(value: object) -> str:
    cls = type(value)
    return f"{type.__getattribute__(cls, '__module__')}.{type.__getattribute__(cls, '__qualname__')}"[:200]


def dumps_value(encoder: Encoder, value: object) -> bytes:
    return json.dumps(encoder.encode(value)).encode()


# -- checks side: decoding ----------------------------------------------------------------------------------------
class Decoder:
    """Rebuilds plain values; a handle becomes ``make_handle(ref, type_name)``.

    Tensors fetched twice with the same handle and version are the same object
    here too (``is`` works as in the learner's process).
    """

    def __init__(self, make_handle) -> None:
        self.make_handle = make_handle
        self._tensors: dict[int, tuple[int, torch.Tensor]] = {}

    def loads(self, data: bytes) -> object:
        try:
            tree = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise WireError(f"not a message: {err}") from None
        return self.decode(tree)

    def decode(self, tree: object, depth: int = 0) -> object:
        if depth > 60:
            raise WireError("nested too deep")
        if tree is None or type(tree) in (bool, float, str):
            return tree
        if type(tree) is not dict or len(tree) != 1:
            raise WireError(f"unexpected {type(tree).__name__}")
        (tag, body), = tree.items()
        if tag == "i" and type(body) is str and len(body) < 5000:
            return int(body)
        if tag == "f" and body in ("inf", "-inf", "nan"):
            return float(body)
        if tag == "s" and type(body) is str:
            return body
        if tag in ("L", "T", "S") and type(body) is list:
            items = [self.decode(v, depth + 1) for v in body]
            return items if tag == "L" else tuple(items) if tag == "T" else set(items)
        if tag == "D" and type(body) is list:
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("a dict entry that is not a pair")
                out[self.decode(pair[0], depth + 1)] = self.decode(pair[1], depth + 1)
            return out
        if tag == "B" and type(body) is str:
            return base64.b64decode(body)
        if tag == "X" and type(body) is list and len(body) == 6:
            return self._tensor(*body)
        if tag == "H" and type(body) is list and len(body) == 2 and type(body[0]) is int and type(body[1]) is str:
            return self.make_handle(body[0], body[1])
        raise WireError(f"unexpected tag {tag!r}")

    def _tensor(self, name, shape, b64, requires_grad, ref, version) -> torch.Tensor:
        if name not in DTYPES or type(shape) is not list or not all(type(s) is int and s >= 0 for s in shape) \
                or type(b64) is not str or type(ref) is not int or type(version) is not int:
            raise WireError("a malformed tensor")
        cached = self._tensors.get(ref)
        if cached is not None and cached[0] == version:
            return cached[1]
        dtype = DTYPES[name]
        raw = base64.b64decode(b64)
        n = math.prod(shape)
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if len(raw) != n * itemsize:
            raise WireError(f"a tensor of shape {shape} and dtype {name} with {len(raw)} bytes")
        if n:
            t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape).clone()
        else:
            t = torch.empty(shape, dtype=dtype)
        if requires_grad is True and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)
        self._tensors[ref] = (version, t)
        return t


# -- checks -> learner: a pickle, with proxies and callbacks by reference ------------------------------------------
def dumps_request(request: dict, ref_of, callback_of) -> bytes:
    """Pickle a request; ``ref_of(obj)`` gives a proxy's handle (else None), ``callback_of(obj)`` a check's
    function's callback number (else None)."""

    class _Pickler(pickle.Pickler):
        def reducer_override(self, obj):  # a generator goes as a plain torch.Generator in its state
            if isinstance(obj, _GENERATOR):
                return generator_from_state, (str(obj.device), bytes(obj.get_state().numpy().tobytes()))
            return NotImplemented

        def persistent_id(self, obj):
            ref = ref_of(obj)
            if ref is not None:
                return ("ref", ref)
            cb = callback_of(obj)
            if cb is not None:
                return ("callback", cb)
            return None

    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(request)
    return buf.getvalue()


def generator_from_state(device: str, state: bytes) -> torch.Generator:
    g = _GENERATOR(device)
    g.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8).clone())
    return g


def loads_request(data: bytes, resolve_ref, make_callback) -> dict:
    class _Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            kind, n = pid
            if kind == "ref":
                return resolve_ref(n)
            if kind == "callback":
                return make_callback(n)
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")

    return _Unpickler(io.BytesIO(data)).load()
