"""ViewExecutor: the concurrent.futures.Executor interface over views, on a real cluster."""

from __future__ import annotations

import concurrent.futures
import os
import time

import pytest

from ipcluster import errors
from ipcluster.client.executor import ViewExecutor


def test_submit_returns_future_with_single_value(rc):
    with rc.executor() as ex:
        assert isinstance(ex, ViewExecutor)
        fut = ex.submit(pow, 2, 10)
        assert isinstance(fut, concurrent.futures.Future)
        assert fut.result(timeout=10) == 1024
        assert ex.submit(lambda *a, **k: (a, k), 1, x=2).result(timeout=10) == ((1,), {"x": 2})
        assert ex.submit(os.getpid).result(timeout=10) != os.getpid()


def test_wait_and_as_completed(rc):
    ex = rc.executor()
    futures = [ex.submit(lambda i: (time.sleep(0.02 * (i % 3)), i * i)[1], i) for i in range(10)]
    done, not_done = concurrent.futures.wait(futures, timeout=20)
    assert not not_done and done == set(futures)
    futures = [ex.submit(lambda i: i + 1, i) for i in range(10)]
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=20)) == list(range(1, 11))
    ex.shutdown()


def test_map_in_order_with_chunksize_and_several_iterables(rc):
    with rc.executor() as ex:
        assert list(ex.map(lambda x: x * x, range(30), timeout=20)) == [x * x for x in range(30)]
        assert list(ex.map(lambda x, y: x + y, range(10), range(100), chunksize=4)) == [2 * i for i in range(10)]
        assert list(ex.map(str, iter(range(5)), chunksize=2)) == ["0", "1", "2", "3", "4"]
        assert list(ex.map(str, [])) == []


def test_map_raises_first_error_when_reached(rc):
    def inv(x):
        return 1 / x

    with rc.executor() as ex:
        it = ex.map(inv, [1, 2, 0, 4], chunksize=1)
        assert next(it) == 1.0
        assert next(it) == 0.5
        with pytest.raises(ZeroDivisionError):
            next(it)


def test_map_timeout_counts_from_the_call(rc):
    with rc.executor() as ex:
        start = time.monotonic()
        it = ex.map(time.sleep, [0.0, 1.5], timeout=0.5)
        assert next(it) is None
        with pytest.raises(TimeoutError):
            next(it)
        assert time.monotonic() - start < 1.4
        ex.shutdown(wait=True)  # the sleeping task (too late to abort) is waited for


def test_map_submits_eagerly(rc, tmp_path):
    def touch(i, d=str(tmp_path)):
        import pathlib

        pathlib.Path(d, str(i)).touch()

    ex = rc.executor()
    ex.map(touch, range(4))  # the iterator is never consumed
    ex.shutdown(wait=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0", "1", "2", "3"]


def test_shutdown_refuses_new_work_and_leaves_client_usable(rc):
    ex = rc.executor()
    fut = ex.submit(time.sleep, 0.3)
    ex.shutdown(wait=True)
    assert fut.done() and fut.exception() is None
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 2, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(str, range(3))
    ex.shutdown()  # twice is fine
    assert rc.load_balanced_view().apply_sync(lambda: 7) == 7
    assert rc[:].apply_sync(lambda: 8) == [8, 8]


def test_context_manager_waits_for_futures(rc):
    with rc.executor() as ex:
        futures = [ex.submit(time.sleep, 0.1) for _ in range(4)]
    assert all(f.done() for f in futures)


def test_shutdown_cancel_futures_aborts_queued_work(rc):
    ex = rc.executor()
    running = [ex.submit(time.sleep, 0.5) for _ in range(2)]
    queued = [ex.submit(time.sleep, 0.5) for _ in range(6)]
    start = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - start < 2.5  # not 4 x 0.5 s of queued sleeps
    assert all(f.done() for f in running + queued)
    aborted = [f for f in running + queued if isinstance(f.exception(), errors.TaskAborted)]
    assert len(aborted) >= 4
    assert rc.load_balanced_view().apply_sync(lambda: "still usable") == "still usable"


def test_remote_error_keeps_its_type(rc):
    with rc.executor() as ex:
        fut = ex.submit(lambda: {}["missing"])
        with pytest.raises(KeyError):
            fut.result(timeout=10)
        assert isinstance(fut.exception(), errors.RemoteError)


def test_executor_targets_and_view_executor(rc):
    pid1 = rc[1].apply_sync(os.getpid)
    with rc.executor(targets=[1]) as ex:
        assert {ex.submit(os.getpid).result(timeout=10) for _ in range(6)} == {pid1}
    with rc[0].executor as ex:  # a DirectView on one engine: single values
        assert ex.submit(lambda: 5).result(timeout=10) == 5
        assert list(ex.map(lambda x: -x, range(5), chunksize=100)) == [0, -1, -2, -3, -4]
    with rc[:].executor as ex:  # a DirectView on all engines: one value per engine
        assert ex.submit(lambda: 1).result(timeout=10) == [1, 1]
        assert list(ex.map(lambda x: x * 2, range(7))) == [0, 2, 4, 6, 8, 10, 12]
    with rc.load_balanced_view().executor as ex:
        assert ex.submit(lambda: 9).result(timeout=10) == 9
