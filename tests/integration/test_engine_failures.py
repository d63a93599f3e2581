"""The crash matrix: an engine dies in every way we know of, on every route; the work it held
fails with EngineError naming the engine and the task within 2 s of the death (retries=0), or runs
again on another engine (retries=1); a task that keeps killing engines is stopped by
max_engine_deaths; with restart_engines a dead engine comes back with its id and startup code."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

import ipcluster
from ipcluster import errors
from tests.conftest import wait_for
from tests.integration.enginefaults import HEARTBEAT_MISSES, HEARTBEAT_PERIOD, engine_cluster, engine_pids

#: The promise: work held by a dead engine fails within this many seconds of the death.
NOTICE_WITHIN = 2.0

CRASHES = ["unpickling", "os_exit", "segfault", "pickling_result", "sigkill", "sigstop"]
#: Crashes done to the engine from outside while it runs a task (the others are done by the task).
EXTERNAL = {"sigkill": signal.SIGKILL, "sigstop": signal.SIGSTOP}


# --- what the engines run (shipped by value: engines cannot import this module) ---------------------


def _first_time(marker: str) -> bool:
    """True the first time it is called for *marker* in the whole cluster (it creates the file)."""
    import os

    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _exit_first_time(marker: str, how: str):
    """Kill this process the first time (how: 'os_exit' / 'segfault'); later return our pid."""
    import ctypes
    import os

    if _first_time(marker):
        if how == "segfault":
            ctypes.string_at(0)
        os._exit(7)
    return os.getpid()


class _DiesWhenUnpickled:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return _exit_first_time, (self.marker, "os_exit")


class _DiesWhenPickled:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        _exit_first_time(self.marker, "os_exit")
        return int, (os.getpid(),)


def _identity(x):
    return x


def _crash_task(marker: str, how: str):
    import os

    if how == "pickling_result":
        return _DiesWhenPickled(marker)
    return _exit_first_time(marker, how)


def _hang_first_time(marker: str, pid_file: str):
    """Write our pid and sleep (to be killed or stopped from outside) the first time; then return the pid."""
    import os
    import time

    if _first_time(marker):
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)
        time.sleep(60)
    return os.getpid()


# --- helpers ---------------------------------------------------------------------------------------


def _submit(view, how: str, tmp_path: Path):
    """Start the crash *how* on *view*; returns (AsyncResult, time the death happened or was caused)."""
    marker = str(tmp_path / "marker")
    if how in EXTERNAL:
        pid_file = tmp_path / "pid"
        ar = view.apply_async(_hang_first_time, marker, str(pid_file))
        wait_for(pid_file.exists, timeout=15, what="the task to start")
        pid = int(pid_file.read_text())
        t0 = time.monotonic()
        os.kill(pid, EXTERNAL[how])
        return ar, t0, pid
    t0 = time.monotonic()  # the task dies as soon as it is unpickled or run: an upper bound on the delay
    if how == "unpickling":
        ar = view.apply_async(_identity, _DiesWhenUnpickled(marker))
    else:
        ar = view.apply_async(_crash_task, marker, how)
    return ar, t0, None


def _reap_stopped(pid: int | None) -> None:
    """A SIGSTOPped engine is unregistered but still exists: kill it (its supervisor reaps it)."""
    if pid is not None:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def _expected_by(how: str) -> float:
    # a stopped engine is found by heartbeats: (misses + 1) periods at most, then the notice
    return NOTICE_WITHIN if how != "sigstop" else max(NOTICE_WITHIN, (HEARTBEAT_MISSES + 1) * HEARTBEAT_PERIOD + 0.5)


# --- the matrix ------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("route", ["load_balanced", "load_balanced_blocking", "direct", "direct_blocking"])
@pytest.mark.parametrize("how", CRASHES)
def test_work_of_a_dead_engine_fails_fast_with_retries_0(tmp_path, how, route):
    with engine_cluster(tmp_path) as (cluster, rc):
        pids = engine_pids(rc)
        if route.startswith("load_balanced"):
            view = rc.load_balanced_view()
            view.set_flags(retries=0)
        else:
            view = rc[0]
        if route.endswith("_blocking"):
            # the caller's own thread sends and waits (blocking.py): it must be woken by the death
            marker = str(tmp_path / "marker")
            t0 = time.monotonic()
            stopped = None
            if how in EXTERNAL:
                outcome: list[BaseException] = []
                pid_file = tmp_path / "pid"

                def call() -> None:
                    try:
                        view.apply_sync(_hang_first_time, marker, str(pid_file))
                    except BaseException as e:  # noqa: B036 - handed to the test thread
                        outcome.append(e)

                caller = threading.Thread(target=call)
                caller.start()
                wait_for(pid_file.exists, timeout=15, what="the task to start")
                stopped = int(pid_file.read_text())
                t0 = time.monotonic()
                os.kill(stopped, EXTERNAL[how])
                try:
                    caller.join(15)
                    elapsed = time.monotonic() - t0
                finally:
                    _reap_stopped(stopped if how == "sigstop" else None)
                assert not caller.is_alive() and len(outcome) == 1
                with pytest.raises(errors.EngineError) as ei:
                    raise outcome[0]
            else:
                with pytest.raises(errors.EngineError) as ei:
                    if how == "unpickling":
                        view.apply_sync(_identity, _DiesWhenUnpickled(marker))
                    else:
                        view.apply_sync(_crash_task, marker, how)
                elapsed = time.monotonic() - t0
            msg_id = None  # a blocking call returns no AsyncResult to take the msg_id from
        else:
            ar, t0, stopped = _submit(view, how, tmp_path)
            try:
                with pytest.raises(errors.EngineError) as ei:
                    ar.get(timeout=15)
                elapsed = time.monotonic() - t0
                msg_id = ar.msg_ids[0]
            finally:
                _reap_stopped(stopped if how == "sigstop" else None)
        assert elapsed < _expected_by(how), f"{how}: the death was reported after {elapsed:.2f} s"
        dead = [eid for eid, pid in pids.items() if not psutil.pid_exists(pid) or pid == stopped]
        assert len(dead) == 1, (pids, dead)
        assert ei.value.engine_id == dead[0]
        assert f"engine {dead[0]}" in str(ei.value)
        if msg_id is not None:
            assert msg_id in str(ei.value), str(ei.value)
        survivors = [eid for eid in pids if eid != dead[0]]
        wait_for(lambda: rc.ids == survivors, timeout=10, what="the dead engine to be unregistered")
        assert rc[survivors[0]].apply_sync(lambda: "alive") == "alive"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["os_exit", "pickling_result"])
def test_a_direct_request_through_the_controller_is_named_when_its_engine_dies(tmp_path, how):
    """A DirectView request goes through the controller when the client has no direct connection to
    the engine (``direct=False``, another host, or that connection not up yet, as under load): the
    controller's EngineDied answer names the request too, not only the client's own one built from
    the unregistration notice (which of the two reaches the client first is a race)."""
    with engine_cluster(tmp_path) as (cluster, rc):
        pid = engine_pids(rc)[0]
        with ipcluster.Client(url_file=cluster.connection_file, direct=False) as via:
            ar, _, _ = _submit(via[0], how, tmp_path)
            with pytest.raises(errors.EngineDied) as ei:
                ar.get(timeout=15)
            msg_id = ar.msg_ids[0]
            assert ei.value.engine_id == 0 and msg_id in str(ei.value), str(ei.value)
        # the controller's own answer, as it keeps it for get_result: this one every time
        with pytest.raises(errors.EngineDied) as kept:
            rc.get_result(msg_id).get(timeout=10)
        assert kept.value.engine_id == 0
        assert f"engine 0 stopped before replying to {msg_id} (process {pid} exited with code 7)" in str(kept.value)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", CRASHES)
def test_a_task_with_retries_runs_again_on_another_engine(tmp_path, how):
    with engine_cluster(tmp_path) as (cluster, rc):
        pids = engine_pids(rc)
        view = rc.load_balanced_view()
        view.set_flags(retries=1)
        ar, t0, stopped = _submit(view, how, tmp_path)
        try:
            pid = ar.get(timeout=20)
        finally:
            _reap_stopped(stopped if how == "sigstop" else None)
        assert time.monotonic() - t0 < _expected_by(how) + 2
        dead = [eid for eid, p in pids.items() if not psutil.pid_exists(p) or p == stopped]
        assert len(dead) == 1
        survivor = next(eid for eid in pids if eid != dead[0])
        assert pid == pids[survivor], "the retry did not run on the surviving engine"
        assert ar.engine_id == survivor


# --- max_engine_deaths -------------------------------------------------------------------------------


def _always_dies():
    import os

    os._exit(9)


@pytest.mark.timeout(120)
def test_a_task_that_keeps_killing_engines_is_stopped_by_max_engine_deaths(tmp_path):
    with engine_cluster(tmp_path, n=3, restart_engines=True, max_engine_deaths=2) as (cluster, rc):
        view = rc.load_balanced_view()
        view.set_flags(retries=10)
        ar = view.apply_async(_always_dies)
        with pytest.raises(errors.TaskKilledEngines) as ei:
            ar.get(timeout=30)
        assert isinstance(ei.value, errors.EngineError)
        assert "max_engine_deaths=2" in str(ei.value) and ar.msg_ids[0] in str(ei.value)
        # two engines died (and were restarted), not all three, and not ten times; the client may
        # hear of the second death after the task's error (another socket): ask until all answer
        def three_serving() -> bool:
            if rc.ids != [0, 1, 2]:
                return False
            try:
                return len(set(rc[:].apply_sync(os.getpid))) == 3
            except (errors.EngineError, errors.CompositeError):
                return False

        wait_for(three_serving, timeout=20, what="the killed engines to come back")
        log = Path(cluster.engines["0"].log_path).read_text()
        assert log.count("exited with code 9") == 2


def test_max_engine_deaths_default_is_three(tmp_path):
    from controller.app import IPController

    assert IPController().max_engine_deaths == 3


# --- restart_engines -----------------------------------------------------------------------------------


def _read_lines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().split()


@pytest.mark.timeout(90)
def test_a_restarted_engine_keeps_its_id_and_runs_the_startup_code_again(tmp_path):
    log = tmp_path / "startups"
    startup = (f"import os\nwith open({str(log)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
               "started_by_startup = os.getpid()")
    with engine_cluster(tmp_path, restart_engines=True, startup_command=startup) as (cluster, rc):
        pids = engine_pids(rc)
        assert sorted(int(p) for p in _read_lines(str(log))) == sorted(pids.values())
        uuids = dict(rc._engines)
        os.kill(pids[1], signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: rc._engines.get(1) not in (None, uuids[1]), timeout=15, what="engine 1 to come back")
        restart_time = time.monotonic() - t0
        new_pid = rc[1].apply_sync(os.getpid)
        assert new_pid != pids[1] and psutil.Process(new_pid).ppid() == psutil.Process(pids[0]).ppid()
        assert rc[1].pull("started_by_startup", block=True) == new_pid  # set by the startup code
        assert str(new_pid) in _read_lines(str(log))
        assert rc._engines[1] != uuids[1]  # a new process (new uuid) under the old id
        assert rc[0].apply_sync(os.getpid) == pids[0]  # the other engine was left alone
        print(f"engine 1 back, startup code run, {restart_time:.2f} s after SIGKILL")


@pytest.mark.timeout(120)
def test_a_crash_looping_engine_is_restarted_with_back_off_then_given_up(tmp_path):
    """Each restart dies at once (its startup code kills it): the supervisor must not spin."""
    flag = tmp_path / "crash-on-start"
    startup = f"import os\nif os.path.exists({str(flag)!r}):\n    os._exit(11)"
    with engine_cluster(tmp_path, restart_engines=True, startup_command=startup) as (cluster, rc):
        pids = engine_pids(rc)
        supervisor = psutil.Process(pids[0]).parent()
        flag.touch()
        t0 = time.monotonic()
        os.kill(pids[1], signal.SIGKILL)
        # budget: 5 deaths within 60 s are restarted (after 0, 0.5, 1, 2 s), the 6th is not
        log_path = Path(cluster.engines["0"].log_path)
        wait_for(lambda: "not restarting it again" in log_path.read_text(), timeout=30,
                 what="the supervisor to give up on engine 1")
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.5 + 1 + 2, f"restarts were not backed off ({elapsed:.2f} s)"
        wait_for(lambda: rc.ids == [0] and len(supervisor.children()) == 1, what="engine 1 to stay gone")
        log = log_path.read_text()
        assert log.count("restarted engine") == 5
        flag.unlink()
        assert rc[0].apply_sync(os.getpid) == pids[0]


def test_an_engine_that_exits_cleanly_is_not_restarted(tmp_path):
    with engine_cluster(tmp_path, restart_engines=True) as (cluster, rc):
        rc.shutdown(targets=[1], block=True)
        wait_for(lambda: rc.ids == [0], what="engine 1 to unregister")
        supervisor = psutil.Process(engine_pids(rc)[0]).parent()
        wait_for(lambda: len(supervisor.children()) == 1, what="engine 1 to exit")
        log = Path(cluster.engines["0"].log_path).read_text()
        assert "restarted engine" not in log


@pytest.mark.timeout(90)
def test_a_stopped_engine_is_killed_by_its_supervisor_and_restarted(tmp_path):
    """SIGSTOP: found by heartbeats, then killed (it would stay stopped for good) and restarted."""
    with engine_cluster(tmp_path, restart_engines=True) as (cluster, rc):
        pids = engine_pids(rc)
        old = rc._engines[1]
        t0 = time.monotonic()
        os.kill(pids[1], signal.SIGSTOP)
        try:
            wait_for(lambda: rc._engines.get(1) not in (None, old), timeout=15, what="engine 1 to come back")
        finally:
            _reap_stopped(pids[1] if psutil.pid_exists(pids[1]) and psutil.Process(pids[1]).status() == "stopped"
                          else None)
        assert time.monotonic() - t0 < (HEARTBEAT_MISSES + 1) * HEARTBEAT_PERIOD + 2
        wait_for(lambda: not psutil.pid_exists(pids[1]) or psutil.Process(pids[1]).status() == psutil.STATUS_ZOMBIE,
                 what="the stopped engine to be gone")
        new = engine_pids(rc)
        assert new[0] == pids[0] and new[1] != pids[1]
