"""Shared test fixtures: private profile dirs, deadline-based waiting, leak checks."""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

import psutil
import pytest


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10,
    watch: Iterable[object] = (),
    interval: float = 0.01,
    what: str = "condition",
) -> object:
    """Poll *predicate* until it is truthy; fail at once if a watched process has exited.

    *watch* holds objects with ``poll()`` (Popen) or psutil.Process; a dead one fails the wait
    immediately instead of waiting out the deadline.
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
    deadline = time.monotonic() + 10
    leaked = _children() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _children() - before
    for pid in leaked:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    assert not leaked, f"test left processes behind: {sorted(leaked)}"
