"""BroadcastView: one message from the client, fanned out to the engines by the controller."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import ipcluster
from ipcluster import errors
from ipcluster.client.broadcast import BroadcastView
from ipcluster.protocol.messages import BROADCAST
from tests.conftest import wait_for


def _count_sends(rc):
    """Wrap the client's sends; returns the list of (channel, routing id) it records."""
    sent = []
    send = rc._io.send

    def counting_send(channel, frames):
        send(channel, frames)
        sent.append((channel, bytes(frames[0])))

    rc._io.send = counting_send
    return sent


def test_one_message_for_all_engines(rc):
    bv = rc.broadcast_view()
    assert isinstance(bv, BroadcastView)
    sent = _count_sends(rc)
    ar = bv.apply_async(os.getpid)
    pids = ar.get(timeout=10)
    assert sent == [("mux", BROADCAST)], "one request, to the controller's broadcast route"
    assert pids == rc[:].apply_sync(os.getpid)  # one result per engine, in target order
    assert len(set(pids)) == 2
    assert ar.engine_id == [0, 1]


def test_results_follow_target_order(rc):
    bv = rc.broadcast_view(targets=[1, 0])
    assert bv.apply_sync(lambda: os.getpid()) == [rc[1].apply_sync(os.getpid), rc[0].apply_sync(os.getpid)]
    assert rc.broadcast_view(targets=1).apply_sync(lambda x: x * 2, 21) == 42  # an int target: one value


def test_push_pull_and_execute_per_engine(rc):
    bv = rc.broadcast_view()
    bv.block = True
    bv.push({"a": 5})
    assert bv.pull("a") == [5, 5]
    bv["b"] = [1, 2]
    assert bv["b"] == [[1, 2], [1, 2]]
    rc[0].push({"who": "zero"}, block=True)
    rc[1].push({"who": "one"}, block=True)
    ar = bv.execute("print(who)", block=False)
    ar.get(timeout=10)
    assert ar.stdout == ["zero\n", "one\n"]
    ar = bv.apply_async(ipcluster.interactive(lambda: print(who)))  # noqa: F821
    ar.get(timeout=10)
    assert ar.stdout == ["zero\n", "one\n"]


def test_errors_become_a_composite_error(rc):
    bv = rc.broadcast_view()

    def fail_on_one(who):
        if who == "one":
            raise ValueError("engine one refuses")
        return who

    rc[0].push({"who": "zero"}, block=True)
    rc[1].push({"who": "one"}, block=True)
    with pytest.raises(errors.CompositeError) as ei:
        bv.apply_sync(ipcluster.interactive(lambda: fail_on_one(who)))  # noqa: F821
    assert len(ei.value.elist) == 1 and "engine one refuses" in str(ei.value.elist[0])
    assert rc.broadcast_view(targets=0).apply_sync(fail_on_one, "zero") == "zero"


def test_broadcast_does_not_overtake_direct_requests(rc):
    rc[:].push({"seen": []}, block=True)
    record = ipcluster.interactive(lambda i: seen.append(i))  # noqa: F821
    ars = [rc[:].apply_async(record, i) for i in range(50)]  # out on the direct route
    ars.append(rc.broadcast_view().apply_async(record, "broadcast"))
    for ar in ars:
        ar.get(timeout=30)
    assert rc[:].pull("seen", block=True) == [[*range(50), "broadcast"]] * 2


def test_duplicate_targets_are_refused(rc):
    with pytest.raises(ValueError):
        rc.broadcast_view(targets=[0, 0]).apply_async(os.getpid)


def test_part_for_an_unknown_engine_is_an_engine_error(rc):
    """The controller answers for a target it does not know; the other engines still run."""
    rc._engines[99] = b"f" * 32  # as if the client still believed in an engine the controller dropped
    try:
        ar = rc.broadcast_view(targets=[0, 99]).apply_async(lambda: "ran")
        with pytest.raises(errors.CompositeError) as ei:
            ar.get(timeout=10)
    finally:
        del rc._engines[99]
    assert [type(e) for e in ei.value.elist] == [errors.EngineError]
    assert ar._children[0].result() == "ran"
    assert ar.metadata[1]["engine_id"] == 99


def test_queue_status_counts_each_engines_part(fresh_cluster):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    before = rc.queue_status()
    rc.broadcast_view().apply_sync(lambda: None)
    after = rc.queue_status()
    for eid in (0, 1):
        assert after[eid]["completed"] == before[eid]["completed"] + 1
        assert after[eid]["queue"] == 0
    rc.close()


def test_engine_killed_mid_broadcast_fails_only_its_part(fresh_cluster):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    pids = rc[:].apply_sync(os.getpid)
    rc[0].push({"delay": 30}, block=True)
    rc[1].push({"delay": 0}, block=True)
    ar = rc.broadcast_view().apply_async(ipcluster.interactive(lambda: time.sleep(delay) or "done"))  # noqa: F821
    wait_for(lambda: ar._children[1].done(), what="engine 1's part to finish")
    t0 = time.monotonic()
    psutil.Process(pids[0]).send_signal(signal.SIGKILL)
    with pytest.raises(errors.CompositeError) as ei:
        ar.get(timeout=10)
    assert time.monotonic() - t0 < 5
    assert len(ei.value.elist) == 1 and isinstance(ei.value.elist[0], errors.EngineError)
    assert ar._children[1].result() == "done"
    wait_for(lambda: rc.ids == [1], what="engine 0 to be unregistered")
    assert rc.broadcast_view().apply_sync(lambda: "survivor") == ["survivor"]
    rc.close()


def test_abort_reaches_queued_broadcast_parts(rc):
    bview = rc.broadcast_view()
    busy = bview.apply_async(time.sleep, 0.5)  # both engines busy, so the next broadcast waits at them
    later = bview.apply_async(lambda: "never")
    sends = []
    send = rc._io.send
    rc._io.send = lambda channel, frames: (sends.append(channel), send(channel, frames))
    later.abort()
    assert sends.count("control") == 2  # one abort per engine, naming the broadcast request
    with pytest.raises(errors.CompositeError) as ei:
        later.get(timeout=10)
    assert all(isinstance(e, errors.TaskAborted) for e in ei.value.elist)
    busy.get(timeout=10)
