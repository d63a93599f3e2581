"""Replies completed together at the end of a burst (RequestTracker.batch): bookkeeping and order."""

import threading

from ipcluster import errors
from ipcluster.client.asyncresult import AsyncResult
from ipcluster.client.tracker import RequestTracker
from tests.unit.test_tracker import FakeClient, reply


def test_a_second_reply_to_a_request_in_one_burst_changes_nothing():
    t = RequestTracker()
    fut = t.register("m", b"e", 0)
    with t.batch:
        t.on_reply(reply("m", value=1))
        t.on_reply(reply("m", value=2))
    assert fut.result(0) == 1 and t.results["m"] == 1
    assert not t.outstanding and not t.outstanding_on(b"e") and "m" not in t.futures


def test_bookkeeping_is_done_before_the_futures_complete_in_order():
    t = RequestTracker()
    futs = [t.register(f"m{i}", b"e", 0) for i in range(4)]
    seen = []

    def callback(f, i):
        seen.append((i, sorted(t.outstanding)))

    for i, f in enumerate(futs):
        f.add_done_callback(lambda f, i=i: callback(f, i))
    with t.batch:
        for i in (2, 0, 3):
            t.on_reply(reply(f"m{i}", value=i))
    assert [i for i, _ in seen] == [2, 0, 3]  # in the order the replies came
    assert all(outstanding == ["m1"] for _, outstanding in seen)
    assert [f.result(0) for f in futs if f.done()] == [0, 2, 3]


def test_a_request_failed_from_another_thread_during_a_burst_keeps_its_failure():
    t = RequestTracker()
    client = FakeClient(t)
    ar = AsyncResult._for_request(client, "f")
    t.register("m", b"e", 0, future=ar)
    with t.batch:
        t.on_reply(reply("m", value=5))
        other = threading.Thread(target=t.fail, args=("m", errors.EngineDied("gone")))
        other.start()
        other.join(10)
        assert isinstance(ar.exception(0), errors.EngineDied)
    assert isinstance(ar.exception(0), errors.EngineDied)  # the deferred reply came too late
    assert t.results["m"].__class__ is errors.EngineDied and not t.outstanding


def test_results_stay_bounded_when_completed_in_bursts():
    t = RequestTracker(history_max=10)
    for burst in range(5):
        ids = [f"b{burst}-{i}" for i in range(7)]
        for m in ids:
            t.register(m, b"e", 0)
        with t.batch:
            for m in ids:
                t.on_reply(reply(m, value=m))
    assert len(t.results) == 10 and list(t.results)[-1] == "b4-6"
    assert len(t.metadata) <= 20 and not t.outstanding
