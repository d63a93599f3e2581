"""Small tasks batched on the wire (``ipcluster.protocol.batch``): a task inside a batch behaves
exactly as it would alone — results, order, failures, retries, dependencies, time limits, aborts,
engine deaths, a controller restart — and a bad batch is refused cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any, Iterator

import pytest
import zmq

import ipcluster
from ipcluster import errors
from ipcluster.protocol import batch as batching
from ipcluster.protocol.serialize import deserialize_object, pack_apply_message
from ipcluster.protocol.session import Session
from tests.conftest import alive, wait_for
from tests.integration.atmostonce import assert_each_ran_at_most_once, record_call


@contextlib.contextmanager
def held_io(rc: ipcluster.Client) -> Iterator[None]:
    """Keep the client's IO thread busy meanwhile: what is submitted is queued, then sent together."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(20)

    rc._io.loop.call_soon_threadsafe(hold)
    assert entered.wait(10), "the IO thread did not come round"
    try:
        yield
    finally:
        release.set()


def _batches(rc: ipcluster.Client) -> dict[str, int]:
    return rc.controller_state()["batches"]


def square_and_note(i: int) -> int:
    """Runs on an engine: remembers the order it ran its tasks in."""
    import builtins

    seen = getattr(builtins, "_batch_test_order", None)
    if seen is None:
        seen = builtins._batch_test_order = []  # type: ignore[attr-defined]
    seen.append(i)
    if i % 7 == 3:
        raise ValueError(f"task {i} fails")
    return i * i


def _order() -> list[int]:
    import builtins

    return list(getattr(builtins, "_batch_test_order", []))


def test_batched_tasks_give_the_same_results_in_the_same_order(rc):
    lview = rc.load_balanced_view()
    rc[:].apply_sync(_reset_order)
    before = _batches(rc)
    n = 300
    with held_io(rc):
        ars = [lview.apply_async(square_and_note, i) for i in range(n)]
    for i, ar in enumerate(ars):
        if i % 7 == 3:
            with pytest.raises(ValueError, match=f"task {i} fails"):
                ar.get(timeout=30)
        else:
            assert ar.get(timeout=30) == i * i
    after = _batches(rc)
    # 300 queued tasks went in batches of at most 16, and the controller passed them on in batches
    assert after["received"] - before["received"] >= n // 16
    assert after["parts_received"] - before["parts_received"] == n
    assert after["to_engines"] > before["to_engines"]
    # each engine ran its share in the order the tasks were submitted
    orders = rc[:].apply_sync(_order)
    assert sorted(i for o in orders for i in o) == list(range(n))
    for o in orders:
        assert o == sorted(o)
    # the controller's records: one per task, in submission order
    hist = rc.hub_history()
    ids = [ar.msg_ids[0] for ar in ars]
    assert [m for m in hist if m in set(ids)] == ids


def test_a_lone_task_is_never_batched(rc):
    """Nothing waits for a batch to fill: one task at a time goes alone on every hop."""
    lview = rc.load_balanced_view()
    before = _batches(rc)
    for i in range(5):
        assert lview.apply_async(pow, i, 2).get(timeout=10) == i * i
    after = _batches(rc)
    assert {k: after[k] - before[k] for k in after} == {k: 0 for k in after}


def test_requests_to_named_engines_and_broadcasts_in_a_batch(shared_cluster):
    """A client without the direct route sends DirectView requests through the controller: queued
    ones go in batches too, and each engine runs its own in the order they were sent."""
    rc = ipcluster.Client(url_file=shared_cluster.connection_file, direct=False)
    try:
        rc.wait_for_engines(2, timeout=30)
        rc[:].apply_sync(_reset_order)
        before = _batches(rc)
        with held_io(rc):
            ars = [rc[i % 2].apply_async(square_and_note, 7 * i + 1) for i in range(100)]
            everywhere = rc.broadcast_view().apply_async(_order)
            more = [rc[i % 2].apply_async(pow, i, 2) for i in range(20)]
        assert [ar.get(timeout=30) for ar in ars] == [(7 * i + 1) ** 2 for i in range(100)]
        assert [ar.get(timeout=30) for ar in more] == [i * i for i in range(20)]
        # the broadcast ran on each engine after the requests sent to it before it, and before the later ones
        seen = everywhere.get(timeout=30)
        assert seen == [[7 * i + 1 for i in range(e, 100, 2)] for e in (0, 1)]
        after = _batches(rc)
        assert after["parts_received"] - before["parts_received"] == 121
        assert after["to_engines"] > before["to_engines"]
    finally:
        rc.close()


