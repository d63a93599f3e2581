"""ViewExecutor: a :class:`concurrent.futures.Executor` that runs its work through a view.

Code written against the standard ``Executor`` interface (``submit``, ``map``, ``shutdown``, ``with``)
runs on the engines unchanged::

    with rc.executor() as ex:              # over rc.load_balanced_view()
        fut = ex.submit(pow, 2, 10)         # an AsyncResult, which is a concurrent.futures.Future
        squares = list(ex.map(lambda x: x * x, range(100), chunksize=10))

The executor owns no engines and no client: ``shutdown`` only stops it accepting work (and waits for,
or aborts, what it handed out); the client and the cluster carry on.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ipcluster.client.asyncresult import AsyncResult

if TYPE_CHECKING:
    from ipcluster.client.view import View


class ViewExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose tasks run on the engines of *view*.

    Parameters
    ----------
    view: a :class:`~ipcluster.LoadBalancedView` (each ``submit`` is one task placed by the
        controller) or a :class:`~ipcluster.DirectView` (each ``submit`` runs on every target; with a
        single int target its future holds one value, otherwise the list of the targets' values).

    Futures are the view's :class:`~ipcluster.AsyncResult` objects, so ``concurrent.futures.wait``,
    ``as_completed`` and ``await`` work on them, and remote errors are raised with their original type.
    """

    def __init__(self, view: "View"):
        self.view = view
        self._lock = threading.Lock()
        self._shutdown = False
        # Futures handed out and not yet done: what shutdown(wait=True) waits for.
        self._pending: set[concurrent.futures.Future[Any]] = set()

    # --- bookkeeping --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _track(self, fut: AsyncResult) -> None:
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._forget)  # runs at once if already done

    def _forget(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(fut)

    # --- Executor API -------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> AsyncResult:  # type: ignore[override]
        """Run ``fn(*args, **kwargs)`` through the view; returns its :class:`~ipcluster.AsyncResult`."""
        with self._lock:
            self._check_open()
        ar = self.view.apply_async(fn, *args, **kwargs)
        self._track(ar)
        return ar

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the engines, like :meth:`concurrent.futures.Executor.map`.

        All the work is submitted now (the iterables are consumed at once, stopping at the shortest);
        the returned iterator yields results in order as they arrive.  *timeout* counts from this
        call: reaching an item that is not ready by then raises :class:`TimeoutError`.  An item that
        failed raises its error when it is reached.  A :class:`~ipcluster.LoadBalancedView` sends
        *chunksize* items per task; a :class:`~ipcluster.DirectView` splits the items in one
        contiguous block per target and ignores *chunksize*.  If iteration stops early (error,
        timeout, or the iterator is closed), chunks not yet started are aborted.
        """
        end_time = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._check_open()
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        items = list(zip(*iterables))
        if not items:
            return iter(())
        columns = [list(col) for col in zip(*items)]
        from ipcluster.client.lbview import LoadBalancedView

        if isinstance(self.view, LoadBalancedView):
            amr = self.view.map_async(fn, *columns, chunksize=chunksize)
        else:
            amr = self.view.map_async(fn, *columns)  # type: ignore[attr-defined]
        self._track(amr)
        return _results(amr, end_time)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; the view, its client and the cluster stay usable.

        ``cancel_futures=True`` aborts the work handed out that has not started: those futures fail
        with :class:`~ipcluster.TaskAborted` (work already running finishes).  ``wait=True`` returns
        once every future this executor handed out is done.
        """
        with self._lock:
            self._shutdown = True
            pending = list(self._pending)
        if cancel_futures:
            for fut in pending:
                if not fut.done() and isinstance(fut, AsyncResult):
                    fut.abort()
        if wait and pending:
            concurrent.futures.wait(pending)

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "open"
        return f"<{type(self).__name__} over {self.view!r}: {state}>"


def _results(amr: Any, end_time: float | None) -> Iterator[Any]:
    """Yield the items of *amr* in order, each chunk waited for until *end_time* at most."""
    # The chunk futures are the map's own children (one per task); iterating them directly lets each
    # wait carry the remaining time, which AsyncMapResult.__iter__ does not take.
    children: list[concurrent.futures.Future[Any]] = amr._children
    try:
        for child in children:
            remaining = None if end_time is None else max(0.0, end_time - time.monotonic())
            try:
                chunk = child.result(remaining)
            except concurrent.futures.TimeoutError:
                if child.done():  # the remote function itself raised a TimeoutError
                    raise
                raise TimeoutError("map result not ready within the timeout") from None
            yield from (chunk if isinstance(chunk, (list, tuple)) else amr._joiner([chunk]))
    finally:
        if not amr.done():
            amr.abort()


__all__ = ["ViewExecutor"]
