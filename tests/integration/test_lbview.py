"""LoadBalancedView against a real controller and engines."""

from __future__ import annotations

import os
import time

import pytest

import ipcluster
from ipcluster import errors
from tests.conftest import wait_for


def test_apply_runs_somewhere_and_returns_one_value(rc):
    lview = rc.load_balanced_view()
    assert lview.apply_sync(lambda x: x + 1, 41) == 42
    ar = lview.apply_async(os.getpid)
    assert ar.get(timeout=10) in rc[:].apply_sync(os.getpid)
    assert ar.engine_id in rc.ids


def test_map_ordered_unordered_and_chunksize(rc):
    lview = rc.load_balanced_view()
    assert lview.map_sync(lambda x: x * x, range(50)) == [x * x for x in range(50)]
    assert lview.map_sync(lambda x, y: x + y, range(5), range(5), chunksize=2) == [0, 2, 4, 6, 8]
    amr = lview.map_async(lambda x: x, range(20), ordered=False, chunksize=3)
    assert sorted(amr) == list(range(20))
    assert list(lview.imap(str, range(3))) == ["0", "1", "2"]
    assert lview.map_sync(str, []) == []


def test_map_result_partial_len_and_item_metadata(rc, tmp_path):
    lview = rc.load_balanced_view()
    gate = tmp_path / "go"

    def item(x, gate=str(gate)):
        import os
        import time
        while x >= 4 and not os.path.exists(gate):  # the second chunk waits for the test
            time.sleep(0.01)
        return x * 10

    amr = lview.map_async(item, range(8), chunksize=4)
    assert len(amr) == 8  # known before anything ran
    wait_for(lambda: amr._children[0].done(), what="the first chunk")
    assert amr.partial() == {0: 0, 1: 10, 2: 20, 3: 30}  # the first chunk's items, without waiting
    gate.touch()
    assert amr.get(timeout=10) == [x * 10 for x in range(8)]
    assert amr.partial() == {i: i * 10 for i in range(8)}
    mds = amr.item_metadata
    assert len(mds) == 8 and mds[0] is mds[3] and mds[4] is mds[7]
    assert all(md["engine_id"] in rc.ids and md["completed"] >= md["started"] for md in mds)
    # DirectView maps too
    dmr = rc[:].map_async(lambda x: -x, range(5))
    assert len(dmr) == 5 and dmr.get(timeout=10) == [0, -1, -2, -3, -4]
    assert [md["engine_id"] for md in dmr.item_metadata] == [0, 0, 0, 1, 1]
    # results that are not items of a map have no per-item view
    par = lview.parallel(block=False)(lambda chunk: [sum(chunk)])(range(4))
    par.get(timeout=10)
    with pytest.raises(TypeError):
        par.partial()


def test_targets_restrict_engines(rc):
    lview = rc.load_balanced_view(targets=[1])
    pids = {lview.apply_sync(os.getpid) for _ in range(10)}
    assert pids == {rc[1].apply_sync(os.getpid)}


def test_work_spreads_over_engines(rc):
    lview = rc.load_balanced_view()
    ars = [lview.apply_async(time.sleep, 0.05) for _ in range(8)]
    assert {ar.get(timeout=20) or ar.engine_id for ar in ars} == {0, 1}


def test_after_dependency_orders_tasks(rc, tmp_path):
    lview = rc.load_balanced_view()

    def first(path):
        import pathlib
        import time

        time.sleep(0.3)
        pathlib.Path(path).write_text("done")

    def second(path):
        import pathlib

        return pathlib.Path(path).read_text()

    a = lview.apply_async(first, str(tmp_path / "f"))
    with lview.temp_flags(after=a):
        b = lview.apply_async(second, str(tmp_path / "f"))
    assert b.get(timeout=20) == "done"


def test_after_a_direct_view_request(rc, tmp_path):
    """Dependencies may name requests the controller never saw (same-host direct route)."""
    a = rc[0].apply_async(time.sleep, 0.2)
    lview = rc.load_balanced_view()
    with lview.temp_flags(after=[a]):
        b = lview.apply_async(lambda: "after direct")
    assert b.get(timeout=20) == "after direct"
    assert b.metadata.started >= a.metadata.completed


def test_follow_runs_on_the_same_engine(rc):
    lview = rc.load_balanced_view()
    a = lview.apply_async(os.getpid)
    a.get(timeout=10)
    for _ in range(5):
        with lview.temp_flags(follow=a):
            assert lview.apply_sync(os.getpid) == a.get()


