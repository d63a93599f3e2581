"""An engine that dies must turn into a clear error within seconds, never a hang."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from ipcluster import errors
from tests.conftest import wait_for


def _crash_os_exit():
    import os

    os._exit(3)


def _wait_for_file(path):
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.005)
    return "opened"


def _crash_segfault():
    import ctypes

    ctypes.string_at(0)


def _crash_sigkill_self():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


class _ExplodesOnUnpickle:
    def __reduce__(self):
        import os

        return os._exit, (4,)


class _ExplodesOnPickle:
    def __reduce__(self):
        import os

        os._exit(5)


def _return_unpicklable_bomb():
    return _ExplodesOnPickle()


@pytest.mark.parametrize("crash", ["os_exit", "segfault", "sigkill", "unpickling", "pickling_result"])
def test_engine_death_fails_pending_work_fast_and_cluster_survives(fresh_cluster, crash, tmp_path):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    # everything is sent while engine 0 is held busy, so the crash cannot come before the requests
    # queued behind it are out (a crash while unpickling happens as soon as the request arrives)
    gate = tmp_path / "gate"
    v = rc[0]
    blocker = v.apply_async(_wait_for_file, str(gate))
    if crash == "os_exit":
        ar = v.apply_async(_crash_os_exit)
    elif crash == "segfault":
        ar = v.apply_async(_crash_segfault)
    elif crash == "sigkill":
        ar = v.apply_async(_crash_sigkill_self)
    elif crash == "unpickling":
        ar = v.apply_async(lambda x: x, _ExplodesOnUnpickle())
    else:
        ar = v.apply_async(_return_unpicklable_bomb)
    queued = v.apply_async(lambda: "never runs")
    t0 = time.monotonic()
    gate.touch()
    # the blocker's reply may be lost if the engine dies before libzmq has written it out; then it
    # fails with EngineDied too (the controller never saw it answered)
    assert blocker.exception(timeout=10) is None or isinstance(blocker.exception(), errors.EngineError)
    with pytest.raises(errors.EngineError) as ei:
        ar.get(timeout=10)
    assert time.monotonic() - t0 < 2.5, "death not noticed within ~2 s"
    assert ei.value.engine_id == 0 and "engine 0" in str(ei.value)
    with pytest.raises(errors.EngineError):
        queued.get(timeout=5)
    wait_for(lambda: rc.ids == [1], what="engine 0 to be unregistered")
    assert rc[1].apply_sync(lambda: "survivor") == "survivor"
    with pytest.raises(errors.NoEnginesRegistered):
        rc[0]
    rc.close()


def test_killed_engine_process_is_noticed_while_idle(fresh_cluster):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    pid = rc[1].apply_sync(os.getpid)
    ar = rc[1].apply_async(time.sleep, 30)
    t0 = time.monotonic()
    psutil.Process(pid).send_signal(signal.SIGKILL)
    with pytest.raises(errors.EngineError):
        ar.get(timeout=10)
    assert time.monotonic() - t0 < 2.5
    rc.close()


def test_request_to_an_engine_that_just_died_is_answered(fresh_cluster):
    """A request racing with the death notification gets an error reply from the controller."""
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    view = rc[0]  # resolved while engine 0 still exists
    rc[0].apply_async(_crash_os_exit)
    wait_for(lambda: rc.ids == [1], what="engine 0 to be unregistered")
    with pytest.raises(errors.NoEnginesRegistered):
        view.apply_sync(lambda: 1)
    # bypass the client's own check: the controller itself must answer for an unknown engine
    uuid = b"0" * 32
    rc._engines[99] = uuid
    with pytest.raises(errors.EngineError, match="not registered"):
        rc[99].apply_async(lambda: 1).get(timeout=5)
    rc.close()


def test_shutdown_one_engine(fresh_cluster):
    rc = fresh_cluster.connect_client_sync()
    rc.wait_for_engines(2, timeout=30)
    rc.shutdown(targets=[1], block=True)
    wait_for(lambda: rc.ids == [0], what="engine 1 to unregister")
    assert rc[0].apply_sync(lambda: 1) == 1
    rc.close()
