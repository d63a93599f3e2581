"""Per-task time limits and cancelling running tasks: interrupted (SIGINT) at the limit, killed and
restarted with the same id after the grace period if that does not stop them; nothing the user
cancelled is left running."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from ipcluster import errors
from tests.conftest import wait_for
from tests.integration.enginefaults import INTERRUPT_GRACE, engine_cluster, engine_pids

LIMIT = 0.5
#: Slack for the interrupt to land and the error to travel back (a loaded 2-core machine).
SLACK = 1.5


@pytest.fixture(scope="module")
def tl_cluster(tmp_path_factory):
    """One cluster for the module: every test leaves its engines as ids [0, 1] (restarted if killed)."""
    with engine_cluster(tmp_path_factory.mktemp("time-limit")) as (cluster, rc):
        yield cluster, rc


@pytest.fixture
def rc(tl_cluster):
    cluster, client = tl_cluster
    wait_for(lambda: client.ids == [0, 1], timeout=15, what="both engines registered")
    return client


def _sleep(seconds):
    import time

    time.sleep(seconds)
    return "slept"


def _mark_and_sleep(path, seconds):
    import time

    with open(path, "w") as f:
        f.write("started")
    time.sleep(seconds)
    return "slept"


def _python_loop():
    n = 0
    while True:
        n += 1


def _c_loop():
    return sum(range(10**13))  # one C call holding the GIL: SIGINT cannot interrupt it


def _ignores_interrupts(pid_file):
    import os
    import time

    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    while True:
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            pass


def _started(path):
    def check():
        return os.path.exists(path) and os.path.getsize(path) > 0
    return check


def _engine_state(rc) -> tuple[dict[int, int], dict[int, bytes]]:
    """``({id: pid}, {id: uuid})`` of the engines now (before something is killed)."""
    return engine_pids(rc), dict(rc._engines)


def _wait_restarted(rc, before: tuple[dict[int, int], dict[int, bytes]], victim: int) -> None:
    """Wait until the engine that had pid *victim* is back under its id, as a new process (a new uuid)."""
    pids, uuids = before
    eid = next(e for e, p in pids.items() if p == victim)
    wait_for(lambda: rc._engines.get(eid) not in (None, uuids[eid]) and len(rc.ids) == len(pids), timeout=15,
             what=f"engine {eid} to come back")
    new = engine_pids(rc)
    assert new[eid] != victim and all(new[e] == p for e, p in pids.items() if e != eid)


def _pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- time limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [_sleep, _python_loop], ids=["sleep", "python_loop"])
def test_load_balanced_task_past_its_limit_is_interrupted(rc, fn):
    pids = engine_pids(rc)
    lview = rc.load_balanced_view()
    with lview.temp_flags(time_limit=LIMIT):
        t0 = time.monotonic()
        ar = lview.apply_async(fn, 30) if fn is _sleep else lview.apply_async(fn)
        with pytest.raises(errors.TaskTimeout, match="time limit of 0.5 s; it was interrupted") as ei:
            ar.get(timeout=10)
    elapsed = time.monotonic() - t0
    assert LIMIT <= elapsed < LIMIT + SLACK, elapsed
    assert ar.msg_ids[0] in str(ei.value)
    # the remote traceback says where the task was interrupted
    assert fn.__name__ in str(ei.value.__cause__) and "KeyboardInterrupt" in str(ei.value.__cause__)
    assert engine_pids(rc) == pids  # interrupted, not killed


def test_time_limit_not_reached_gives_the_result(rc):
    lview = rc.load_balanced_view()
    lview.set_flags(time_limit=5)
    assert lview.apply_sync(_sleep, 0.01) == "slept"
    with rc[0].temp_flags(time_limit=5):
        assert rc[0].apply_sync(_sleep, 0.01) == "slept"


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
def test_direct_view_time_limit(rc, blocking):
    pids = engine_pids(rc)
    view = rc[1]
    view.set_flags(time_limit=LIMIT)
    try:
        t0 = time.monotonic()
        with pytest.raises(errors.TaskTimeout):
            if blocking:
                view.apply_sync(_sleep, 30)
            else:
                view.apply_async(_sleep, 30).get(timeout=10)
        assert time.monotonic() - t0 < LIMIT + SLACK
        with pytest.raises(errors.TaskTimeout):  # execute honours it too
            view.execute("import time; time.sleep(30)", block=True)
    finally:
        view.set_flags(time_limit=None)
    assert engine_pids(rc) == pids


def test_a_time_limit_applies_to_each_engine_of_a_multi_engine_call(rc):
    view = rc[:]
    with view.temp_flags(time_limit=LIMIT):
        ar = view.apply_async(_sleep, 30)
        with pytest.raises(errors.CompositeError) as ei:
            ar.get(timeout=10)
    assert [type(e) for e in ei.value.elist] == [errors.TaskTimeout, errors.TaskTimeout]


@pytest.mark.timeout(60)
def test_gil_holding_c_loop_is_killed_and_its_engine_restarted_with_the_same_id(rc):
    before = _engine_state(rc)
    pids = before[0]
    view = rc[0]
    with view.temp_flags(time_limit=LIMIT):
        t0 = time.monotonic()
        ar = view.apply_async(_c_loop)
        with pytest.raises(errors.TaskTimeout, match="engine was killed and restarted"):
            ar.get(timeout=15)
    elapsed = time.monotonic() - t0
    assert LIMIT + INTERRUPT_GRACE <= elapsed < LIMIT + INTERRUPT_GRACE + SLACK, elapsed
    assert _pid_gone(pids[0])
    _wait_restarted(rc, before, pids[0])


@pytest.mark.timeout(60)
def test_task_ignoring_keyboard_interrupt_is_killed_and_respawned(rc, tmp_path):
    before = _engine_state(rc)
    pid_file = str(tmp_path / "pid")
    lview = rc.load_balanced_view()
    with lview.temp_flags(time_limit=LIMIT):
        ar = lview.apply_async(_ignores_interrupts, pid_file)
        wait_for(_started(pid_file), what="the task to start")
        victim = int(open(pid_file).read())
        with pytest.raises(errors.TaskTimeout, match="still running"):
            ar.get(timeout=15)
    wait_for(lambda: _pid_gone(victim), timeout=5, what="the killed engine to be gone")
    _wait_restarted(rc, before, victim)


def test_bad_time_limits_are_rejected(rc):
    for bad in (0, -1, "1", True):
        lview = rc.load_balanced_view()
        lview.set_flags(time_limit=bad)
        with pytest.raises(ValueError, match="time_limit"):
            lview.apply_async(_sleep, 0)
        view = rc[0]
        view.set_flags(time_limit=bad)
        with pytest.raises(ValueError, match="time_limit"):
            view.apply_async(_sleep, 0)
    with pytest.raises(KeyError):
        rc[0].set_flags(time_limt=1)


# --- cancel ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["load_balanced", "direct"])
def test_cancel_interrupts_a_running_task(rc, tmp_path, route):
    pids = engine_pids(rc)
    started = str(tmp_path / "started")
    view = rc.load_balanced_view() if route == "load_balanced" else rc[1]
    ar = view.apply_async(_mark_and_sleep, started, 30)
    wait_for(_started(started), what="the task to start")
    t0 = time.monotonic()
    assert ar.cancel() is True
    assert time.monotonic() - t0 < SLACK
    with pytest.raises(errors.TaskCancelled, match="it was interrupted"):
        ar.get(timeout=1)
    assert isinstance(ar.exception(), errors.TaskAborted)
    assert engine_pids(rc) == pids  # interrupted, not killed: the engine is idle again


@pytest.mark.timeout(60)
@pytest.mark.parametrize("route", ["load_balanced", "direct"])
def test_cancel_kills_a_task_that_ignores_the_interrupt(rc, tmp_path, route):
    before = _engine_state(rc)
    pid_file = str(tmp_path / "pid")
    view = rc.load_balanced_view() if route == "load_balanced" else rc[0]
    ar = view.apply_async(_ignores_interrupts, pid_file)
    wait_for(_started(pid_file), what="the task to start")
    victim = int(open(pid_file).read())
    t0 = time.monotonic()
    assert ar.cancel() is True
    assert time.monotonic() - t0 < INTERRUPT_GRACE + SLACK
    with pytest.raises(errors.TaskCancelled, match="killed and restarted"):
        ar.get(timeout=1)
    wait_for(lambda: _pid_gone(victim), timeout=5, what="the cancelled task's process to be gone")
    _wait_restarted(rc, before, victim)


@pytest.mark.parametrize("route", ["load_balanced", "direct"])
def test_cancel_aborts_queued_requests_and_stops_the_running_one(rc, tmp_path, route):
    pids = engine_pids(rc)
    started = str(tmp_path / "started")
    view = rc.load_balanced_view(targets=[0]) if route == "load_balanced" else rc[0]
    running = view.apply_async(_mark_and_sleep, started, 30)
    queued = view.apply_async(_sleep, 30)
    wait_for(_started(started), what="the first task to start")
    rc.cancel([running, queued])  # both at once: the queued one is aborted when the engine reaches it
    assert queued.wait(INTERRUPT_GRACE + SLACK) and running.wait(0)
    with pytest.raises(errors.TaskCancelled):
        running.get(timeout=1)
    with pytest.raises(errors.TaskAborted) as ei:
        queued.get(timeout=1)
    assert not isinstance(ei.value, errors.TaskCancelled)  # it never ran
    t0 = time.monotonic()
    assert rc[0].apply_sync(os.getpid) == pids[0]  # nothing cancelled is still running there
    assert time.monotonic() - t0 < SLACK


def test_cancel_of_a_finished_result_is_false(rc):
    ar = rc[0].apply_async(_sleep, 0)
    ar.get(timeout=10)
    assert ar.cancel() is False
    assert ar.get() == "slept"


# --- an engine without a supervisor ---------------------------------------------------------------


@pytest.mark.timeout(90)
def test_an_engine_without_a_supervisor_interrupts_at_the_limit_and_on_cancel(tmp_path):
    import subprocess
    import sys

    with engine_cluster(tmp_path, n=1) as (cluster, rc):
        log = open(tmp_path / "lone.log", "w")
        lone = subprocess.Popen([sys.executable, "-P", "-m", "engines", "--file", str(cluster.connection_file)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            rc.wait_for_engines(2, timeout=30)
            view = rc[1]
            assert view.apply_sync(os.getpid) == lone.pid
            with view.temp_flags(time_limit=LIMIT):
                t0 = time.monotonic()
                with pytest.raises(errors.TaskTimeout, match="it was interrupted"):
                    view.apply_sync(_sleep, 30)
                assert time.monotonic() - t0 < LIMIT + SLACK
            started = str(tmp_path / "started")
            ar = view.apply_async(_mark_and_sleep, started, 30)
            wait_for(_started(started), what="the task to start")
            assert ar.cancel() is True
            with pytest.raises(errors.TaskCancelled):
                ar.get(0)
            assert view.apply_sync(os.getpid) == lone.pid  # interrupted, never killed
        finally:
            lone.terminate()
            try:
                lone.wait(10)
            except subprocess.TimeoutExpired:
                lone.kill()
                lone.wait(5)
            log.close()
