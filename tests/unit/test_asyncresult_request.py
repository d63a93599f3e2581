"""An AsyncResult that is its request's own future (AsyncResult._for_request), fed hand-made replies."""

import concurrent.futures as cf
import gc
import threading
import weakref

import numpy as np
import pytest

from ipcluster import errors
from ipcluster.client.asyncresult import AsyncResult
from ipcluster.client.tracker import RequestTracker
from tests.unit.test_tracker import FakeClient, output, reply


class AbortingClient(FakeClient):
    def __init__(self, tracker):
        super().__init__(tracker)
        self.aborted = []

    def abort(self, ids, block=None):
        self.aborted.append(list(ids))


def tracked(t, msg_id="m", fname="f"):
    client = AbortingClient(t)
    ar = AsyncResult._for_request(client, fname)
    assert t.register(msg_id, b"sched", None, future=ar) is ar
    return client, ar


def test_it_is_completed_by_the_tracker_like_a_result_over_a_child():
    t = RequestTracker()
    _, ar = tracked(t)
    assert t.futures["m"] is ar and ar.msg_ids == ["m"] and not ar.ready()
    with pytest.raises(errors.TimeoutError):
        ar.get(timeout=0.01)
    t.on_output(output("m", "stream", name="stdout", text="hi"))
    t.on_reply(reply("m", value={"x": 1}))
    assert ar.get(0) == {"x": 1} and ar.successful() and ar.result(0) == {"x": 1}
    assert ar.metadata is t.metadata["m"] and ar.stdout == "hi" and ar.engine_id == 0
    assert ar["stdout"] == "hi" and list(ar) == [{"x": 1}] and len(ar) == 1
    assert ar.serial_time == 1.0 and ar.get_dict(0) == {0: {"x": 1}}
    assert t.results["m"] == {"x": 1} and "m" not in t.futures and not t.outstanding
    assert ar._children == [ar] and repr(ar) == "<AsyncResult(f): finished>"


def test_same_outcomes_as_an_async_result_over_a_separate_future():
    """Each kind of reply gives the same value or error through both constructions."""
    replies = [
        dict(value=[1, 2]),
        dict(status="aborted"),
        dict(status="error", ename="ZeroDivisionError", evalue="division by zero", exc_module="builtins",
             exc_qualname="ZeroDivisionError", engine_info={"engine_id": 0}, traceback=["tb"]),
        dict(status="error", ename="EngineDied", evalue="gone", exc_module="ipcluster.errors",
             exc_qualname="EngineDied", engine_info={"engine_id": 0}),
    ]
    for kw in replies:
        t = RequestTracker()
        _, fast = tracked(t, "a")
        child = t.register("b", b"e", 0)
        slow = AsyncResult(FakeClient(t), ["b"], [child], fname="f", single=True)
        t.on_reply(reply("a", **kw))
        t.on_reply(reply("b", **kw))
        assert fast.done() and slow.done()
        e1, e2 = fast.exception(0), slow.exception(0)
        assert type(e1) is type(e2) and str(e1) == str(e2)
        if e1 is None:
            assert fast.get(0) == slow.get(0)
        else:
            with pytest.raises(type(e1)):
                fast.get(0)


def test_failure_from_the_client_and_callbacks_and_waits():
    t = RequestTracker()
    _, ar = tracked(t)
    seen = []
    ar.add_done_callback(seen.append)
    threading.Timer(0.01, t.fail, ("m", errors.EngineDied("lost", 3, "m"))).start()
    done, _ = cf.wait([ar], timeout=10)
    assert done == {ar} and seen == [ar]
    with pytest.raises(errors.EngineDied):
        ar.get(0)
    assert ar.metadata["status"] == "error"
    assert ar.wait(0) is True


def test_abort_names_the_request_until_it_is_done():
    t = RequestTracker()
    client, ar = tracked(t)
    ar.abort()
    assert client.aborted == [["m"]]
    t.on_reply(reply("m", value=None))
    ar.abort()
    assert client.aborted == [["m"]]  # nothing left to abort


def test_batch_deferral_applies_to_it():
    t = RequestTracker()
    _, ar = tracked(t)
    with t.batch:
        t.on_reply(reply("m", value=5))
        assert not ar.done()
    assert ar.get(0) == 5


def test_no_reference_cycle_keeps_its_value_alive():
    t = RequestTracker(results_max_bytes=0)
    gc.disable()
    try:
        _, ar = tracked(t)
        ar._children  # (the list naming itself must not be kept)
        t.on_reply(reply("m", value=np.zeros(100_000)))
        value = weakref.ref(ar.get(0))
        del ar
        assert value() is None, "the result outlived its AsyncResult (reference cycle)"
    finally:
        gc.enable()


def test_a_result_over_children_that_are_all_done_finishes_at_once():
    t = RequestTracker()
    client = FakeClient(t)
    futs = [t.register(m, b"e", 0) for m in "ab"]
    t.on_reply(reply("a", value=1))
    t.on_reply(reply("b", status="error", ename="KeyError", evalue="'k'", exc_module="builtins",
                     exc_qualname="KeyError", engine_info={"engine_id": 0}))
    ar = AsyncResult(client, ["a", "b"], futs, fname="f")
    assert ar.done()
    with pytest.raises(errors.CompositeError):
        ar.get(0)
    only = AsyncResult(client, ["a"], futs[:1], single=True)
    assert only.done() and only.get(0) == 1
    empty = AsyncResult(client, [], [])
    assert empty.get(0) == []
