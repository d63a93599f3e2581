"""Object serialization: cloudpickle with pickle-5 out-of-band buffers.

``serialize_object(obj)`` returns a list of buffers: the pickle stream first, then every large
contiguous buffer the object holds (NumPy arrays, ``bytes``, ``bytearray``, ``memoryview``) as its own
item, referenced, not copied.  The caller sends them as separate zmq frames with ``copy=False``.

``deserialize_object(frames)`` rebuilds the object on top of the received frames without copying
them; pyzmq frames are writable, so a received NumPy array is writable too.

Functions, lambdas, closures and classes defined in ``__main__`` (a script, IPython, a notebook) are
pickled by value (cloudpickle); everything importable is pickled by reference.
"""

from __future__ import annotations

import io
import pickle
import types
from typing import Any, Callable, Sequence

import cloudpickle

from ipcluster.protocol.funccache import CACHE as _FUNCTION_CACHE
from ipcluster.protocol.funccache import load_function as _load_function

#: Buffers smaller than this stay inside the pickle stream (a separate frame costs more).
BUFFER_THRESHOLD = 64 * 1024

_PROTOCOL = 5


def _rebuild_memoryview(buf: Any) -> memoryview:
    return memoryview(buf)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus out-of-band transport for large ``memoryview`` objects, plus reuse of the
    pickles of unchanged ``__main__`` functions (:mod:`ipcluster.protocol.funccache`)."""

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is types.FunctionType:
            if obj is _load_function:
                return NotImplemented  # importable: the C pickler's own by-name path is fastest
            payload = _FUNCTION_CACHE.payload(obj)
            if payload is not None:
                return _load_function, (payload,)
        elif t is memoryview and obj.nbytes >= BUFFER_THRESHOLD and obj.contiguous:
            return _rebuild_memoryview, (pickle.PickleBuffer(obj),)
        return super().reducer_override(obj)


class _BytesPickler(_Pickler):
    """:class:`_Pickler` that also sends large ``bytes``/``bytearray`` out-of-band.

    The C pickler writes exact bytes and bytearray objects inline without ever calling
    reducer_override, so large ones are diverted through ``persistent_id``: their PickleBuffer
    then goes out-of-band through the buffer_callback.  A repeated object travels once and comes
    back as a back-reference, keeping identity like the pickle memo would.  ``persistent_id`` runs
    for every object pickled (~60 ns each), so this class is used only when
    :func:`_holds_large_bytes` finds something to divert.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # id -> (back-reference number, the object itself, kept alive so its id is not reused)
        self._oob_objects: dict[int, tuple[int, Any]] = {}

    def persistent_id(self, obj: Any) -> Any:
        t = type(obj)
        if (t is bytes or t is bytearray) and len(obj) >= BUFFER_THRESHOLD:
            seen = self._oob_objects.get(id(obj))
            if seen is not None:
                return seen[0]
            self._oob_objects[id(obj)] = (len(self._oob_objects), obj)
            return (t is bytearray, pickle.PickleBuffer(obj))
        return None


#: How many container items :func:`_holds_large_bytes` looks at before giving up.
_SCAN_BUDGET = 1000


def _holds_large_bytes(obj: Any, depth: int = 4) -> bool:
    """Whether *obj* holds a large bytes/bytearray within *depth* levels of builtin containers.

    Bounded (at most ``_SCAN_BUDGET`` items), so big containers of small objects cost nothing
    extra; a large bytes object hidden deeper travels in-band (correct, one copy more).
    """
    budget = _SCAN_BUDGET
    stack = [(obj, depth)]
    while stack:
        o, d = stack.pop()
        t = type(o)
        if t is bytes or t is bytearray:
            if len(o) >= BUFFER_THRESHOLD:
                return True
            continue
        if d == 0:
            continue
        if t is dict:
            items: Any = o.values()
        elif t is tuple or t is list or t is set or t is frozenset:
            items = o
        else:
            continue
        if len(items) > budget:
            return False
        budget -= len(items)
        stack.extend((x, d - 1) for x in items)
    return False


