"""A :class:`concurrent.futures.Future` that builds its ``threading.Condition`` only when a thread waits.

The standard future makes a ``Condition`` (a Python object around an ``RLock``) in its constructor
and takes it for every state change and query.  A client makes one future per request, and most are
never waited on while pending (an ``apply_async`` loop finds many results already there), so that
condition is most of what a future costs: about 2 µs out of the client's per-task budget, and again
for each notification nobody listens to.

:class:`LightFuture` guards its state with a plain ``threading.Lock`` (a C object) and creates the
condition, over that same lock, the first time something needs it: a ``result``/``exception`` call
that has to wait, or ``concurrent.futures.wait`` / ``as_completed`` (which take ``_condition``
directly).  Everything else keeps the standard semantics and is still a
``concurrent.futures.Future`` for ``isinstance``, ``wait``, ``as_completed`` and
``asyncio.wrap_future``.

Invariant: the condition is created, and ``_waiters`` is appended to, only while ``_state_lock`` is held;
a state change holds ``_state_lock`` and notifies the condition if there is one by then.  So a waiter either
sees the new state when it checks under the lock, or is registered on the condition the setter
notifies.
"""

from __future__ import annotations

import concurrent.futures
import threading
from concurrent.futures._base import (  # the states the standard future and wait() use
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
    _STATE_TO_DESCRIPTION_MAP,
)
from typing import Any, Callable

_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))
_allocate_lock = threading.Lock


class LightFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` whose condition is made on first wait (see the module docstring)."""

    def __init__(self) -> None:
        # (Future.__init__ is not called: it would build the condition this class avoids.)
        self._state_lock = _allocate_lock()
        self._cond: threading.Condition | None = None
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # made on first use (most futures have neither): see the properties below
        self._waiter_list: list[Any] | None = None
        self._callbacks: list[Callable[[Any], Any]] | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with self._state_lock:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition(self._state_lock)
        return cond

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        # (what concurrent.futures.wait / as_completed append to, holding the condition's lock)
        waiters = self._waiter_list
        if waiters is None:
            waiters = self._waiter_list = []
        return waiters

    @property
    def _done_callbacks(self) -> list[Callable[[Any], Any]]:  # type: ignore[override]
        callbacks = self._callbacks
        if callbacks is None:
            callbacks = self._callbacks = []
        return callbacks

    # --- queries (a read of one attribute needs no lock) ----------------------------------------

    def done(self) -> bool:
        return self._state in _DONE

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def running(self) -> bool:
        return self._state == RUNNING

    def result(self, timeout: float | None = None) -> Any:
        # FINISHED is set after the result, under the lock: once it is seen, the result is there
        if self._state == FINISHED:
            exc = self._exception
            if exc:  # (truthiness, as the standard future)
                try:
                    raise exc
                finally:  # (as the standard future: no cycle through the traceback)
                    self = None  # type: ignore[assignment]
                    exc = None
            return self._result
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def __repr__(self) -> str:
        # the standard text, read without the lock (the standard one would build the condition)
        state, exc = self._state, self._exception
        head = f"<{type(self).__name__} at {id(self):#x} state={_STATE_TO_DESCRIPTION_MAP[state]}"
        if state == FINISHED:
            if exc:
                return f"{head} raised {type(exc).__name__}>"
            return f"{head} returned {type(self._result).__name__}>"
        return head + ">"

    # --- callbacks and state changes ------------------------------------------------------------

    def _invoke_callbacks(self) -> None:
        for callback in self._callbacks or ():
            try:
                callback(self)
            except Exception:
                LOGGER.exception("exception calling callback for %r", self)

    def add_done_callback(self, fn: Callable[[Any], Any]) -> None:
        with self._state_lock:
            if self._state not in _DONE:
                callbacks = self._callbacks
                if callbacks is None:
                    callbacks = self._callbacks = []
                callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def cancel(self) -> bool:
        with self._state_lock:
            state = self._state
            if state == RUNNING or state == FINISHED:
                return False
            if state in _CANCELLED:
                return True
            self._state = CANCELLED
            if self._cond is not None:
                self._cond.notify_all()
        self._invoke_callbacks()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        with self._state_lock:
            if self._state == CANCELLED:
                self._state = CANCELLED_AND_NOTIFIED
                for waiter in self._waiter_list or ():
                    waiter.add_cancelled(self)
                return False
            if self._state == PENDING:
                self._state = RUNNING
                return True
            state = self._state
        LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
        raise RuntimeError("Future in unexpected state")

    def set_result(self, result: Any) -> None:
        self._settle(result, None, "add_result")

    def set_exception(self, exception: BaseException | None) -> None:
        self._settle(None, exception, "add_exception")

    def _settle(self, result: Any, exception: BaseException | None, tell_waiter: str) -> None:
        with self._state_lock:
            state = self._state
            if state not in _DONE:
                self._result, self._exception = result, exception
                self._state = FINISHED
                for waiter in self._waiter_list or ():
                    getattr(waiter, tell_waiter)(self)
                if self._cond is not None:
                    self._cond.notify_all()
        if state in _DONE:
            raise concurrent.futures.InvalidStateError(f"{state}: {self!r}")
        if self._callbacks:
            self._invoke_callbacks()


__all__ = ["LightFuture"]
