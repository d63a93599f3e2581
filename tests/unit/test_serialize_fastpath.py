"""The shortcuts of ``ipcluster.protocol.serialize``: they must give what the full path gives."""

from __future__ import annotations

import io
import pickle
import types

import numpy as np
import pytest

from ipcluster.protocol import serialize
from ipcluster.protocol.serialize import (
    BUFFER_THRESHOLD,
    _plain,
    _Pickler,
    _Unpickler,
    deserialize_object,
    pack_apply_message,
    serialize_object,
    unpack_apply_message,
)

pytestmark = pytest.mark.timeout(20)


def by_value(src: str, name: str, **globs) -> types.FunctionType:
    """A function as if defined in ``__main__`` (pickled by value, so the function cache applies)."""
    ns = {"__name__": "__main__", **globs}
    exec(src, ns)
    return ns[name]


def full_stream(f, args, kwargs) -> bytes:
    """What the full pickler writes for an apply request."""
    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=lambda b: True).dump((f, tuple(args), dict(kwargs)))
    return out.getvalue()


PLAIN_ARGS = [
    ((), {}),
    ((1, 2.5, None, True, "é", 3 + 4j), {}),
    ((), {"b": 2, "c": "x"}),
    (([1, [2, (3, {"k": b"v"})]], {"d": (1,)}), {"e": [None]}),
    ((b"x" * 1000, -(10**40)), {}),
    ((["same"] * 3,), {}),
]


@pytest.mark.parametrize("args,kwargs", PLAIN_ARGS)
def test_cached_function_with_plain_arguments_gives_the_full_picklers_bytes(args, kwargs):
    f = by_value("def f(*a, **k):\n    return len(a) + len(k)\n", "f")
    assert serialize._FUNCTION_CACHE.payload(f) is not None  # the shortcut's condition
    frames = pack_apply_message(f, args, kwargs)
    assert len(frames) == 1
    assert bytes(frames[0]) == full_stream(f, args, kwargs)
    g, a, k = unpack_apply_message(frames)
    assert (a, k) == (tuple(args), dict(kwargs)) and g(*a, **k) == f(*args, **kwargs)


def test_shared_items_keep_their_identity():
    f = by_value("def f(x, y):\n    return x is y\n", "f")
    shared = [1, 2]
    g, a, k = unpack_apply_message(pack_apply_message(f, (shared, shared), {}))
    assert g(*a) is True


@pytest.mark.parametrize("arg", [
    np.arange(3),  # not plain: numpy
    b"x" * BUFFER_THRESHOLD,  # large: out-of-band
    bytearray(b"small"),
    {1, 2},
    (lambda: 1),
    True.__class__,
    type("IntSub", (int,), {})(3),  # a subclass of a plain type
    [[[[[1]]]]],  # deeper than the scan looks
    list(range(serialize._PLAIN_BUDGET + 1)),  # more items than the scan looks at
])
def test_other_arguments_take_the_full_path(arg):
    assert not _plain((arg,))
    f = by_value("def f(x):\n    return x\n", "f")
    frames = pack_apply_message(f, (arg,), {})
    g, a, _ = unpack_apply_message(frames)
    back = a[0]
    if isinstance(arg, np.ndarray):
        assert np.array_equal(back, arg)
    elif callable(arg) and not isinstance(arg, type):
        assert back() == 1
    else:
        assert back == arg and type(back).__name__ == type(arg).__name__


def test_a_recursive_list_is_not_plain_and_still_pickles():
    loop: list = []
    loop.append(loop)
    assert not _plain((loop,))
    f = by_value("def f(x):\n    return x[0] is x\n", "f")
    g, a, _ = unpack_apply_message(pack_apply_message(f, (loop,), {}))
    assert g(*a) is True


def test_uncacheable_and_importable_functions_take_the_full_path():
    state = [0]
    f = by_value("def f():\n    return state\n", "f", state=state)  # captures a list: not cached
    assert serialize._FUNCTION_CACHE.payload(f) is None
    g, _, _ = unpack_apply_message(pack_apply_message(f, (), {}))
    assert g() == [0]
    assert unpack_apply_message(pack_apply_message(len, ("abc",), {}))[0] is len
    assert unpack_apply_message(pack_apply_message(np.sum, (), {}))[0] is np.sum


def test_a_changed_function_or_global_is_pickled_anew():
    f = by_value("def f():\n    return K\n", "f", K=1)
    first = pack_apply_message(f, (), {})
    assert unpack_apply_message(first)[0]() == 1
    f.__globals__["K"] = 2  # a global it reads is rebound
    assert unpack_apply_message(pack_apply_message(f, (), {}))[0]() == 2
    f.__code__ = (lambda: K + 10).__code__  # noqa: F821  (its code replaced)
    assert unpack_apply_message(pack_apply_message(f, (), {}))[0]() == 12
    h = by_value("def h(x=1):\n    return x\n", "h")
    assert unpack_apply_message(pack_apply_message(h, (), {}))[0]() == 1
    h.__defaults__ = (5,)
    assert unpack_apply_message(pack_apply_message(h, (), {}))[0]() == 5
    assert bytes(pack_apply_message(h, (), {})[0]) == full_stream(h, (), {})


@pytest.mark.parametrize("obj", [None, 1, "x", [1, {"a": (2, b"z")}], np.arange(5), {"big": b"y" * BUFFER_THRESHOLD}])
def test_loading_gives_what_the_full_loader_gives(obj):
    frames = serialize_object(obj)
    fast = deserialize_object(frames)
    full = _Unpickler(io.BytesIO(frames[0]), buffers=frames[1:]).load()
    if isinstance(obj, np.ndarray):
        assert np.array_equal(fast, full)
    else:
        assert fast == full == obj


def test_a_single_frame_with_a_persistent_id_gets_the_full_loaders_outcome():
    """Not made by this module's picklers; the shortcut must still not change the outcome."""

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return (False, b"raw") if obj == "marker" else None

    out = io.BytesIO()
    P(out, protocol=5).dump(["marker", 1])
    frames = [out.getvalue()]
    assert deserialize_object(frames) == [b"raw", 1]


def test_calls_without_arguments_reuse_their_stream_within_a_bound():
    funcs = [by_value(f"def f{i}():\n    return {i}\n", f"f{i}") for i in range(serialize._NO_ARGUMENTS_MAX + 5)]
    for i, f in enumerate(funcs):
        frames = pack_apply_message(f, (), {})
        assert bytes(frames[0]) == full_stream(f, (), {})
        assert unpack_apply_message(frames)[0]() == i
        assert pack_apply_message(f, [], {})[0] is frames[0]  # the same stream again
        assert len(serialize._NO_ARGUMENTS) <= serialize._NO_ARGUMENTS_MAX
