"""ProcessHandle by pid, log tails and the sync runner (no subprocesses)."""

from __future__ import annotations

import asyncio
import os
import threading

import psutil
import pytest

from ipcluster.cluster.launchers.local import LocalControllerLauncher
from ipcluster.cluster.launchers.process import ProcessHandle, pid_alive, tail_file
from ipcluster.cluster.syncrun import in_thread, run_sync
from ipcluster.errors import LauncherError


def dead_pid() -> int:
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


def test_pid_alive():
    me = psutil.Process()
    assert pid_alive(me.pid)
    assert pid_alive(me.pid, me.create_time())
    assert not pid_alive(me.pid, me.create_time() - 100)  # recycled pid
    assert not pid_alive(dead_pid())
    assert not pid_alive(None)
    assert not pid_alive(0)


def test_attached_handle_of_a_live_process():
    h = ProcessHandle.attach(os.getpid())
    assert h.poll() is None and h.running and not h.exited
    assert h.to_dict()["pid"] == os.getpid()
    with pytest.raises(TimeoutError):
        asyncio.run(h.wait(0.01))


def test_attached_handle_of_a_dead_process():
    h = ProcessHandle.attach(dead_pid())
    assert h.poll() is None  # exit code unknown ...
    assert h.exited and not h.running  # ... but it has ended
    assert asyncio.run(h.wait(1)) is None
    h.send_signal(15)  # ignored, no error


def test_tail_file(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_file(log, 3) == "line 97\nline 98\nline 99"
    assert tail_file(tmp_path / "missing.log") == ""
    assert tail_file(None) == ""
    big = tmp_path / "big.log"
    big.write_text("x" * 200_000 + "\nlast\n")
    assert tail_file(big, 5, max_bytes=1000) == "last"


def test_launcher_failure_names_exit_and_output(tmp_path):
    log = tmp_path / "c.log"
    log.write_text("starting\nTraceback (most recent call last):\nValueError: boom\n")
    launcher = LocalControllerLauncher(log_path=str(log))
    launcher.process = ProcessHandle.attach(dead_pid())
    err = launcher.failure("the controller exited")
    assert isinstance(err, LauncherError)
    assert "exit code unknown" in str(err) and "ValueError: boom" in str(err)
    assert err.output.endswith("ValueError: boom")


def test_launcher_to_dict_from_dict(tmp_path):
    launcher = LocalControllerLauncher(profile_dir="/p", cluster_id="c", log_path="/p/log/c.log",
                                       ip="0.0.0.0", location="host", log_level="DEBUG")
    launcher.process = ProcessHandle.attach(os.getpid(), pgid=None)
    launcher.args = ["a", "b"]
    d = launcher.to_dict()
    assert d["launcher"] == "local" and d["pid"] == os.getpid() and d["args"] == ["a", "b"]
    again = LocalControllerLauncher.from_dict(d)
    assert again.to_dict() == d
    assert again.running and again.ip == "0.0.0.0" and again.location == "host"


def test_start_without_log_path_is_refused():
    with pytest.raises(LauncherError, match="log_path"):
        asyncio.run(LocalControllerLauncher().start())


async def _answer():
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_run_sync_without_a_loop():
    assert run_sync(_answer()) == threading.current_thread().name


def test_run_sync_inside_a_running_loop():
    # what a Jupyter cell does: a loop is running in this thread already
    async def cell():
        return run_sync(_answer())

    name = asyncio.run(cell())
    assert name != threading.current_thread().name and name.startswith("ipcluster-sync")


def test_run_sync_propagates_errors_inside_a_running_loop():
    async def boom():
        raise LauncherError("nope")

    async def cell():
        return run_sync(boom())

    with pytest.raises(LauncherError, match="nope"):
        asyncio.run(cell())


def test_in_thread():
    async def main():
        assert await in_thread(lambda a, b: a + b, 1, b=2) == 3
        with pytest.raises(ZeroDivisionError):
            await in_thread(lambda: 1 / 0)

    asyncio.run(main())


def test_in_thread_hands_abandoned_results_over():
    release = threading.Event()
    handed_over = threading.Event()
    abandoned = []

    def on_abandoned(value):
        abandoned.append(value)
        handed_over.set()

    async def main():
        fut = in_thread(release.wait, on_abandoned=on_abandoned)
        fut.cancel()
        release.set()
        await asyncio.get_running_loop().run_in_executor(None, handed_over.wait, 5)

    asyncio.run(main())
    assert abandoned == [True]
