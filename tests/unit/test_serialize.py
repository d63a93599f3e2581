"""Object serialization (``ipcluster.protocol.serialize``): cloudpickle + pickle-5 out-of-band buffers."""

from __future__ import annotations

import os.path
import sys
import types

import cloudpickle
import numpy as np
import pytest
import zmq

from ipcluster.protocol.serialize import (
    BUFFER_THRESHOLD,
    deserialize_object,
    pack_apply_message,
    serialize_object,
    unpack_apply_message,
)

pytestmark = pytest.mark.timeout(10)

BIG = 4 * BUFFER_THRESHOLD  # comfortably out-of-band


def roundtrip(obj):
    return deserialize_object(serialize_object(obj))


def stream(frames) -> bytes:
    return bytes(frames[0])


# --- functions and classes ----------------------------------------------------------------------


def test_plain_values_round_trip():
    obj = {"a": [1, 2.5, None, True], "b": ("x", b"y"), "c": {1, 2}, "é": frozenset()}
    frames = serialize_object(obj)
    assert len(frames) == 1
    assert deserialize_object(frames) == obj


@pytest.mark.parametrize("obj", [None, True, 0, -(10**40), 2.5, float("inf"), "", "é" * 100, "x" * 70_000])
def test_scalars_round_trip_with_their_exact_type(obj):
    frames = serialize_object(obj)
    assert len(frames) == 1
    back = deserialize_object(frames)
    assert back == obj and type(back) is type(obj)


def test_subclasses_of_scalars_keep_their_class():
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Tagged(str):
        pass

    assert deserialize_object(serialize_object(Color.RED)) is Color.RED
    back = deserialize_object(serialize_object(Tagged("t")))
    assert type(back).__name__ == "Tagged" and back == "t"


def test_importable_function_is_pickled_by_reference():
    frames = serialize_object(os.path.join)
    assert deserialize_object(frames) is os.path.join
    assert b"posixpath" in stream(frames) or b"ntpath" in stream(frames)


def test_lambda_round_trips():
    f = roundtrip(lambda x, y=2: x * y + 1)
    assert f(5) == 11
    assert f(5, y=3) == 16


def test_closure_round_trips_with_its_cells():
    def make_counter(start, step):
        state = {"n": start}

        def tick():
            state["n"] += step
            return state["n"]

        return tick

    tick = make_counter(10, 5)
    tick()  # the captured state at send time is what travels
    remote = roundtrip(tick)
    assert remote() == 20
    assert remote() == 25
    assert tick() == 20  # the original is independent of the copy


def test_recursive_nested_function_round_trips():
    def outer(n):
        def fact(k):
            return 1 if k <= 1 else k * fact(k - 1)

        return fact(n)

    assert roundtrip(outer)(6) == 720


def test_function_using_a_global_module():
    f = roundtrip(lambda n: np.arange(n).sum())
    assert f(5) == 10


def test_class_defined_in_main_is_pickled_by_value():
    class Point:
        scale = 10

        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm2(self):
            return (self.x**2 + self.y**2) * self.scale

    # make it look like a class typed at an interactive prompt / defined in a notebook
    Point.__module__ = "__main__"
    Point.__qualname__ = "Point"
    assert not hasattr(sys.modules["__main__"], "Point")  # not importable by reference

    frames = serialize_object(Point(3, 4))
    # by value: the method's code travels in the stream
    assert b"norm2" in stream(frames)
    p = deserialize_object(frames)
    assert (p.x, p.y) == (3, 4)
    assert p.norm2() == 250
    assert type(p).__name__ == "Point"


def test_function_defined_in_main_is_pickled_by_value():
    def helper(x):
        return f"sentinel-7f3a:{x}"

    helper.__module__ = "__main__"
    helper.__qualname__ = "helper"
    frames = serialize_object(helper)
    assert b"sentinel-7f3a" in stream(frames)
    assert deserialize_object(frames)(1) == "sentinel-7f3a:1"