def test_impossible_and_invalid_dependencies_fail_at_once(rc):
    lview = rc.load_balanced_view()
    failed = lview.apply_async(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failed.get(timeout=10)
    t0 = time.monotonic()
    with lview.temp_flags(after=failed):
        with pytest.raises(errors.ImpossibleDependency):
            lview.apply_sync(lambda: "never")
    with lview.temp_flags(after=["no-such-task"]):
        with pytest.raises(errors.InvalidDependency):
            lview.apply_sync(lambda: "never")
    ok = ipcluster.Dependency([failed], success=False, failure=True)
    with lview.temp_flags(after=ok):
        assert lview.apply_sync(lambda: "ran after a failure") == "ran after a failure"
    assert time.monotonic() - t0 < 10


def test_timeout_of_a_task_that_cannot_be_placed(rc):
    lview = rc.load_balanced_view()
    slow = lview.apply_async(time.sleep, 3)
    t0 = time.monotonic()
    with lview.temp_flags(after=slow, timeout=0.3):
        with pytest.raises(errors.TaskTimeout):
            lview.apply_sync(lambda: "too late")
    assert time.monotonic() - t0 < 2.5


def _dies_first_time(marker):
    import os
    import pathlib

    p = pathlib.Path(marker)
    if not p.exists():
        p.touch()
        os._exit(1)
    return "second attempt"


def test_retries_after_engine_death(fresh_cluster, tmp_path):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    lview = rc.load_balanced_view()
    with lview.temp_flags(retries=1):
        assert lview.apply_sync(_dies_first_time, str(tmp_path / "m")) == "second attempt"
    wait_for(lambda: len(rc.ids) == 1, what="the dead engine to go")
    with pytest.raises(errors.EngineError):
        lview.apply_sync(_dies_first_time, str(tmp_path / "m2"))
    rc.close()


def test_retries_after_an_error(rc, tmp_path):
    lview = rc.load_balanced_view()

    def flaky(marker):
        import pathlib

        p = pathlib.Path(marker)
        if not p.exists():
            p.touch()
            raise RuntimeError("first attempt fails")
        return "retried"

    with lview.temp_flags(retries=2):
        assert lview.apply_sync(flaky, str(tmp_path / "e")) == "retried"
    with pytest.raises(RuntimeError):
        lview.apply_sync(flaky, str(tmp_path / "e2"))


def test_bad_flags_are_clear_errors(rc):
    lview = rc.load_balanced_view()
    with pytest.raises(ValueError, match="retries"):
        with lview.temp_flags(retries=-1):
            lview.apply_async(lambda: 1)
    with pytest.raises(KeyError, match="invalid view flag"):
        lview.set_flags(priority=3)


def test_abort_queued_and_placed_tasks(rc, tmp_path):
    lview = rc.load_balanced_view(targets=[0])
    marker = tmp_path / "running"

    def block_engine(path):
        import pathlib
        import time

        pathlib.Path(path).touch()
        time.sleep(1.0)
        return "ran"

    running = lview.apply_async(block_engine, str(marker))
    wait_for(marker.exists, what="the first task to run")
    placed = lview.apply_async(lambda: "placed, never ran")  # sent to engine 0, queued there
    with lview.temp_flags(after=running):
        waiting = lview.apply_async(lambda: "waiting, never ran")  # held by the scheduler
    rc.abort([placed, waiting])
    for ar in (placed, waiting):
        with pytest.raises(errors.TaskAborted):
            ar.get(timeout=10)
    assert running.get(timeout=10) == "ran"
    # AsyncResult.abort() goes the same way
    with lview.temp_flags(after=lview.apply_async(time.sleep, 0.5)):
        later = lview.apply_async(lambda: "never")
    later.abort()
    with pytest.raises(errors.TaskAborted):
        later.get(timeout=10)


def test_wait_interactive_reports_progress(rc, capsys):
    lview = rc.load_balanced_view()
    ar = lview.map_async(time.sleep, [0.05] * 6, chunksize=1)
    assert ar.wait_interactive(interval=0.02) is True
    out = capsys.readouterr().out  # not a terminal: one summary line instead of a bar
    assert "6/6 done" in out
    slow = lview.apply_async(time.sleep, 1.0)
    assert rc.wait_interactive([slow], timeout=0.1) is False
    assert "0/1 done" in capsys.readouterr().out
    assert rc.wait_interactive(timeout=10) is True


def test_cancel_aborts_what_has_not_started(rc):
    lview = rc.load_balanced_view(targets=[1])
    first = lview.apply_async(time.sleep, 0.5)
    with lview.temp_flags(after=first):
        queued = lview.apply_async(lambda: "never")
    assert queued.cancel() is True
    with pytest.raises(errors.TaskAborted):
        queued.get(timeout=5)
    assert first.get(timeout=10) is None
    assert first.cancel() is False  # already finished


def test_remote_and_parallel_decorators_on_a_load_balanced_view(rc):
    lview = rc.load_balanced_view()

    @lview.remote(block=True)
    def where():
        import os

        return os.getpid()

    assert where() in rc[:].apply_sync(os.getpid)

    @lview.parallel(block=True)
    def total(chunk):
        return [sum(chunk)]

    assert sum(total(range(100))) == sum(range(100))

    @lview.parallel(block=True, map=True)
    def square(x):
        return x * x

    assert square(range(10)) == [x * x for x in range(10)]
