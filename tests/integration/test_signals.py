"""Signals sent to engines for some requests only (``rc.send_signal(..., msg_ids=...)``).

An interrupt meant for one request must not hit another: the engine's control thread signals the
main thread only when the named request runs, and the main thread drops a SIGINT whose request has
ended by the time it arrives (``engines/interrupts.py``).
"""

from __future__ import annotations

import signal
import time

import pytest

from ipcluster import errors
from tests.conftest import wait_for


def wait_released(path, timeout=30):
    """Run until *path* exists; say whether a KeyboardInterrupt came first."""
    import os
    import time

    print("started", flush=True)
    deadline = time.monotonic() + timeout
    try:
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return "timed out"
            time.sleep(0.01)
    except KeyboardInterrupt:
        return "interrupted"
    return "released"


def start_waiting(rc, path):
    ar = rc[0].apply_async(wait_released, str(path))
    # output streams while the task runs, so "started" proves it is running
    wait_for(lambda: ar.stdout == "started\n", what="task to start")
    return ar


def test_sigint_for_another_request_does_not_interrupt_the_running_one(rc, tmp_path):
    release = tmp_path / "release"
    ar = start_waiting(rc, release)
    rc.send_signal(signal.SIGINT, targets=[0], msg_ids=["not-running"], block=True)
    rc.send_signal(signal.SIGINT, targets=[0], msg_ids=["not-running-either"], block=True)
    # the control thread handles one message at a time: once the second reply is here, the first
    # signal (had there been one) has been sent, and the sleeping main thread has handled it
    assert not ar.done()
    release.touch()
    assert ar.get(timeout=10) == "released"


def test_sigint_for_the_running_request_interrupts_it(rc, tmp_path):
    ar = start_waiting(rc, tmp_path / "never")
    t0 = time.monotonic()
    rc.send_signal(signal.SIGINT, targets=[0], msg_ids=ar, block=True)  # an AsyncResult names its requests
    assert ar.get(timeout=10) == "interrupted"
    assert time.monotonic() - t0 < 10
    assert rc[0].apply_sync(lambda: "alive") == "alive"


def test_sigint_for_an_aborted_request_spares_the_next_one(rc, tmp_path):
    """What a %px Ctrl-C does: abort the queued part, SIGINT it; the engine's next request runs on."""
    release = tmp_path / "release"
    first = start_waiting(rc, release)
    queued = rc[0].apply_async(wait_released, str(release))
    rc.abort(queued, block=True)
    release.touch()
    assert first.get(timeout=10) == "released"
    with pytest.raises(errors.TaskAborted):
        queued.get(timeout=10)
    release.unlink()
    nxt = start_waiting(rc, release)  # the engine's next request
    rc.send_signal(signal.SIGINT, targets=[0], msg_ids=queued, block=True)  # late, for the aborted one
    rc.send_signal(signal.SIGINT, targets=[0], msg_ids=first, block=True)  # late, for one that finished
    assert not nxt.done()
    release.touch()
    assert nxt.get(timeout=10) == "released"


def test_msg_ids_only_with_sigint(rc):
    with pytest.raises(ValueError, match="SIGINT only"):
        rc.send_signal(signal.SIGTERM, targets=[0], msg_ids=["m"])
    assert rc[0].apply_sync(lambda: "alive") == "alive"


def test_sigint_without_msg_ids_still_interrupts_whatever_runs(rc, tmp_path):
    ar = start_waiting(rc, tmp_path / "never")
    rc.send_signal(signal.SIGINT, targets=[0], block=True)
    assert ar.get(timeout=10) == "interrupted"


def ignore_sigint_until_released(path):
    import os
    import signal
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine puts its own handler back afterwards
    print("started", flush=True)
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


def test_a_task_with_its_own_sigint_handler_leaves_later_signals_alone(rc, tmp_path):
    release = tmp_path / "release"
    ar = rc[0].apply_async(ignore_sigint_until_released, str(release))
    wait_for(lambda: ar.stdout == "started\n", what="task to start")
    rc.send_signal(signal.SIGINT, targets=[0], msg_ids=ar, block=True)  # the task ignores it
    rc.send_signal(signal.SIGINT, targets=[0], msg_ids=["other"], block=True)  # fence: handled after it
    release.touch()
    assert ar.get(timeout=10) == "released"
    nxt = start_waiting(rc, tmp_path / "never")
    rc.send_signal(signal.SIGINT, targets=[0], block=True)  # from a user, for whatever runs
    assert nxt.get(timeout=10) == "interrupted"