def test_registered_module_is_pickled_by_value_and_needs_no_import(monkeypatch):
    # an "interactive" module: importable while pickling, gone when unpickling (as on an engine)
    name = "ipcluster_test_interactive_module"
    mod = types.ModuleType(name)
    exec(
        "class Greeter:\n"
        "    def __init__(self, who): self.who = who\n"
        "    def greet(self): return 'hello ' + self.who\n"
        "def shout(g): return g.greet().upper()\n",
        mod.__dict__,
    )
    monkeypatch.setitem(sys.modules, name, mod)
    cloudpickle.register_pickle_by_value(mod)
    try:
        frames = serialize_object((mod.shout, mod.Greeter("engine")))
    finally:
        cloudpickle.unregister_pickle_by_value(mod)
    monkeypatch.delitem(sys.modules, name)

    shout, greeter = deserialize_object([bytes(stream(frames))])
    assert shout(greeter) == "HELLO ENGINE"
    assert name not in sys.modules


def test_exception_instances_round_trip():
    class Custom(Exception):
        pass

    err = roundtrip(Custom("boom", 3))
    assert type(err).__name__ == "Custom"
    assert err.args == ("boom", 3)
    e2 = roundtrip(FileNotFoundError(2, "No such file", "/nope"))
    assert isinstance(e2, FileNotFoundError) and e2.filename == "/nope"


def test_deserialize_needs_frames():
    with pytest.raises(ValueError):
        deserialize_object([])


# --- NumPy --------------------------------------------------------------------------------------


def test_large_array_goes_out_of_band_without_copy():
    arr = np.arange(BIG // 8, dtype=np.float64).reshape(-1, 8)
    frames = serialize_object(arr)
    assert len(frames) == 2
    assert memoryview(frames[1]).nbytes == arr.nbytes
    assert len(stream(frames)) < 1024  # the data is not also in the stream
    # referenced, not copied, on the sending side
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.uint8), arr)

    out = deserialize_object(frames)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_tiny_array_stays_in_band():
    arr = np.arange(10)
    frames = serialize_object(arr)
    assert len(frames) == 1
    out = deserialize_object(frames)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_each_large_array_is_its_own_frame():
    obj = {"a": np.zeros(BIG), "b": [np.ones(BIG, dtype=np.int32), np.arange(3)], "c": np.zeros(BIG)}
    frames = serialize_object(obj)
    assert len(frames) == 4
    out = deserialize_object(frames)
    np.testing.assert_array_equal(out["b"][0], obj["b"][0])
    np.testing.assert_array_equal(out["b"][1], [0, 1, 2])


def test_same_array_twice_is_sent_once():
    arr = np.zeros(BIG)
    frames = serialize_object([arr, arr])
    assert len(frames) == 2
    a, b = deserialize_object(frames)
    assert a is b


def _as_bytearrays(frames):
    return [bytearray(f) for f in frames]


