"""The pool of warm receive buffers (ipcluster/protocol/bufpool.py): reuse only what nothing references."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

from ipcluster.protocol.bufpool import GRANULE, MIN_SIZE, BufferPool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_buffer_is_exactly_the_size_asked_and_writable() -> None:
    pool = BufferPool()
    buf = pool.take(MIN_SIZE + 3)
    assert buf.nbytes == MIN_SIZE + 3 and not buf.readonly
    buf[-1] = 7
    assert pool.sizes() == {"maps": 1, "free": 0, "free_bytes": 0, "bytes": 2 * GRANULE, "shared": 0}


def test_a_map_is_reused_once_nothing_references_it_and_never_before() -> None:
    pool = BufferPool()
    first = pool.take(3 * MIN_SIZE)
    arr = np.frombuffer(first, dtype=np.uint8)  # an array built on it, as unpickling does
    del first
    second = pool.take(3 * MIN_SIZE)  # the first is still in use through arr
    assert pool.created == 2 and pool.reused == 0
    arr[:] = 1
    assert not np.any(np.frombuffer(second, dtype=np.uint8))  # separate memory
    del arr
    gc.collect()
    third = pool.take(3 * MIN_SIZE - 100)
    assert pool.reused == 1 and pool.created == 2
    assert np.frombuffer(third, dtype=np.uint8)[0] == 1  # the same pages: not zeroed again


def test_an_array_unpickled_on_a_pooled_buffer_keeps_it_busy_until_freed() -> None:
    pool = BufferPool()
    src = np.arange(MIN_SIZE // 8 * 2, dtype=np.float64)
    oob: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(src, protocol=5, buffer_callback=oob.append)
    raw = oob[0].raw()
    buf = pool.take(raw.nbytes)
    buf[:] = raw
    out = pickle.loads(stream, buffers=[buf])
    del buf
    assert np.array_equal(out, src) and out.flags.writeable
    assert pool.sizes()["free"] == 0
    view = out[10:20]  # a view of the array keeps it busy too
    del out
    assert pool.sizes()["free"] == 0
    del view
    assert pool.sizes()["free"] == 1


def test_a_small_frame_does_not_take_a_much_larger_free_map() -> None:
    pool = BufferPool()
    del_me = pool.take(16 * MIN_SIZE)
    del del_me
    pool.take(MIN_SIZE)
    assert pool.created == 2 and pool.reused == 0


def test_idle_free_maps_go_at_trim_and_busy_ones_stay() -> None:
    clock = Clock()
    pool = BufferPool(idle_seconds=30.0, clock=clock)
    busy = pool.take(MIN_SIZE)
    idle = pool.take(2 * MIN_SIZE)
    del idle
    clock.now += 29.0
    assert pool.trim() == 0
    clock.now += 2.0
    assert pool.trim() == 1
    assert pool.sizes()["maps"] == 1
    busy[0] = 1  # still usable: never closed while referenced
    del busy
    clock.now += 31.0
    assert pool.trim() == 1 and pool.sizes()["maps"] == 0


def test_free_maps_are_bounded_least_recently_used_first() -> None:
    clock = Clock()
    pool = BufferPool(max_free_bytes=5 * GRANULE, clock=clock)
    a = pool.take(2 * MIN_SIZE)
    clock.now += 1
    b = pool.take(2 * MIN_SIZE)
    del a, b  # two free maps: 4 granules
    clock.now += 1
    # no free map fits (too small): a new one, and room for it once it is free: the oldest goes
    held = pool.take(3 * MIN_SIZE)
    sizes = pool.sizes()
    assert sizes["maps"] == 2 and sizes["free_bytes"] == 2 * GRANULE
    assert held.nbytes == 3 * MIN_SIZE


@pytest.mark.parametrize("size", [MIN_SIZE, MIN_SIZE + 1, 5 * MIN_SIZE - 1])
def test_capacity_is_rounded_to_the_granule(size: int) -> None:
    pool = BufferPool()
    pool.take(size)
    assert pool.sizes()["bytes"] == -(-size // GRANULE) * GRANULE