class _Unpickler(pickle.Unpickler):
    """Rebuilds the ``bytes``/``bytearray`` objects :class:`_Pickler` sent as persistent ids."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._oob_objects: list[Any] = []

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is int:
            return self._oob_objects[pid]
        is_bytearray, buf = pid
        obj = bytearray(buf) if is_bytearray else bytes(buf)
        self._oob_objects.append(obj)
        return obj


def _buffer_callback(buffers: list[Any]) -> Callable[[pickle.PickleBuffer], bool]:
    def callback(pb: pickle.PickleBuffer) -> bool:
        try:
            raw = pb.raw()
        except BufferError:  # non-contiguous: serialize in-band
            return True
        if raw.nbytes < BUFFER_THRESHOLD:
            return True
        buffers.append(raw)
        return False

    return callback


#: Results this common pickle the same with the standard pickler, at a tenth of the cost of
#: setting up cloudpickle's (a no-op task's ``None``: 0.6 against 7 µs).
_PLAIN_TYPES = frozenset({type(None), bool, int, float, str})


def serialize_object(obj: Any) -> list[Any]:
    """Pickle *obj*; return ``[pickle_stream, oob_buffer, ...]``."""
    if type(obj) in _PLAIN_TYPES:
        return [pickle.dumps(obj, _PROTOCOL)]
    buffers: list[Any] = []
    f = io.BytesIO()
    cls = _BytesPickler if _holds_large_bytes(obj) else _Pickler
    cls(f, protocol=_PROTOCOL, buffer_callback=_buffer_callback(buffers)).dump(obj)
    return [f.getbuffer(), *buffers]


def deserialize_object(frames: Sequence[Any]) -> Any:
    """Inverse of :func:`serialize_object`; *frames* may be zmq Frames, bytes or memoryviews."""
    if not frames:
        raise ValueError("no frames to deserialize")
    if len(frames) == 1:
        # No out-of-band buffers, so no persistent ids either (the picklers here make one only for
        # a large buffer, which goes out-of-band): the standard loader, at a fifth of the cost.
        try:
            return pickle.loads(frames[0])
        except pickle.UnpicklingError:
            pass  # (a stream made some other way: the full loader's own outcome)
    return _Unpickler(io.BytesIO(frames[0]), buffers=frames[1:]).load()


def pack_apply_message(f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """Buffers for an apply request: ``(f, args, kwargs)`` pickled as one object.

    When *f* has a reusable pickle (:mod:`ipcluster.protocol.funccache`) and the arguments are plain
    values (see :func:`_plain`), the standard pickler writes the very bytes the full one would,
    without its per-object hooks.
    """
    args = tuple(args)
    kwargs = dict(kwargs)
    if type(f) is types.FunctionType and (not args or _plain(args)) and (not kwargs or _plain(kwargs)):
        payload = _FUNCTION_CACHE.payload(f)
        if payload is not None:
            if args or kwargs:
                return [pickle.dumps((_CachedFunction(payload), args, kwargs), _PROTOCOL)]
            # a call without arguments pickles to bytes that depend on the payload alone
            stream = _NO_ARGUMENTS.get(payload)
            if stream is None:
                if len(_NO_ARGUMENTS) >= _NO_ARGUMENTS_MAX:
                    _NO_ARGUMENTS.clear()
                stream = _NO_ARGUMENTS[payload] = pickle.dumps((_CachedFunction(payload), (), {}), _PROTOCOL)
            return [stream]
    return serialize_object((f, args, kwargs))


#: payload -> the stream of a call of its function without arguments (see pack_apply_message)
_NO_ARGUMENTS: dict[bytes, bytes] = {}
_NO_ARGUMENTS_MAX = 64


class _CachedFunction:
    """Stands for a function in :func:`pack_apply_message`: pickles as its cached payload, the way
    :class:`_Pickler` pickles the function itself."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[bytes]]:
        return _load_function, (self.payload,)


#: Leaf types :func:`_plain` accepts: pickled alike by every pickler here (exact types only: a
#: subclass may be defined in ``__main__`` and pickled by value).
_PLAIN_LEAVES = frozenset({type(None), bool, int, float, complex, str})
#: Items :func:`_plain` looks at, and how deep, before it gives up (and the full pickler runs).
_PLAIN_BUDGET = 64
_PLAIN_DEPTH = 4


def _plain(obj: Any) -> bool:
    """Whether *obj* (a tuple, list or dict) is made of plain values only: the leaves above and
    ``bytes`` too small to go out-of-band, in tuples, lists and dicts (with leaf keys), bounded in
    size and depth.  For such values the standard pickler writes what cloudpickle and
    :class:`_Pickler` would: none of their hooks applies (no functions or classes, no buffers)."""
    budget = _PLAIN_BUDGET
    leaves = _PLAIN_LEAVES
    stack = [(obj, _PLAIN_DEPTH)]
    while stack:
        container, depth = stack.pop()
        t = type(container)
        if t is dict:
            for key in container:
                if type(key) not in leaves:
                    return False
            values: Any = container.values()
        elif t is tuple or t is list:
            values = container
        else:
            return False
        budget -= len(container)
        if budget < 0 or depth == 0:
            return False
        for v in values:
            tv = type(v)
            if tv in leaves:
                continue
            if tv is bytes:
                if len(v) >= BUFFER_THRESHOLD:
                    return False
            elif tv is tuple or tv is list or tv is dict:
                stack.append((v, depth - 1))
            else:
                return False
    return True


def unpack_apply_message(frames: Sequence[Any]) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    f, args, kwargs = deserialize_object(frames)
    return f, args, kwargs
