"""DirectView and AsyncResult against a real controller and engines."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import time

import numpy as np
import pytest

import ipcluster
from ipcluster import errors, interactive
from tests.conftest import wait_for


def test_ids_indexing_and_len(rc):
    assert rc.ids == [0, 1] and len(rc) == 2
    assert rc[0].targets == 0 and rc[-1].targets == 1
    assert rc[::2].targets == [0] and rc[:].targets == [0, 1]
    assert rc.direct_view().targets == "all"
    with pytest.raises(errors.NoEnginesRegistered, match="engine 7"):
        rc[7]


def test_apply_sync_single_and_all(rc):
    assert rc[0].apply_sync(lambda x, y=1: x + y, 41) == 42
    pids = rc[:].apply_sync(os.getpid)
    assert len(set(pids)) == 2 and os.getpid() not in pids


def test_apply_async_is_a_future_and_awaitable(rc):
    ars = [rc[0].apply_async(time.sleep, 0.01), rc[1].apply_async(lambda: "b")]
    assert all(isinstance(ar, concurrent.futures.Future) for ar in ars)
    done, _ = concurrent.futures.wait(ars, timeout=10)
    assert len(done) == 2
    assert [ar.get() for ar in concurrent.futures.as_completed(ars, timeout=10)].count("b") == 1

    async def main():
        return await rc[1].apply_async(lambda: "awaited")

    assert asyncio.run(main()) == "awaited"


def test_client_inside_a_running_event_loop(shared_cluster):
    async def main():
        with ipcluster.Client(url_file=shared_cluster.connection_file) as c:
            return c[0].apply_sync(lambda: 7)

    assert asyncio.run(main()) == 7


def test_block_flag_and_temp_flags(rc):
    dv = rc[:]
    assert isinstance(dv.apply(lambda: 1), ipcluster.AsyncResult)
    with dv.temp_flags(block=True):
        assert dv.apply(lambda: 1) == [1, 1]
    assert dv.block is False
    dv.set_flags(block=True)
    assert dv.apply(lambda: 2) == [2, 2]
    with pytest.raises(KeyError, match="invalid view flag"):
        dv.set_flags(bogus=1)


def test_push_pull_and_dict_access(rc):
    dv = rc[:]
    dv.push({"a": 1, "b": [1, 2]}, block=True)
    assert dv.pull("a", block=True) == [1, 1]
    assert dv.pull(["a", "b"], block=True) == [[1, [1, 2]], [1, [1, 2]]]
    dv["c"] = "x"
    assert dv["c"] == ["x", "x"]
    rc[1]["d"] = 4
    assert rc[1]["d"] == 4
    # interactive functions (as if defined in __main__) see the engine namespace as globals
    assert dv.apply_sync(interactive(lambda: a + 1)) == [2, 2]  # noqa: F821
    with pytest.raises(ValueError, match="not valid Python names"):
        dv.push({"not a name": 1})


def test_pull_missing_name_raises_name_error(rc):
    with pytest.raises(NameError) as ei:
        rc[0].pull("nope", block=True)
    assert isinstance(ei.value, errors.RemoteError)
    assert ei.value.engine_id == 0


def test_clear_empties_namespace(rc):
    rc[:].push({"z": 1}, block=True)
    rc.clear(block=True)
    with pytest.raises(errors.CompositeError):
        rc[:].pull("z", block=True)


def test_execute_output_magics_and_result(rc):
    ar = rc[:].execute("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n%config\n6 * 7",
                       silent=False, block=False)
    ar.get(timeout=30)
    assert all(s.startswith("hello\n") for s in ar.stdout)
    assert ar.stderr == ["oops\n", "oops\n"]
    assert [r["data"]["text/plain"] for r in ar.execute_result] == ["42", "42"]
    rc[0].execute("%load_ext autoreload", block=True)


def test_output_arrives_before_the_reply(rc):
    """A client that has the reply has all the output: no waiting for stragglers."""
    for _ in range(20):
        ar = rc[0].execute("for i in range(2000): print(i)", block=False)
        ar.get(timeout=30)
        assert ar.stdout.count("\n") == 2000


def test_execute_error_raises_original_type(rc):
    with pytest.raises(errors.CompositeError) as ei:
        rc[:].execute("1/0", block=True)
    assert all(isinstance(e, ZeroDivisionError) for e in ei.value.elist)
    with pytest.raises(ZeroDivisionError):
        rc[0].execute("1/0", block=True)


def test_run_file(rc, tmp_path):
    script = tmp_path / "script.py"
    script.write_text("ran = 'yes'\n")
    rc[:].run(script, block=True)
    assert rc[:].pull("ran", block=True) == ["yes", "yes"]


def test_remote_error_keeps_type_traceback_and_engine(rc):
    def fails(d):
        return d["missing"]

    with pytest.raises(KeyError) as ei:
        rc[1].apply_sync(fails, {})
    err = ei.value
    assert isinstance(err, errors.RemoteError) and err.engine_id == 1
    assert err.ename == "KeyError" and "fails" in err.traceback
    assert "return d[\"missing\"]" in err.traceback or "missing" in err.traceback
    with pytest.raises(errors.CompositeError) as ci:
        rc[:].apply_sync(lambda: 1 / 0)
    assert len(ci.value.elist) == 2 and "ZeroDivisionError" in str(ci.value)


def test_unpicklable_result_is_an_error_not_a_hang(rc):
    import threading

    with pytest.raises(errors.RemoteError):
        rc[0].apply_async(threading.Lock).get(timeout=10)
    assert rc[0].apply_sync(lambda: "still fine") == "still fine"


def test_scatter_gather_lists_and_arrays(rc):
    dv = rc[:]
    dv.scatter("part", list(range(7)), block=True)
    assert dv.pull("part", block=True) == [[0, 1, 2, 3], [4, 5, 6]]
    assert dv.gather("part", block=True) == list(range(7))
    dv.scatter("one", [10, 20], flatten=True, block=True)
    assert dv.pull("one", block=True) == [10, 20]
    a = np.arange(1_000_001, dtype=np.float64)
    dv.scatter("arr", a, block=True)
    assert dv.apply_sync(interactive(lambda: arr.shape[0])) == [500_001, 500_000]  # noqa: F821
    g = dv.gather("arr", block=True)
    np.testing.assert_array_equal(g, a)
    assert g.flags.writeable


def test_received_arrays_are_writable_on_both_sides(rc):
    a = np.ones(200_000)
    rc[0].push({"w": a}, block=True)
    assert rc[0].apply_sync(interactive(lambda: (w.flags.writeable, float(w.sum())))) == (True, 200_000.0)  # noqa: F821
    back = rc[0].pull("w", block=True)
    back[0] = 5.0
    assert back.flags.writeable and back[0] == 5.0


def test_map_variants(rc):
    dv = rc[:]
    assert dv.map_sync(lambda x: x * 2, range(9)) == [x * 2 for x in range(9)]
    amr = dv.map_async(lambda x, y: x + y, [1, 2, 3], [10, 20, 30])
    assert list(amr) == [11, 22, 33]
    assert dv.map_sync(str, [5]) == ["5"]  # fewer items than engines
    with pytest.raises(ValueError, match="different lengths"):
        dv.map_sync(lambda x, y: x, [1, 2], [1])


def test_remote_and_parallel_decorators(rc):
    dv = rc[:]

    @dv.remote(block=True)
    def where():
        return os.getpid()

    assert len(set(where())) == 2

    @dv.parallel(block=True)
    def double_all(chunk):
        return [x * 2 for x in chunk]

    assert double_all(range(6)) == [0, 2, 4, 6, 8, 10]

    @dv.parallel(block=True, map=True)
    def inc(x):
        return x + 1

    assert inc(range(4)) == [1, 2, 3, 4]


def test_sync_imports(rc):
    dv = rc[:]
    with dv.sync_imports(quiet=True):
        import math as m  # noqa: F401
        from os.path import join  # noqa: F401
    assert dv.apply_sync(interactive(lambda: (m.sqrt(16), join("a", "b")))) == [(4.0, "a/b")] * 2  # noqa: F821


def test_metadata_timing_and_get_dict(rc):
    ar = rc[:].apply_async(lambda: print("out") or 3)
    assert ar.get_dict(timeout=10) == {0: 3, 1: 3}
    md = ar.metadata
    assert [m.engine_id for m in md] == [0, 1]
    assert all(m.submitted <= m.started <= m.completed for m in md)
    assert ar.stdout == ["out\n", "out\n"]
    assert ar.wall_time >= ar.serial_time / 2 >= 0 and ar.elapsed > 0
    assert rc.metadata[ar.msg_ids[0]].engine_id == 0
    assert ar.msg_ids[0] in rc.history and rc.results[ar.msg_ids[0]] == 3


def test_queue_status(fresh_cluster):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    # a fresh cluster has served nothing yet, so the counts are exact
    assert rc.queue_status() == {0: {"queue": 0, "completed": 0}, 1: {"queue": 0, "completed": 0},
                                 "unassigned": 0}
    rc[:].apply_sync(lambda: None)
    rc[0].apply_async(lambda: None).get(timeout=10)
    # requests sent straight to an engine are reported to the controller when the engine goes idle
    wait_for(lambda: rc.queue_status()[0]["completed"] == 2, what="engine 0's count to reach 2")
    wait_for(lambda: rc.queue_status()[1]["completed"] == 1, what="engine 1's count to reach 1")
    assert list(rc.queue_status(targets=[1])) == [1, "unassigned"]
    with ipcluster.Client(url_file=rc.url_file, direct=False) as slow:  # through the controller
        slow[0].apply_sync(lambda: None)
        assert slow.queue_status()[0]["completed"] == 3  # counted by the controller itself
    rc.close()


def test_abort_queued_task(rc):
    running = rc[0].apply_async(time.sleep, 1.5)
    queued = rc[0].apply_async(lambda: "should not run")
    rc.abort(queued, block=True)
    with pytest.raises(errors.TaskAborted):
        queued.get(timeout=10)
    assert running.get(timeout=10) is None


def test_signal_interrupts_a_running_task(rc):
    def long_task():
        print("started", flush=True)
        time.sleep(60)

    ar = rc[1].apply_async(long_task)
    # output streams while the task runs, so "started" proves it is running
    wait_for(lambda: ar.stdout == "started\n", what="task to start")
    t0 = time.monotonic()
    rc.send_signal(signal.SIGINT, targets=1, block=True)
    with pytest.raises(errors.RemoteError) as ei:
        ar.get(timeout=10)
    assert ei.value.ename == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 10
    assert rc[1].apply_sync(lambda: "alive") == "alive"


def test_missing_connection_file_is_a_clear_error(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(errors.ConnectionFileError, match="not found"):
        ipcluster.Client(url_file=tmp_path / "nope.json", timeout=0.2)
    assert time.monotonic() - t0 < 5


def test_requests_keep_their_order_across_routes(rc):
    """Requests to one engine run in the order sent, across a switch from the controller route
    to the direct route: the switch waits until nothing is outstanding on the old route."""
    used = {"mux": 0, "direct": 0}
    send = rc._io.send

    def counting_send(channel, frames):
        send(channel, frames)
        if channel in used:
            used[channel] += 1

    rc._io.send = counting_send
    uuid = rc._engines[0]
    rc[0].push({"seen": []}, block=True)
    record = interactive(lambda i: seen.append(i))  # noqa: F821
    url = rc._direct_urls.pop(uuid)  # as if the direct connection were not known yet
    ars = [rc[0].apply_async(record, i) for i in range(100)]
    assert used == {"mux": 100, "direct": 0}
    rc._direct_urls[uuid] = url  # direct is possible again, but 100 requests are out on mux
    ars += [rc[0].apply_async(record, i) for i in range(100, 200)]
    for ar in ars:
        ar.get(timeout=30)
    before = dict(used)
    ars = [rc[0].apply_async(record, i) for i in range(200, 300)]
    for ar in ars:
        ar.get(timeout=30)
    assert used["direct"] - before["direct"] == 100, "with nothing outstanding, direct is used again"
    assert rc[0].pull("seen", block=True) == list(range(300))


def test_direct_false_routes_through_the_controller(shared_cluster):
    with ipcluster.Client(url_file=shared_cluster.connection_file, direct=False) as c:
        assert c[:].apply_sync(lambda: 1) == [1, 1]
        assert not c._direct_urls


def test_display_outputs_prints_each_engines_streams(rc, capsys):
    ar = rc[:].execute("import sys; print('to out'); print('to err', file=sys.stderr); 'value'",
                       silent=False, block=False)
    ar.get(timeout=30)
    capsys.readouterr()
    ar.display_outputs()
    out, err = capsys.readouterr()
    assert "[stdout:0] to out" in out and "[stdout:1] to out" in out
    assert "[stderr:0] to err" in err and "[stderr:1] to err" in err
    assert "Out[0:" in out and "'value'" in out


def test_display_outputs_grouping(rc, capsys):
    ar = rc[:].execute("print('o')", silent=False, block=False)
    ar.get(timeout=30)
    capsys.readouterr()
    ar.display_outputs(groupby="engine")
    assert capsys.readouterr().out.count("[stdout:") == 2
    with pytest.raises(ValueError, match="groupby"):
        ar.display_outputs(groupby="colour")


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")
def test_controller_and_engines_run_under_sched_batch(rc):
    """They hand small messages to each other: batch scheduling spares them a preemption per message."""
    assert rc[:].apply_sync(lambda: __import__("os").sched_getscheduler(0)) == [os.SCHED_BATCH] * 2
    assert os.sched_getscheduler(rc.connection_info.controller_pid) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) != os.SCHED_BATCH  # the client is the user's process: left alone
