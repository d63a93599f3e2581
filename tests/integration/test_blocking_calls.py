"""Blocking calls that the calling thread sends and receives itself (ipcluster/client/blocking.py)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import ipcluster
from ipcluster import errors, interactive
from ipcluster.protocol.messages import SCHEDULER
from tests.conftest import wait_for


def test_blocking_calls_use_the_callers_own_sockets(rc):
    assert rc[0].apply_sync(os.getpid) != os.getpid()
    assert len(rc._blocking._sockets) == 1
    rc[:].apply_sync(lambda: None)
    assert len(rc._blocking._sockets) == 2  # one per engine for this thread
    out = rc[1].execute("print('through the caller')", silent=False, block=True)
    assert out is None
    assert rc.metadata[rc.history[-1]].stdout == "through the caller\n"


def test_each_thread_has_its_own_sockets(rc):
    results = []

    def work():
        results.append(rc[0].apply_sync(interactive(lambda x: x * 2), 21))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [42] * 4
    assert len(rc._blocking._sockets) >= 4


def test_async_requests_outstanding_keep_blocking_calls_in_order(rc):
    """A blocking call to an engine with requests in flight must run after them."""
    rc[0].push({"seen": []}, block=True)
    for i in range(50):
        rc[0].apply_async(interactive(lambda i: seen.append(i)), i)  # noqa: F821
    rc[0].apply_sync(interactive(lambda: seen.append("sync")))  # noqa: F821
    assert rc[0].pull("seen", block=True) == list(range(50)) + ["sync"]


def _slow(path, seconds):
    import pathlib
    import time

    pathlib.Path(path).touch()
    time.sleep(seconds)  # the work being interrupted, not synchronisation
    return "slow done"


def _interrupt_blocking_call(call, marker):
    """Run ``call()``; SIGINT this process once *marker* exists (the task started). Expects the
    KeyboardInterrupt."""

    def interrupt_when_started():
        wait_for(marker.exists, timeout=20, what="the task to start")
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt_when_started)
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        t.join(30)


def test_interrupted_blocking_call_still_completes_and_order_holds(rc, tmp_path):
    marker = tmp_path / "started"
    _interrupt_blocking_call(lambda: rc[0].apply_sync(_slow, str(marker), 1.0), marker)
    interrupted = rc.history[-1]
    assert rc._routes.adopted_count == 1 and rc._routes, "the interrupted call's socket went to the IO thread"
    # the next request follows the interrupted one on the same engine, and both complete
    assert rc[0].apply_sync(lambda: "after") == "after"
    wait_for(lambda: interrupted in rc.results, what="the interrupted call's result")
    assert rc.results[interrupted] == "slow done"
    md = rc.metadata[interrupted]
    assert md.completed <= rc.metadata[rc.history[-1]].started
    wait_for(lambda: not rc._routes, what="the adopted route to be released")
    assert rc[0].apply_sync(lambda: "fast again") == "fast again"


def _die():
    import os

    os._exit(9)


def test_engine_death_during_a_blocking_call(fresh_cluster):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    rc[0].apply_sync(lambda: None)  # the caller's socket to engine 0 exists
    t0 = time.monotonic()
    with pytest.raises(errors.EngineError):
        rc[0].apply_sync(_die)
    assert time.monotonic() - t0 < 2.5
    assert rc[1].apply_sync(lambda: "survivor") == "survivor"
    rc.close()


def test_blocking_direct_calls_use_raw_links(rc):
    """Same-host blocking calls go on the thread's Unix stream sockets to the engines (no zmq);
    output still comes before the reply, large buffers arrive whole and writable."""
    import numpy as np

    assert rc[0].apply_sync(interactive(lambda: print("before") or 5)) == 5
    assert rc.metadata[rc.history[-1]].stdout == "before\n"
    links = rc._blocking._local.links
    assert set(links) == {rc._engines[0]}
    assert rc[:].apply_sync(lambda: 1) == [1, 1]
    assert set(links) == {rc._engines[0], rc._engines[1]}
    a = np.arange(3_000_000, dtype="float64")
    rc[1].push({"a": a}, block=True)
    back = rc[1].pull("a", block=True)
    assert np.array_equal(back, a) and back.flags.writeable
    assert not rc.outstanding


def test_direct_false_never_blocks_on_own_sockets(shared_cluster):
    with ipcluster.Client(url_file=shared_cluster.connection_file, direct=False) as c:
        assert c[0].apply_sync(lambda: 5) == 5
        assert not c._blocking._sockets


def test_blocking_load_balanced_task_uses_the_callers_own_socket(rc):
    lview = rc.load_balanced_view()
    sent = []
    send = rc._io.send
    rc._io.send = lambda channel, frames: (sent.append(channel), send(channel, frames))
    try:
        assert lview.apply_sync(lambda x: x + 1, 1) == 2
        assert "mux" not in sent, "a blocking task does not go through the IO thread"
        # this thread's own connection to the controller: its raw link on the controller's host
        mine = rc._blocking._local.links[SCHEDULER]
        assert lview.apply_sync(lambda: 0) == 0
        assert rc._blocking._local.links[SCHEDULER] is mine  # reused
        ar = lview.apply_async(lambda: "async")  # non-blocking tasks do
        assert ar.get(timeout=10) == "async" and "mux" in sent
    finally:
        del rc._io.send


def test_blocking_load_balanced_reply_comes_straight_from_the_engine(rc, shared_cluster):
    """A successful task without output is answered on the caller's reply socket (connected to the
    local engines), not through the controller; the controller still records the result."""
    lview = rc.load_balanced_view()
    assert lview.apply_sync(lambda: 41) == 41  # makes the reply socket and connects it
    reply_sock, _, connected = rc._blocking._local.reply
    assert connected == set(rc._direct_urls.values()) and len(connected) == 2
    received = []
    handle = rc._on_engine_message
    rc._on_engine_message = lambda frames: (received.append(frames), handle(frames))
    try:
        # the first reply may still go through the controller while the connections come up
        # raw links to both engines: frames come as bytearrays, and without the controller's routing id
        wait_for(lambda: lview.apply_sync(lambda: 42) == 42 and type(received[-1][0]) is bytearray
                 and bytes(received[-1][0]) == b"<IDS|MSG>",
                 what="a reply on the thread's raw link, without the controller's routing id")
    finally:
        del rc._on_engine_message
    msg_id = rc.history[-1]
    assert rc.metadata[msg_id]["status"] == "ok" and not rc.outstanding
    assert reply_sock is rc._blocking._local.reply[0]
    with ipcluster.Client(url_file=shared_cluster.connection_file) as other:  # the controller kept it
        assert other.get_result(msg_id).get(timeout=10) == 42
    assert rc.queue_status()["unassigned"] == 0


def test_blocking_load_balanced_output_and_errors_go_through_the_controller(rc):
    lview = rc.load_balanced_view()
    lview.apply_sync(lambda: None)
    assert lview.apply_sync(interactive(lambda: print("printed") or 3)) == 3
    assert rc.metadata[rc.history[-1]].stdout == "printed\n"  # output arrives before the reply
    with pytest.raises(ZeroDivisionError):
        lview.apply_sync(lambda: 1 / 0)
    with lview.temp_flags(retries=1):
        assert lview.apply_sync(lambda: 5) == 5


def test_interrupted_blocking_load_balanced_task_completes(rc, tmp_path):
    marker = tmp_path / "started"
    _interrupt_blocking_call(lambda: rc.load_balanced_view().apply_sync(_slow, str(marker), 0.5), marker)
    interrupted = rc.history[-1]
    wait_for(lambda: interrupted in rc.results, what="the interrupted task's result")
    assert rc.results[interrupted] == "slow done"
    assert rc.load_balanced_view().apply_sync(lambda: "after") == "after"


def test_ctrl_c_while_a_reply_is_being_handled_loses_nothing(rc):
    """A SIGINT that arrives while the caller's thread handles a message waits until it is recorded."""
    on_output = rc._tracker.on_output
    hits = []

    def interrupted_on_output(msg):
        if not hits:
            hits.append(msg)
            os.kill(os.getpid(), signal.SIGINT)  # Python would raise it at the very next line
        on_output(msg)

    rc._tracker.on_output = interrupted_on_output
    try:
        with pytest.raises(KeyboardInterrupt):
            rc.load_balanced_view().apply_sync(interactive(lambda: print("out") or __import__("time").sleep(0.3)))
    finally:
        del rc._tracker.on_output
    interrupted = rc.history[-1]
    wait_for(lambda: interrupted in rc.results, what="the interrupted task's result")
    assert rc.metadata[interrupted].stdout == "out\n"  # the output being handled was recorded
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
