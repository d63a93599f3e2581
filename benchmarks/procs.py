"""Child processes of a benchmark run: none may outlive the cluster that started it.

A cluster's processes are this process's descendants.  Some launchers detach theirs (their parent
exits), which would hand them to init; :func:`become_subreaper` makes such orphans ours instead, so
:func:`stop_new` and :func:`reap` see every process a cluster started.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import time
from typing import Iterator

import psutil

#: Helpers the standard library starts once per process (Dask's workers use multiprocessing); they
#: exit with this process and belong to no cluster.
STDLIB_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants children of this process (Linux); False where not supported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def descendants() -> list[psutil.Process]:
    """Our live descendants, less the standard library's multiprocessing helpers."""
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if _alive(p) and not any(h in " ".join(p.cmdline()) for h in STDLIB_HELPERS):
                out.append(p)
    return out


def _collect_zombies() -> None:
    """Wait for our exited children (orphans adopted as subreaper included)."""
    for p in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if p.status() == psutil.STATUS_ZOMBIE:
                p.wait(0)


def reap(keep: set[int], timeout: float) -> list[str]:
    """Wait up to *timeout* s for our descendants not in *keep* to exit, then kill those left.

    Returns a description of each process that had to be killed (empty when all exited)."""
    deadline = time.monotonic() + timeout
    left = [p for p in descendants() if p.pid not in keep]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        _collect_zombies()
        left = [p for p in left if _alive(p)]
    described = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
            p.kill()
    _collect_zombies()
    return described


@contextlib.contextmanager
def stop_new(timeout: float = 10) -> Iterator[None]:
    """On the way out, give processes started inside the block *timeout* s to exit, then kill them
    (a cluster interrupted while starting may not know all the processes it started)."""
    before = {p.pid for p in descendants()}
    try:
        yield
    finally:
        killed = reap(before, timeout)
        if killed:
            print("# killed processes a cluster left behind: " + "; ".join(killed), file=sys.stderr)
