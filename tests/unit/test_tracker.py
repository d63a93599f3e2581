"""Client-side request bookkeeping, fed with hand-made messages (no sockets)."""

import time

import pytest

from ipcluster import errors
from ipcluster.client.asyncresult import AsyncMapResult, AsyncResult
from ipcluster.client.tracker import RequestTracker
from ipcluster.protocol.serialize import serialize_object
from ipcluster.protocol.session import Message


def reply(msg_id, status="ok", value=None, msg_type="apply_reply", **content):
    buffers = serialize_object(value) if status == "ok" and msg_type == "apply_reply" else []
    now = time.time()
    return Message({"msg_type": msg_type, "msg_id": "r-" + msg_id}, {"msg_id": msg_id},
                   {"engine_id": 0, "started": now, "completed": now + 1.0}, {"status": status, **content},
                   buffers)


def output(msg_id, msg_type, **content):
    return Message({"msg_type": msg_type, "msg_id": "o"}, {"msg_id": msg_id}, {}, content)


class FakeClient:
    def __init__(self, tracker):
        self.metadata = tracker.metadata

    def abort(self, *a, **k):
        pass


def test_reply_resolves_future_and_records_result_and_metadata():
    t = RequestTracker()
    fut = t.register("m1", b"engine-uuid", 0)
    t.on_output(output("m1", "stream", name="stdout", text="hello "))
    t.on_output(output("m1", "stream", name="stdout", text="world"))
    t.on_output(output("m1", "stream", name="stderr", text="warn"))
    t.on_output(output("m1", "display_data", data={"text/plain": "x"}, metadata={}))
    t.on_reply(reply("m1", value=42))
    assert fut.result(0) == 42
    md = t.metadata["m1"]
    assert (md.stdout, md.stderr, md.completed - md.started) == ("hello world", "warn", 1.0)
    assert md.outputs == [{"data": {"text/plain": "x"}, "metadata": {}}]
    assert t.results["m1"] == 42 and t.outstanding == set() and list(t.history) == ["m1"]


def test_error_reply_raises_original_type_and_remote_error():
    t = RequestTracker()
    fut = t.register("m1", b"e", 3)
    t.on_reply(reply("m1", status="error", ename="ZeroDivisionError", evalue="division by zero",
                     traceback=["Traceback...", "ZeroDivisionError: division by zero"],
                     exc_module="builtins", exc_qualname="ZeroDivisionError",
                     engine_info={"engine_id": 3}))
    exc = fut.exception(0)
    assert isinstance(exc, ZeroDivisionError) and isinstance(exc, errors.RemoteError)
    assert exc.engine_id == 3 and "division by zero" in str(exc)


def test_engine_errors_from_controller_become_engine_error():
    t = RequestTracker()
    fut = t.register("m1", b"e", 1)
    t.on_reply(reply("m1", status="error", ename="EngineDied", evalue="engine 1 stopped",
                     exc_module="ipcluster.errors", exc_qualname="EngineDied",
                     engine_info={"engine_id": 1}))
    exc = fut.exception(0)
    assert isinstance(exc, errors.EngineDied) and exc.engine_id == 1


def test_aborted_reply_and_late_duplicate_reply_ignored():
    t = RequestTracker()
    fut = t.register("m1", b"e", 0)
    t.on_reply(reply("m1", status="aborted"))
    assert isinstance(fut.exception(0), errors.TaskAborted)
    t.on_reply(reply("m1", value=1))  # late: must not raise or change anything
    assert isinstance(fut.exception(0), errors.TaskAborted)


def test_fail_engine_fails_only_that_engines_requests():
    t = RequestTracker()
    a = t.register("a", b"e1", 1)
    b = t.register("b", b"e2", 2)
    assert t.fail_engine(b"e1", lambda m: errors.EngineDied("gone", 1, m)) == 1
    assert isinstance(a.exception(0), errors.EngineDied)
    assert not b.done()
    assert t.fail_all(lambda m: errors.ControllerError("lost")) == 1
    assert isinstance(b.exception(0), errors.ControllerError)


def test_control_requests_are_not_recorded():
    t = RequestTracker()
    fut = t.register("c", b"e", 0, record=False)
    t.on_reply(reply("c", msg_type="clear_reply"))
    assert fut.result(0) is None
    assert not t.history and "c" not in t.results and "c" not in t.metadata


def test_async_result_single_and_composite():
    t = RequestTracker()
    client = FakeClient(t)
    f1, f2 = t.register("a", b"e1", 0), t.register("b", b"e2", 1)
    ar = AsyncResult(client, ["a", "b"], [f1, f2], fname="f")
    assert not ar.ready()
    with pytest.raises(errors.TimeoutError):
        ar.get(timeout=0.01)
    t.on_reply(reply("a", value=1))
    t.on_reply(reply("b", status="error", ename="KeyError", evalue="'k'", exc_module="builtins",
                     exc_qualname="KeyError", engine_info={"engine_id": 1}))
    with pytest.raises(errors.CompositeError) as ei:
        ar.get(0)
    assert isinstance(ei.value.elist[0], KeyError)
    assert not ar.successful()

    f3 = t.register("c", b"e1", 0)
    single = AsyncResult(client, ["c"], [f3], single=True)
    t.on_reply(reply("c", value="x"))
    assert single.get(0) == "x" and single.successful() and single.engine_id == 0
    assert single.wall_time >= 1.0 and single.serial_time == 1.0


