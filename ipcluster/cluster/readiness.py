"""Waiting for a starting cluster while watching its processes.

Waiting for the connection file or for engines must not outlast a process that already died: each
wait here is raced against the launchers' ``wait()``, and the first exit becomes a
:class:`~ipcluster.errors.LauncherError` carrying the exit code and the last lines of output.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence, TypeVar

from ipcluster.cluster.syncrun import in_thread
from ipcluster.errors import ConnectionFileError
from ipcluster.errors import TimeoutError as IPClusterTimeout
from ipcluster.protocol.connection import read_json

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.client.client import Client
    from ipcluster.cluster.launchers.base import BaseLauncher

T = TypeVar("T")

#: How long each blocking ``wait_for_engines`` call may last before the processes are checked again.
ENGINE_WAIT_SLICE = 0.5


async def first_exit(launchers: Sequence["BaseLauncher"]) -> "BaseLauncher":
    """The first of *launchers* whose process ends (at once if one already has)."""
    for launcher in launchers:
        if not launcher.running:
            return launcher
    if not launchers:
        await asyncio.get_running_loop().create_future()  # nothing to watch: wait forever
    waits = {asyncio.ensure_future(launcher.wait()): launcher for launcher in launchers}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return waits[next(iter(done))]


async def watched(
    aw: Awaitable[T],
    launchers: Sequence["BaseLauncher"],
    describe: Callable[["BaseLauncher"], str],
) -> T:
    """Await *aw*; if one of *launchers* exits first, raise its ``failure(describe(launcher))``."""
    main = asyncio.ensure_future(aw)
    watcher = asyncio.ensure_future(first_exit(launchers))
    try:
        done, _ = await asyncio.wait({main, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        main.cancel()
        raise
    finally:
        watcher.cancel()
    if main in done:
        return main.result()
    main.cancel()
    launcher = watcher.result()
    raise launcher.failure(describe(launcher))


async def wait_for_connection_file(path: Path, controller_pid: int | None, deadline: float) -> None:
    """Wait until *path* holds a connection file (written by *controller_pid*, when known)."""
    interval = 0.002
    while True:
        if path.exists():
            try:
                info = read_json(path)
            except ConnectionFileError:
                info = None
            if info is not None and (controller_pid is None or info.get("controller_pid") in (None, controller_pid)):
                return  # (a file naming another pid is a stale one, about to be replaced)
        if time.monotonic() > deadline:
            raise IPClusterTimeout(f"no connection file {path} before the deadline")
        await asyncio.sleep(interval)  # polling interval of a deadline-bounded wait
        interval = min(interval * 1.5, 0.01)


async def wait_for_engines(client: "Client", n: int, deadline: float, what: str = "the cluster") -> None:
    """Wait until *client* sees *n* engines.

    The blocking ``wait_for_engines`` runs in slices so that an abandoned wait (a process died
    and :func:`watched` gave up on it) ends soon in its thread.
    """
    started = time.monotonic()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IPClusterTimeout(
                f"{len(client.ids)} of {n} engines of {what} registered within "
                f"{time.monotonic() - started:.0f} s"
            )
        try:
            await in_thread(client.wait_for_engines, n, timeout=min(remaining, ENGINE_WAIT_SLICE))
            return
        except IPClusterTimeout:
            continue
