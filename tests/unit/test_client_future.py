"""LightFuture behaves as concurrent.futures.Future, for its own methods and for wait/as_completed/asyncio."""

import asyncio
import concurrent.futures as cf
import logging
import threading

import pytest

from ipcluster.client.future import LightFuture

KINDS = [cf.Future, LightFuture]


def strip_id(fut):
    return repr(fut).replace(hex(id(fut)), "ID").replace(type(fut).__name__, "F")


@pytest.mark.parametrize("kind", KINDS)
def test_states_results_and_errors_match_the_standard_future(kind):
    f = kind()
    assert (f.done(), f.running(), f.cancelled()) == (False, False, False)
    with pytest.raises(cf.TimeoutError):
        f.result(0)
    with pytest.raises(cf.TimeoutError):
        f.exception(0.001)
    f.set_result([1])
    assert f.done() and f.result() == [1] and f.exception() is None
    with pytest.raises(cf.InvalidStateError):
        f.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())
    assert not f.cancel() and not f.cancelled()

    g = kind()
    err = KeyError("k")
    g.set_exception(err)
    assert g.exception(0) is err
    with pytest.raises(KeyError):
        g.result(0)


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_and_running_states(kind):
    f = kind()
    seen = []
    f.add_done_callback(seen.append)
    assert f.cancel() and f.cancelled() and f.done() and seen == [f]
    assert f.cancel()  # again: still cancelled
    with pytest.raises(cf.CancelledError):
        f.result(0)
    with pytest.raises(cf.CancelledError):
        f.exception(0)
    assert f.set_running_or_notify_cancel() is False

    r = kind()
    assert r.set_running_or_notify_cancel() is True and r.running() and not r.cancel()
    with pytest.raises(RuntimeError):
        r.set_running_or_notify_cancel()
    r.set_result(None)
    assert r.done() and not r.running()


def test_repr_is_the_standard_text():
    for setup in (lambda f: None, lambda f: f.set_result(3), lambda f: f.set_exception(OSError()),
                  lambda f: f.cancel(), lambda f: f.set_running_or_notify_cancel()):
        std, light = cf.Future(), LightFuture()
        setup(std)
        setup(light)
        assert strip_id(light) == strip_id(std)


@pytest.mark.parametrize("kind", KINDS)
def test_callbacks_run_in_order_and_at_once_when_done_and_failures_are_logged(kind, caplog):
    f = kind()
    order = []
    f.add_done_callback(lambda _: order.append(1))
    f.add_done_callback(lambda _: 1 / 0)
    f.add_done_callback(lambda _: order.append(2))
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result(None)
    assert order == [1, 2]
    assert "exception calling callback" in caplog.text
    f.add_done_callback(lambda _: order.append(3))
    assert order == [1, 2, 3]


def test_no_condition_is_built_unless_something_waits():
    f = LightFuture()
    f.add_done_callback(lambda _: None)
    f.set_result(1)
    assert f.result() == 1 and f.done() and f._cond is None
    g = LightFuture()
    with pytest.raises(cf.TimeoutError):
        g.result(0)
    assert g._cond is not None  # a wait that had to wait builds it


def test_a_waiting_thread_is_woken_by_the_result():
    f = LightFuture()
    started = threading.Event()
    got = []

    def waiter():
        started.set()
        got.append(f.result(timeout=10))

    t = threading.Thread(target=waiter)
    t.start()
    started.wait(10)
    # (whether the waiter is already inside result() or not, it must get the value)
    f.set_result("v")
    t.join(10)
    assert got == ["v"]


def test_many_racing_waiters_and_setters_never_lose_a_wakeup():
    """A setter racing the first waiter (who builds the condition) must not leave it asleep."""
    for _ in range(300):
        f = LightFuture()
        out = []
        threads = [threading.Thread(target=lambda: out.append(f.result(timeout=10))) for _ in range(3)]
        threads.append(threading.Thread(target=lambda: f.set_result(7)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert out == [7, 7, 7]


def test_wait_and_as_completed_work_with_light_and_standard_futures():
    a, b, c = LightFuture(), LightFuture(), cf.Future()
    done, pending = cf.wait([a, b, c], timeout=0)
    assert not done and len(pending) == 3
    threading.Timer(0.01, b.set_result, (2,)).start()
    done, pending = cf.wait([a, b, c], return_when=cf.FIRST_COMPLETED, timeout=10)
    assert done == {b} and pending == {a, c}
    threading.Timer(0.01, a.set_exception, (ValueError("x"),)).start()
    done, pending = cf.wait([a, c], return_when=cf.FIRST_EXCEPTION, timeout=10)
    assert done == {a}
    c.set_result(3)
    assert set(cf.as_completed([a, b, c], timeout=10)) == {a, b, c}
    d = LightFuture()
    threading.Timer(0.01, d.set_result, (4,)).start()
    assert [f.result() for f in cf.as_completed([d], timeout=10)] == [4]
    e = LightFuture()
    e.cancel()
    threading.Timer(0.01, e.set_running_or_notify_cancel).start()
    done, _ = cf.wait([e], timeout=10)
    assert done == {e}


def test_asyncio_can_await_it():
    f = LightFuture()

    async def main():
        asyncio.get_running_loop().call_later(0.01, f.set_result, "ok")
        return await asyncio.wrap_future(f)

    assert asyncio.run(main()) == "ok"
