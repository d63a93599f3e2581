"""Coalesced broadcasts: the controller answers one broadcast with one message."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import ipcluster
from ipcluster import errors
from ipcluster.protocol.messages import BROADCAST_REPLY
from tests.conftest import wait_for


def _count_replies(rc):
    """Record the msg_type of every message the client receives on its mux socket."""
    seen = []
    decode = rc._decode

    def counting_decode(frames, route):
        msg = decode(frames, route)
        if msg is not None and route == "mux":
            seen.append(msg.msg_type)
        return msg

    rc._decode = counting_decode
    return seen


def test_one_reply_message_for_all_engines(rc):
    bv = rc.broadcast_view(is_coalescing=True)
    seen = _count_replies(rc)
    try:
        pids = bv.apply_sync(os.getpid)
    finally:
        del rc._decode
    assert pids == rc[:].apply_sync(os.getpid)
    assert seen == [BROADCAST_REPLY], "the replies came back as one message"
    # the flag is a view flag like block
    bv.set_flags(is_coalescing=False)
    assert bv.apply_sync(lambda: 1) == [1, 1]


def test_results_outputs_and_errors_per_engine(rc):
    bv = rc.broadcast_view(is_coalescing=True, targets=[1, 0])
    rc[0].push({"who": "zero"}, block=True)
    rc[1].push({"who": "one"}, block=True)
    ar = bv.execute("print(who)", block=False)
    ar.get(timeout=10)
    assert ar.stdout == ["one\n", "zero\n"]  # outputs arrive before the coalesced reply
    assert ar.engine_id == [1, 0]

    def fail_on_one(who):
        if who == "one":
            raise ValueError("engine one refuses")
        return who

    ar = bv.apply_async(ipcluster.interactive(lambda: fail_on_one(who)))  # noqa: F821
    with pytest.raises(errors.CompositeError) as ei:
        ar.get(timeout=10)
    assert len(ei.value.elist) == 1 and "engine one refuses" in str(ei.value.elist[0])
    assert ar._children[1].result() == "zero"


def test_unknown_engine_part_is_coalesced_too(rc):
    rc._engines[99] = b"f" * 32
    seen = _count_replies(rc)
    try:
        ar = rc.broadcast_view(targets=[99, 0], is_coalescing=True).apply_async(lambda: "ran")
        with pytest.raises(errors.CompositeError) as ei:
            ar.get(timeout=10)
    finally:
        del rc._engines[99]
        del rc._decode
    assert [type(e) for e in ei.value.elist] == [errors.EngineError]
    assert ar._children[1].result() == "ran"
    assert seen == [BROADCAST_REPLY]


def test_every_target_unknown_still_answers(rc):
    rc._engines[98], rc._engines[99] = b"e" * 32, b"f" * 32
    try:
        ar = rc.broadcast_view(targets=[98, 99], is_coalescing=True).apply_async(lambda: "ran")
        with pytest.raises(errors.CompositeError) as ei:
            ar.get(timeout=10)
    finally:
        del rc._engines[98], rc._engines[99]
    assert [type(e) for e in ei.value.elist] == [errors.EngineError, errors.EngineError]


def test_engine_killed_mid_coalesced_broadcast(fresh_cluster):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    pids = rc[:].apply_sync(os.getpid)
    rc[0].push({"delay": 30}, block=True)
    rc[1].push({"delay": 0}, block=True)
    started = rc[1].apply_sync(time.time)
    ar = rc.broadcast_view(is_coalescing=True).apply_async(
        ipcluster.interactive(lambda: time.sleep(delay) or "done"))  # noqa: F821
    # engine 1 has answered (its part waits in the controller) once engine 0 runs the sleep
    wait_for(lambda: rc.queue_status()[1]["queue"] == 0 and rc.queue_status()[0]["queue"] == 1,
             what="engine 1 to finish its part")
    assert not ar.done()
    t0 = time.monotonic()
    psutil.Process(pids[0]).send_signal(signal.SIGKILL)
    with pytest.raises(errors.CompositeError) as ei:
        ar.get(timeout=10)
    assert time.monotonic() - t0 < 5
    assert len(ei.value.elist) == 1 and isinstance(ei.value.elist[0], errors.EngineError)
    assert ar._children[1].result() == "done"
    assert ar.metadata[1]["completed"] >= started
    rc.close()