def test_array_rebuilt_on_bytearray_frames_is_writable_and_zero_copy():
    arr = np.arange(BIG // 8, dtype=np.int64)
    received = _as_bytearrays(serialize_object(arr))
    out = deserialize_object(received)

    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    assert np.shares_memory(out, np.frombuffer(received[1], dtype=np.uint8))
    out[0] = -7  # writes land in the received frame: no copy was made
    assert np.frombuffer(received[1], dtype=np.int64)[0] == -7


def test_array_rebuilt_on_writable_memoryview_frames():
    arr = np.linspace(0, 1, BIG // 8)
    received = [memoryview(b) for b in _as_bytearrays(serialize_object(arr))]
    out = deserialize_object(received)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    assert np.shares_memory(out, np.frombuffer(received[1], dtype=np.uint8))


def test_array_rebuilt_on_zmq_frames_is_writable():
    arr = np.arange(BIG // 4, dtype=np.float32)
    received = [zmq.Frame(bytes(f)) for f in serialize_object(arr)]
    out = deserialize_object(received)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    assert np.shares_memory(out, np.frombuffer(received[1], dtype=np.uint8))


def test_array_rebuilt_on_readonly_frames_is_readonly_but_zero_copy():
    arr = np.arange(BIG // 8, dtype=np.int64)
    received = [bytes(f) for f in serialize_object(arr)]
    out = deserialize_object(received)
    np.testing.assert_array_equal(out, arr)
    assert not out.flags.writeable
    assert np.shares_memory(out, np.frombuffer(received[1], dtype=np.uint8))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a[::2], id="strided"),
        pytest.param(lambda a: a.reshape(256, -1)[:, ::3], id="2d-column-slice"),
        pytest.param(lambda a: a.reshape(256, -1).T, id="transposed"),
        pytest.param(lambda a: np.asfortranarray(a.reshape(256, -1)), id="fortran"),
        pytest.param(lambda a: a.reshape(256, -1)[::-1], id="reversed"),
        pytest.param(lambda a: a[:0], id="empty"),
    ],
)
def test_non_contiguous_arrays_round_trip(make):
    base = np.arange(BIG // 8 * 2, dtype=np.float64)
    arr = make(base)
    out = roundtrip(arr)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)
    # and through received (bytearray) frames as well
    out2 = deserialize_object(_as_bytearrays(serialize_object(arr)))
    np.testing.assert_array_equal(out2, arr)


def test_fortran_order_is_preserved():
    arr = np.asfortranarray(np.arange(BIG // 8, dtype=np.float64).reshape(64, -1))
    out = deserialize_object(_as_bytearrays(serialize_object(arr)))
    assert out.flags.f_contiguous
    np.testing.assert_array_equal(out, arr)


def test_structured_and_object_arrays_round_trip():
    rec = np.zeros(BIG // 16, dtype=[("a", "i8"), ("b", "f8")])
    rec["a"] = np.arange(len(rec))
    out = roundtrip(rec)
    assert out.dtype == rec.dtype
    np.testing.assert_array_equal(out, rec)

    objs = np.array([{"k": 1}, "s", None], dtype=object)
    assert list(roundtrip(objs)) == list(objs)


# --- bytes, bytearray, memoryview ---------------------------------------------------------------


def test_large_bytes_go_out_of_band():
    data = os.urandom(BIG)
    frames = serialize_object(data)
    assert len(frames) == 2
    assert memoryview(frames[1]).nbytes == len(data)
    assert len(stream(frames)) < 1024
    out = deserialize_object(_as_bytearrays(frames))
    assert type(out) is bytes and out == data


def test_large_bytes_nested_in_containers_go_out_of_band():
    a, b = os.urandom(BIG), os.urandom(BIG + 1)
    obj = {"x": [a, ("tag", b)], "small": b"tiny"}
    frames = serialize_object(obj)
    assert len(frames) == 3
    assert len(stream(frames)) < 1024
    assert deserialize_object([zmq.Frame(bytes(f)) for f in frames]) == obj


def test_large_bytearray_goes_out_of_band():
    data = bytearray(os.urandom(BIG))
    frames = serialize_object(data)
    assert len(frames) == 2
    assert len(stream(frames)) < 1024
    out = deserialize_object(_as_bytearrays(frames))
    assert type(out) is bytearray and out == data


def test_large_memoryview_goes_out_of_band():
    source = bytearray(os.urandom(BIG))
    frames = serialize_object(memoryview(source))
    assert len(frames) == 2
    assert len(stream(frames)) < 1024
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.uint8), np.frombuffer(source, dtype=np.uint8))
    out = deserialize_object(_as_bytearrays(frames))
    assert isinstance(out, memoryview)
    assert out.tobytes() == bytes(source)


def test_non_contiguous_memoryview_round_trips():
    source = os.urandom(BIG)
    view = memoryview(source)[::2]
    assert not view.contiguous
    assert bytes(roundtrip(view)) == view.tobytes()
    assert bytes(deserialize_object(_as_bytearrays(serialize_object(view)))) == view.tobytes()


def test_repeated_large_bytes_travel_once_and_keep_identity():
    data, buf = os.urandom(BIG), bytearray(os.urandom(BIG))
    frames = serialize_object([data, buf, data, buf, {"again": buf}])
    assert len(frames) == 3
    out = deserialize_object(_as_bytearrays(frames))
    assert out[0] == data and out[1] == buf
    assert out[2] is out[0]
    assert out[3] is out[1] and out[4]["again"] is out[1]  # a shared mutable object stays shared
    out[1][0] ^= 0xFF
    assert out[4]["again"][0] == out[1][0]


class _FreshBytes:
    """Reduces to a new, short-lived large bytes object each time (its id may be reused)."""

    def __init__(self, fill: int):
        self.fill = fill

    def __reduce__(self):
        return bytes, (bytes([self.fill]) * BIG,)


def test_temporary_large_bytes_are_not_confused():
    frames = serialize_object([_FreshBytes(i) for i in range(6)])
    out = deserialize_object(frames)
    assert [o[:1] for o in out] == [bytes([i]) for i in range(6)]
    assert all(len(o) == BIG for o in out)


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_threshold_boundary(kind):
    below = kind(BUFFER_THRESHOLD - 1)
    at = kind(BUFFER_THRESHOLD)
    assert len(serialize_object(below)) == 1
    assert len(serialize_object(at)) == 2
    assert roundtrip(below) == below and roundtrip(at) == at


def test_small_bytes_like_stay_in_band():
    obj = [b"abc", bytearray(b"def"), memoryview(b"ghi")]
    frames = serialize_object(obj)
    assert len(frames) == 1
    out = deserialize_object(frames)
    assert out[0] == b"abc" and out[1] == bytearray(b"def") and bytes(out[2]) == b"ghi"


# --- apply messages -----------------------------------------------------------------------------


def test_pack_unpack_apply_message():
    offset = 100

    def f(a, b, *, scale=1):
        return (a.sum() + b) * scale + offset

    arr = np.ones(BIG // 8)
    frames = pack_apply_message(f, [arr, 2], {"scale": 3})
    assert len(frames) > 1  # the array is out-of-band
    g, args, kwargs = unpack_apply_message(_as_bytearrays(frames))
    assert isinstance(args, tuple) and isinstance(kwargs, dict)
    assert kwargs == {"scale": 3}
    np.testing.assert_array_equal(args[0], arr)
    assert args[0].flags.writeable
    assert g(*args, **kwargs) == (len(arr) + 2) * 3 + 100


def test_pack_apply_message_without_arguments():
    frames = pack_apply_message(lambda: "ok", (), {})
    assert len(frames) == 1
    f, args, kwargs = unpack_apply_message(frames)
    assert (args, kwargs) == ((), {})
    assert f() == "ok"


def test_pack_apply_message_copies_its_containers():
    args, kwargs = [1, 2], {"k": "v"}
    f, a, k = unpack_apply_message(pack_apply_message(max, args, kwargs))
    assert f is max
    assert a == (1, 2) and k == {"k": "v"}
    assert k is not kwargs


def test_large_containers_of_small_objects_skip_the_bytes_scan():
    from ipcluster.protocol.serialize import _holds_large_bytes

    big = b"x" * (1 << 17)
    assert _holds_large_bytes({"ns": {"k": [big]}})
    assert not _holds_large_bytes(list(range(100_000)))
    assert not _holds_large_bytes([[[[[big]]]]])  # deeper than the scan: travels in-band, still correct
    assert deserialize_object(serialize_object([[[[[big]]]]])) == [[[[[big]]]]]