def _reset_order() -> None:
    import builtins

    builtins._batch_test_order = []  # type: ignore[attr-defined]


def test_replies_come_back_in_batches(rc):
    lview = rc.load_balanced_view()
    before = _batches(rc)
    ars = [lview.apply_async(pow, i, 2) for i in range(3000)]
    assert [ar.get(timeout=60) for ar in ars] == [i * i for i in range(3000)]
    after = _batches(rc)
    assert after["to_clients"] > before["to_clients"]  # the controller's replies to this client
    assert after["from_engines"] > before["from_engines"]  # the engines' replies to the controller


def _flaky(marker: str) -> str:
    import pathlib

    p = pathlib.Path(marker)
    if not p.exists():
        p.touch()
        raise RuntimeError("first attempt fails")
    return "retried"


def _sleep(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "slept"


def _touch_and_wait(path: str, gate: str) -> str:
    import os
    import pathlib
    import time

    pathlib.Path(path).touch()
    while not os.path.exists(gate):
        time.sleep(0.005)
    return "ran"


def test_failures_retries_dependencies_and_time_limits_inside_a_batch(rc, tmp_path):
    lview = rc.load_balanced_view()
    with held_io(rc):
        first = lview.apply_async(lambda: "first")
        with lview.temp_flags(retries=1):
            retried = lview.apply_async(_flaky, str(tmp_path / "flaky"))
        failing = lview.apply_async(lambda: 1 / 0)
        with lview.temp_flags(after=first):
            after_ok = lview.apply_async(lambda: "after first")
        with lview.temp_flags(after=failing):  # only success counts: can never run
            after_failed = lview.apply_async(lambda: "never")
        with lview.temp_flags(follow=first):
            follower = lview.apply_async(lambda: "followed")
        with lview.temp_flags(time_limit=0.5):
            limited = lview.apply_async(_sleep, 30)
        plain = [lview.apply_async(pow, i, 3) for i in range(20)]
    assert first.get(timeout=30) == "first"
    assert retried.get(timeout=30) == "retried"
    with pytest.raises(ZeroDivisionError):
        failing.get(timeout=30)
    assert after_ok.get(timeout=30) == "after first"
    with pytest.raises(errors.ImpossibleDependency):
        after_failed.get(timeout=30)
    assert follower.get(timeout=30) == "followed"
    assert follower.engine_id == first.engine_id
    with pytest.raises(errors.TaskTimeout):
        limited.get(timeout=30)
    assert [ar.get(timeout=30) for ar in plain] == [i ** 3 for i in range(20)]
    wait_for(lambda: rc.ids == [0, 1], timeout=20, what="both engines registered")


def test_a_long_task_in_a_batch_does_not_hold_back_the_results_before_it(rc, tmp_path):
    lview = rc.load_balanced_view(targets=[0])
    gate = tmp_path / "gate"
    with held_io(rc):
        quick = [lview.apply_async(pow, i, 2) for i in range(5)]
        slow = lview.apply_async(_touch_and_wait, str(tmp_path / "started"), str(gate))
    try:
        # the engine holds the quick replies to send them together, but not while the slow one runs
        assert [ar.get(timeout=20) for ar in quick] == [i * i for i in range(5)]
        assert not slow.done()
    finally:
        gate.touch()
    assert slow.get(timeout=20) == "ran"


def test_abort_of_tasks_that_came_in_a_batch(rc, tmp_path):
    lview = rc.load_balanced_view(targets=[0])
    marker, gate = tmp_path / "running", tmp_path / "gate"
    with held_io(rc):
        running = lview.apply_async(_touch_and_wait, str(marker), str(gate))
        queued = [lview.apply_async(lambda i=i: i) for i in range(10)]
    wait_for(marker.exists, what="the first task to run")
    rc.abort(queued[3:6])
    gate.touch()
    assert running.get(timeout=30) == "ran"
    for i, ar in enumerate(queued):
        if 3 <= i < 6:
            with pytest.raises(errors.TaskAborted):
                ar.get(timeout=30)
        else:
            assert ar.get(timeout=30) == i


def test_abort_waits_for_the_engine_to_confirm_but_not_forever(fresh_cluster, tmp_path):
    """abort() returns once the engines the abort went to confirmed it; an engine that cannot
    answer (stopped here) is waited for at most ABORT_CONFIRM seconds."""
    from controller.hub import ABORT_CONFIRM

    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    pid = rc[0].apply_sync(os.getpid)
    lview = rc.load_balanced_view(targets=[0])
    marker, gate = tmp_path / "running", tmp_path / "gate"
    running = lview.apply_async(_touch_and_wait, str(marker), str(gate))
    queued = [lview.apply_async(lambda i=i: i) for i in range(3)]
    wait_for(marker.exists, what="the first task to run")
    # the queued tasks are on the engine (no limit per engine), so the abort goes to it
    wait_for(lambda: rc.queue_status()["unassigned"] == 0, what="the tasks to be sent to the engine")
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        rc.abort(queued)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ABORT_CONFIRM * 0.9 <= took < ABORT_CONFIRM + 5, took
    gate.touch()
    assert running.get(timeout=30) == "ran"
    for i, ar in enumerate(queued):  # the abort reached the engine late: aborted, or ran
        try:
            assert ar.get(timeout=30) == i
        except errors.TaskAborted:
            pass
    assert rc.controller_state()["violations"] == []


def test_bad_batches_and_bad_parts_are_refused_cleanly(rc):
    """A client-built batch: a part with a wrong signature is dropped (the others run), and a batch
    with a wrong signature, a descriptor that does not fit its blob, or a batch inside it is refused."""
    info = rc.connection_info
    session = Session(info.key_bytes)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(info.url("mux_front"))
    md = {"targets": None, "retries": 0, "timeout": None, "after": None, "follow": None}

    def task(x: int) -> list[Any]:
        return session.serialize("apply_request", {}, metadata=md, buffers=pack_apply_message(pow, (x, 2), {}),
                                 idents=[b"scheduler"])

    def replies(n: int, timeout: float = 20) -> dict[str, Any]:
        """The next *n* replies, by parent msg_id (unpacking the controller's batches)."""
        out: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert sock.poll(max(1, int((deadline - time.monotonic()) * 1000))), f"only {len(out)} of {n} replies"
            frames = sock.recv_multipart()
            msg = session.deserialize(frames)
            for m in ([session.deserialize(p, presigned=True) for p in batching.unpack(msg)]
                      if msg.msg_type == batching.BATCH else [msg]):
                out[m.parent_id] = deserialize_object(m.buffers) if m.content["status"] == "ok" else m.content
        return out

    def dropped() -> dict[str, int]:
        d = rc.controller_state()["dropped"]
        return {**d["session"], **d["routes"].get("mux_front", {})}

    try:
        before = dropped()
        good1, bad, good2 = task(3), task(4), task(5)
        bad[2] = b"0" * len(bad[2])  # a part whose own signature is wrong
        sock.send_multipart(batching.pack(session, [good1, bad, good2], [batching.BATCH_TARGET]))
        got = replies(2)
        ids = [session.deserialize(f).msg_id for f in (good1, good2)]
        assert got == {ids[0]: 9, ids[1]: 25}
        wait_for(lambda: dropped().get("signature", 0) == before.get("signature", 0) + 1,
                 what="the bad part to be counted")

        before = dropped()
        wrong = batching.pack(session, [task(6), task(7)], [batching.BATCH_TARGET])
        wrong[2] = b"0" * len(wrong[2])  # the batch's own signature
        sock.send_multipart(wrong)
        misfit = batching.pack(session, [task(8), task(9)], [batching.BATCH_TARGET])
        blob = misfit[-1]
        misfit = session.serialize(batching.BATCH, {"parts": [[1, 9, 64, 10, 2, 2, 2]]}, buffers=[blob],
                                   idents=[batching.BATCH_TARGET])
        sock.send_multipart(misfit)
        inner = batching.pack(session, [task(10), task(11)], [batching.BATCH_TARGET])
        nested = batching.pack(session, [inner, task(12)], [batching.BATCH_TARGET])
        sock.send_multipart(nested)
        assert replies(1).popitem()[1] == 144  # only task 12 of all these ran
        wait_for(lambda: dropped().get("signature", 0) == before.get("signature", 0) + 1
                 and dropped().get("MalformedMessage", 0) == before.get("MalformedMessage", 0) + 1
                 and dropped().get("a batch inside a batch", 0) == before.get("a batch inside a batch", 0) + 1,
                 what="the refused batches to be counted")
        assert not sock.poll(300), "a refused batch was answered"
        state = rc.controller_state()
        assert not state["dropped"]["handler_errors"] and not state["violations"]
        # the cluster goes on as before
        assert rc.load_balanced_view().apply_sync(pow, 2, 5) == 32
    finally:
        sock.close()


def _crash_when(gate: str) -> None:
    import os
    import time

    while not os.path.exists(gate):
        time.sleep(0.005)
    os._exit(3)


def test_engine_death_mid_batch_fails_exactly_the_tasks_it_owed(fresh_cluster, tmp_path):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    lview = rc.load_balanced_view(targets=[0])
    gate = tmp_path / "gate"
    before = _batches(rc)
    with held_io(rc):
        done = [lview.apply_async(pow, i, 2) for i in range(5)]
        crash = lview.apply_async(_crash_when, str(gate))
        behind = [lview.apply_async(pow, i, 3) for i in range(5)]
    # the tasks before the crash have answered before it happens: their replies are out
    assert [ar.get(timeout=30) for ar in done] == [i * i for i in range(5)]
    assert _batches(rc)["to_engines"] > before["to_engines"]
    gate.touch()
    with pytest.raises(errors.EngineDied):
        crash.get(timeout=20)
    for ar in behind:  # sent to engine 0 in the same batch, never run: no retries, so they fail
        with pytest.raises(errors.EngineDied):
            ar.get(timeout=20)
    assert all(ar.successful() for ar in done)
    assert rc.load_balanced_view().apply_sync(pow, 3, 3) == 27
    rc.close()



@pytest.mark.slow
@pytest.mark.timeout(180)
def test_controller_restart_with_batches_gives_each_result_once(tmp_path):
    pdir = tmp_path / "profile"
    pdir.mkdir()
    (pdir / "ipcontroller_config.py").write_text("c.IPController.heartbeat_period = 0.2\n")
    c = ipcluster.Cluster(n=2, profile_dir=str(pdir), persist=True, log_level="INFO")
    where = tmp_path / "calls"
    where.mkdir()
    try:
        rc = c.start_and_connect_sync()
        lview = rc.load_balanced_view()
        n = 3000
        with held_io(rc):
            ars = [lview.apply_async(record_call, i, str(where)) for i in range(n)]
        wait_for(lambda: sum(a.done() for a in ars) >= n // 4, 60, what="a quarter of the tasks")
        assert _batches(rc)["received"] >= n // 4 // 16
        pid = c.controller.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10, what="the controller to die")
        wait_for(lambda: c.controller is not None and c.controller.pid != pid and c.controller.running, 20,
                 what="the controller to be restarted")
        wait_for(lambda: all(a.done() for a in ars), 60, what="every task to finish or fail")
        ok = 0
        for i, a in enumerate(ars):
            try:
                assert a.get(0) == 2 * i
                ok += 1
            except errors.ControllerRestarted:
                pass  # failed clearly: never ran, or its reply was lost with the controller
        assert ok >= n // 2, f"only {ok} of {n} results"
        assert_each_ran_at_most_once(where, ars)
        # each result once: get_result of a finished task gives the same value again
        sample = [ars[i].msg_ids[0] for i in range(0, n, 97) if ars[i].successful()]
        again = rc.get_result(sample).get(timeout=30)
        assert again == [2 * i for i in range(0, n, 97) if ars[i].successful()]
        rc.close()
    finally:
        c.stop_cluster_sync()
