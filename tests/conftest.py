"""Shared test fixtures: private profile dirs, deadline-based waiting, leak checks."""

from __future__ import annotations

import time
from typing import Callable, Iterable

import psutil
import pytest


def alive(pid: int) -> bool:
    """Whether *pid* is a running process (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def dead_pid() -> int:
    """A pid no process has right now."""
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


def kill_all(pids: Iterable[int]) -> set[int]:
    """SIGKILL every live process of *pids*; return the ones that were still alive."""
    leftover = {pid for pid in pids if alive(pid)}
    for pid in leftover:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    return leftover


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10,
    watch: Iterable[object] = (),
    interval: float = 0.005,
    what: str = "condition",
) -> object:
    """Poll *predicate* until it is truthy; fail at once if a watched process has exited.

    *watch* holds objects with ``poll()`` (Popen) or psutil.Process; a dead one fails the wait
    immediately instead of waiting out the deadline.  The polling interval backs off to 0.1 s.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for p in watch:
            code = p.poll() if hasattr(p, "poll") else (None if p.is_running() else -1)
            if code is not None:
                pytest.fail(f"process {getattr(p, 'pid', p)} exited with {code} while waiting for {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait, not synchronisation
        interval = min(interval * 2, 0.1)


@pytest.fixture
def ipdir(tmp_path, monkeypatch):
    """$IPYTHONDIR set to a path under tmp_path that does not exist yet."""
    d = tmp_path / "ipython"
    monkeypatch.setenv("IPYTHONDIR", str(d))
    return d


@pytest.fixture
def ipython_dir(tmp_path, monkeypatch):
    """A private $IPYTHONDIR so tests never touch ~/.ipython."""
    d = tmp_path / "ipython"
    d.mkdir()
    monkeypatch.setenv("IPYTHONDIR", str(d))
    return d


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


@pytest.fixture
def no_leaked_processes():
    """Fail if the test leaves child processes behind (they are killed either way)."""
    before = _children()
    yield
    assert_children_gone(before, "test")


def assert_children_gone(before: set[int], who: str, timeout: float = 10) -> None:
    """Wait up to *timeout* for child processes started since *before* to end; kill and fail if not."""
    deadline = time.monotonic() + timeout
    leaked = _children() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval of a deadline-bounded wait
        leaked = _children() - before
    kill_all(leaked)
    assert not leaked, f"{who} left processes behind: {sorted(leaked)}"
