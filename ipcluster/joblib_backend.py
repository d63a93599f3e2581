"""A joblib parallel backend that runs ``joblib.Parallel`` work on ipcluster engines.

Register it once, then select it with ``joblib.parallel_config``::

    import joblib
    import ipcluster as ipp

    ipp.register_joblib_backend()                        # name "ipcluster"
    with joblib.parallel_config("ipcluster", view=rc.load_balanced_view()):
        joblib.Parallel(n_jobs=-1)(joblib.delayed(f)(i) for i in range(100))

Which engines: the ``view`` given to ``parallel_config`` (or to ``register_joblib_backend``, which
makes it the default for that name); without one, each ``Parallel`` call connects a ``Client()`` of
the default profile and closes it when the call ends.  Batches of joblib tasks are load-balanced
tasks; ``n_jobs`` is ignored in favour of the number of engines (reported as 2 for a view of one
engine, since joblib runs everything in the calling process when told 1).

joblib is an optional dependency (``pip install ipcluster[joblib]``); this module is imported only
when :func:`register_joblib_backend` is first used, so ``import ipcluster`` never imports joblib.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable

from joblib.parallel import AutoBatchingMixin, ParallelBackendBase, register_parallel_backend

if TYPE_CHECKING:
    from ipcluster.client.lbview import LoadBalancedView


class IPClusterBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib backend: each batch of calls is one task on a :class:`~ipcluster.LoadBalancedView`.

    Parameters
    ----------
    view: the view to send tasks through.  ``None``: a ``Client()`` of the default profile is
        connected when a ``Parallel`` call starts and closed when it ends.
    """

    # The engines are other processes: no shared memory, and joblib may nest thread backends
    # inside our tasks (get_nested_backend's default) without oversubscribing this process.
    uses_threads = False
    supports_sharedmem = False
    # Results are collected by a done-callback on the client's IO thread; joblib then applies its
    # own per-task timeout.
    supports_retrieve_callback = True

    def __init__(self, view: "LoadBalancedView | None" = None, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **kwargs: Any):
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs)
        self._view = view
        self._owned_client: Any = None  # a Client() we connected, closed by terminate()
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()

    @property
    def view(self) -> "LoadBalancedView":
        """The view tasks go through (connecting the default client on first use if none was given)."""
        if self._view is None:
            from ipcluster.client.client import Client

            self._owned_client = Client()
            self._view = self._owned_client.load_balanced_view()
        return self._view

    # --- joblib interface ---------------------------------------------------------------------

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """The number of engines the view can use, whatever *n_jobs* asks for (but never 1).

        joblib runs every call in the calling process when this returns 1, so a view of one engine
        (or none registered yet) reports 2: the work still goes to the engines, queued there.
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        return max(2, len(self.view))

    def configure(self, n_jobs: int = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **backend_kwargs: Any) -> int:
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> Any:
        """Send one batch as a task; *callback* gets the future when it is done."""
        ar = self.view.apply_async(func)
        with self._lock:
            self._pending.add(ar)
        ar.add_done_callback(self._forget)
        if callback is not None:
            ar.add_done_callback(callback)
        return ar

    # joblib < 1.5 calls apply_async instead of submit.
    apply_async = submit

    def retrieve_result_callback(self, out: concurrent.futures.Future[Any]) -> Any:
        """The batch's results, or its error raised with the original exception type."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Abort the batches not yet started (after a task failed); running ones finish."""
        with self._lock:
            pending = [f for f in self._pending if not f.done()]
        if pending and self._view is not None:
            self._view.client.abort(pending, block=False)

    def terminate(self) -> None:
        """End of a ``Parallel`` call: close the client this backend connected, if any."""
        with self._lock:
            self._pending.clear()
        if self._owned_client is not None:
            self._owned_client.close()
            self._owned_client = None
            self._view = None

    def _forget(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(fut)


def register_joblib_backend(name: str = "ipcluster", make_default: bool = False,
                            view: "LoadBalancedView | None" = None) -> None:
    """Register the ipcluster backend with joblib under *name*.

    Parameters
    ----------
    name: the name to pass to ``joblib.parallel_config`` / ``parallel_backend``.
    make_default: also make it joblib's default backend.
    view: the :class:`~ipcluster.LoadBalancedView` to use when ``parallel_config`` gives none.  A
        ``view=`` given to ``joblib.parallel_config(name, view=...)`` takes precedence; with neither,
        each ``Parallel`` call uses a ``Client()`` of the default profile.
    """
    # A partial's keywords yield to the caller's, so parallel_config(name, view=...) still wins.
    factory: Callable[..., IPClusterBackend] = (
        IPClusterBackend if view is None else functools.partial(IPClusterBackend, view=view))
    register_parallel_backend(name, factory, make_default=make_default)


__all__ = ["IPClusterBackend", "register_joblib_backend"]
