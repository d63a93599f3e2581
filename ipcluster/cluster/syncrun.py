"""Run coroutines from synchronous code, even inside a running event loop (Jupyter).

:func:`run_sync` runs a coroutine to completion: on a fresh event loop when this thread has none
running, otherwise on a private event loop in a helper thread (never nest_asyncio).
:func:`in_thread` runs a blocking call in a daemon thread and returns an awaitable future, so a
blocking call that outlives its awaiter (we stopped waiting) delays nothing at exit.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro* to completion and return its result (see the module docstring)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1, thread_name_prefix="ipcluster-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def in_thread(
    fn: Callable[..., T],
    *args: Any,
    on_abandoned: Callable[[T], Any] | None = None,
    **kwargs: Any,
) -> "asyncio.Future[T]":
    """Call ``fn(*args, **kwargs)`` in a new daemon thread; await the returned future for its result.

    If the future was cancelled (or its loop closed) before *fn* returned, the result is handed to
    *on_abandoned* (e.g. to close a connection nobody will use).
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def abandon(value: Any) -> None:
        if on_abandoned is not None:
            on_abandoned(value)

    def settle(value: Any, error: BaseException | None) -> None:
        if fut.done():
            if error is None:
                abandon(value)
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    def run() -> None:
        value, error = None, None
        try:
            value = fn(*args, **kwargs)
        except BaseException as e:  # handed to the awaiting task
            error = e
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            if error is None:
                abandon(value)

    threading.Thread(target=run, name=f"ipcluster-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return fut