def test_async_map_result_joins_chunks_in_order():
    t = RequestTracker()
    client = FakeClient(t)
    futs = [t.register(m, b"e", 0) for m in "abc"]
    amr = AsyncMapResult(client, list("abc"), futs)
    t.on_reply(reply("c", value=[5]))
    t.on_reply(reply("a", value=[1, 2]))
    t.on_reply(reply("b", value=[3, 4]))
    assert amr.get(0) == [1, 2, 3, 4, 5]
    assert list(amr) == [1, 2, 3, 4, 5] and len(amr) == 5


def test_finished_results_are_bounded_but_async_results_keep_theirs():
    t = RequestTracker(results_max_bytes=300_000, history_max=5)
    client = FakeClient(t)
    import numpy as np

    held = []
    for i in range(8):
        m = f"m{i}"
        fut = t.register(m, b"e", 0)
        held.append(AsyncResult(client, [m], [fut], single=True))
        t.on_reply(reply(m, value=np.full(20_000, i)))  # 160 kB of buffers each
    assert list(t.results) == ["m7"]  # 2 x 160 kB would exceed 300 kB
    assert len(t.history) == 5 and t.history[-1] == "m7"
    assert "m0" not in t.metadata
    assert [int(ar.get(0)[0]) for ar in held] == list(range(8))  # still there for their holders
    assert held[0].metadata.completed is not None
    t.purge()
    assert not t.results and not t.metadata


def test_async_result_frees_its_value_without_the_cyclic_gc():
    """No reference cycle may keep a (possibly huge) result alive after the caller drops it."""
    import gc
    import weakref

    import numpy as np

    t = RequestTracker(results_max_bytes=0)
    client = FakeClient(t)
    gc.disable()
    try:
        fut = t.register("m", b"e", 0)
        ar = AsyncResult(client, ["m"], [fut], single=True)
        del fut
        t.on_reply(reply("m", value=np.zeros(100_000)))
        value = weakref.ref(ar.get(0))
        assert value() is not None
        del ar
        assert value() is None, "the result outlived its AsyncResult (reference cycle)"
    finally:
        gc.enable()


def test_replies_in_a_batch_complete_together_at_its_end_in_order():
    t = RequestTracker()
    futs = [t.register(f"m{i}", b"e", 0) for i in range(3)]
    order = []
    for i, f in enumerate(futs):
        f.add_done_callback(lambda _, i=i: order.append(i))
    with t.batch:
        t.on_reply(reply("m0", value=0))
        t.on_reply(reply("m2", value=2))
        assert not any(f.done() for f in futs) and t.outstanding == {"m0", "m1", "m2"}
    assert order == [0, 2] and [f.result(0) for f in futs[::2]] == [0, 2]
    assert t.outstanding == {"m1"} and not futs[1].done()


def test_a_failure_in_a_batch_comes_after_the_replies_already_read():
    t = RequestTracker()
    f1, f2 = t.register("m1", b"e", 0), t.register("m2", b"e", 0)
    with t.batch:
        t.on_reply(reply("m1", value=1))
        assert t.fail_engine(b"e", lambda m: errors.EngineDied(f"{m} lost")) == 2
        assert f1.done() and f2.done()
    assert f1.result(0) == 1  # its reply came first: the engine's death does not replace it
    assert isinstance(f2.exception(0), errors.EngineDied)


def test_a_long_batch_completes_every_max_deferred_replies_and_other_threads_do_not_defer():
    import threading

    from ipcluster.client.tracker import MAX_DEFERRED

    t = RequestTracker()
    futs = [t.register(f"m{i}", b"e", 0) for i in range(MAX_DEFERRED + 1)]
    other = t.register("other", b"e", 0)
    with t.batch:
        for i in range(MAX_DEFERRED):
            t.on_reply(reply(f"m{i}", value=i))
        assert all(f.done() for f in futs[:MAX_DEFERRED])
        t.on_reply(reply(f"m{MAX_DEFERRED}", value=-1))
        assert not futs[-1].done()
        th = threading.Thread(target=t.on_reply, args=(reply("other", value="x"),))
        th.start()
        th.join(10)
        assert other.result(0) == "x"
    assert futs[-1].result(0) == -1


def test_a_reply_handled_by_a_callback_while_a_batch_completes_is_not_lost():
    t = RequestTracker()
    first, second = t.register("m1", b"e", 0), t.register("m2", b"e", 0)
    first.add_done_callback(lambda _: t.on_reply(reply("m2", value=2)))
    with t.batch:
        t.on_reply(reply("m1", value=1))
    assert first.result(0) == 1 and second.result(0) == 2 and not t.outstanding
