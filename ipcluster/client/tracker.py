"""What a client is waiting for: one future and one :class:`Metadata` per request.

Pure bookkeeping, no sockets: the client registers a request before sending it, and the IO thread
feeds outputs and replies in.  Called from two threads (register from the user's, the rest from the
IO thread); each operation touches a handful of dict entries, guarded by one lock.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict, deque
from threading import get_ident
from typing import Any, Callable

from ipcluster.client.future import LightFuture
from ipcluster.client.metadata import Metadata, new_metadata, reply_value
from ipcluster.protocol.session import Message

Future = concurrent.futures.Future
log = logging.getLogger("ipcluster.client")


#: Default bounds of what a client remembers about finished requests (see :class:`RequestTracker`).
RESULTS_MAX_BYTES = 64 * 1024 * 1024
HISTORY_MAX = 100_000
#: A burst of replies completes its futures at least every this many replies.
MAX_DEFERRED = 256
#: What a reply's metadata tells about its request (each kept unless absent or null).
_REPLY_KEYS = ("engine_id", "received", "started", "completed", "status")


class RequestTracker:
    """Futures, metadata and results by msg_id.

    Finished requests are remembered in ``results`` / ``metadata`` / ``history`` for lookup, within
    bounds: at most ``history_max`` entries, and results whose reply buffers add up to at most
    ``results_max_bytes``; the oldest are forgotten first.  The :class:`AsyncResult` a caller
    holds keeps its own value whatever happens here, so a long run of big pulls does not pile up
    in the client.
    """

    def __init__(self, results_max_bytes: int = RESULTS_MAX_BYTES, history_max: int = HISTORY_MAX) -> None:
        self._lock = threading.Lock()
        self.futures: dict[str, Future[Any]] = {}
        self.metadata: dict[str, Metadata] = {}
        self.results: OrderedDict[str, Any] = OrderedDict()
        self._result_bytes: dict[str, int] = {}
        self._total_bytes = 0
        self.results_max_bytes = results_max_bytes
        self.history: deque[str] = deque(maxlen=history_max)
        self.outstanding: set[str] = set()
        self._by_engine: dict[bytes, set[str]] = {}
        self._engine_of: dict[str, bytes] = {}
        self._recorded: set[str] = set()  # msg_ids that go into results/history (tasks)
        # called with every output message after it is recorded (e.g. the %px magics' streaming);
        # replaced, never mutated, so the IO thread iterates without a lock
        self._output_hooks: tuple[Callable[[Message], None], ...] = ()
        # Replies handled inside a `with tracker.batch:` (the IO thread reading a burst of them)
        # complete their futures when the block ends: a caller waiting on each result in turn
        # is then woken once per burst instead of once per reply (each wake-up is a system call
        # and a GIL hand-over).  Only the thread that opened the batch defers; everything else
        # that completes a future on that thread first completes what is deferred, in order.
        self.batch = _Batch(self)
        self._deferred: list[tuple[str, Future[Any], bool, Any, int]] | None = None
        self._deferring_thread = 0

    def register(self, msg_id: str, engine_uuid: bytes, engine_id: int | None, record: bool = True,
                 future: Any = None) -> Future[Any]:
        """Start tracking request *msg_id*; returns its future.

        *future*: a future to complete instead of a new one, with a ``_bind_request(msg_id,
        metadata)`` method that is given the request's metadata (an AsyncResult that stands for
        the request itself); otherwise a new future gets the metadata as its ``metadata`` attribute.
        """
        md = new_metadata(msg_id, engine_id, engine_uuid.decode("ascii", "replace"), time.time())
        if future is None:
            fut: Future[Any] = LightFuture()
            fut.metadata = md  # type: ignore[attr-defined]  # the AsyncResult keeps it, whatever is evicted
        else:
            fut = future
            future._bind_request(msg_id, md)
        with self._lock:
            self.futures[msg_id] = fut
            self.metadata[msg_id] = md
            self.outstanding.add(msg_id)
            on_engine = self._by_engine.get(engine_uuid)
            if on_engine is None:
                on_engine = self._by_engine[engine_uuid] = set()
            on_engine.add(msg_id)
            self._engine_of[msg_id] = engine_uuid
            if record:
                self.history.append(msg_id)
                self._recorded.add(msg_id)
        return fut

    def on_output(self, msg: Message) -> None:
        md = self.metadata.get(msg.parent_id)
        if md is None:
            return
        c = msg.content
        t = msg.msg_type
        if t == "stream":
            name = "stderr" if c.get("name") == "stderr" else "stdout"
            md[name] = md[name] + str(c.get("text", ""))
        elif t == "display_data":
            md["outputs"] = md["outputs"] + [c]
        elif t == "execute_result":
            md["execute_result"] = c
        elif t == "error":
            md["error"] = c
        for hook in self._output_hooks:
            try:
                hook(msg)
            except Exception:  # a hook's failure must not stop the IO thread
                log.exception("output hook %r failed", hook)

    def add_output_hook(self, hook: Callable[[Message], None]) -> None:
        """Call *hook(msg)* for each output message (stream, display_data, execute_result, error)
        of a known request, after it is recorded, on the thread that received it.

        Outputs of a request come before its reply, so a hook has seen all of them by the time
        the request's future is done.
        """
        with self._lock:
            self._output_hooks = (*self._output_hooks, hook)

    def remove_output_hook(self, hook: Callable[[Message], None]) -> None:
        with self._lock:
            self._output_hooks = tuple(h for h in self._output_hooks if h != hook)

    def on_reply(self, msg: Message) -> None:
        msg_id = msg.parent_id
        md = self.metadata.get(msg_id)
        fut = self.futures.get(msg_id)
        if md is None or fut is None or fut.done():
            return  # not ours, or already failed (e.g. engine died and a late reply arrived)
        rmd = msg.metadata
        for key in _REPLY_KEYS:
            value = rmd.get(key)
            if value is not None:
                md[key] = value
        if not md["status"]:
            md["status"] = msg.content.get("status")
        try:
            ok, value = reply_value(msg)
        except Exception as e:  # the result did not unpickle here
            ok, value = False, e
        nbytes = 0
        for b in msg.buffers:
            nbytes += _nbytes(b)
        deferred = self._deferred
        if deferred is not None and get_ident() == self._deferring_thread:
            deferred.append((msg_id, fut, ok, value, nbytes))
            if len(deferred) >= MAX_DEFERRED:
                self.complete_deferred()
            return
        self._complete(msg_id, fut, ok, value, nbytes)

    def complete_deferred(self) -> None:
        """Complete the futures of the replies deferred by :attr:`batch` (on its thread), in order."""
        deferred = self._deferred
        if not deferred or get_ident() != self._deferring_thread:
            return
        self._deferred = []
        self._complete_each(deferred)

    def _complete_each(self, deferred: list[tuple[str, Future[Any], bool, Any, int]]) -> None:
        # the bookkeeping of the whole burst under one lock, then the futures, in order
        done = []
        with self._lock:
            for entry in deferred:
                # (a second reply to the same request in one burst: the first counts)
                if not entry[1].done() and self._record(entry[0], entry[3], entry[4]):
                    done.append(entry)
        for _, fut, ok, value, _ in done:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def fail(self, msg_id: str, exc: BaseException) -> None:
        self.complete_deferred()  # a reply that came before the failure is the outcome
        fut = self.futures.get(msg_id)
        if fut is not None and not fut.done():
            md = self.metadata.get(msg_id)
            if md is not None:
                md["status"] = "error"
                md["completed"] = time.time()
            self._complete(msg_id, fut, False, exc)

    def fail_engine(self, engine_uuid: bytes, make_exc: Callable[[str], BaseException]) -> int:
        with self._lock:
            ids = list(self._by_engine.get(engine_uuid, ()))
        for msg_id in ids:
            self.fail(msg_id, make_exc(msg_id))
        return len(ids)

    def fail_all(self, make_exc: Callable[[str], BaseException]) -> int:
        with self._lock:
            ids = list(self.outstanding)
        for msg_id in ids:
            self.fail(msg_id, make_exc(msg_id))
        return len(ids)

    def outstanding_on(self, engine_uuid: bytes) -> list[str]:
        with self._lock:
            return list(self._by_engine.get(engine_uuid, ()))

    def _complete(self, msg_id: str, fut: Future[Any], ok: bool, value: Any, nbytes: int = 0) -> None:
        with self._lock:
            recorded = self._record(msg_id, value, nbytes)
        if not recorded or fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def _record(self, msg_id: str, value: Any, nbytes: int) -> bool:
        """Take finished request *msg_id* off the books and remember its result (caller holds the
        lock); ``False`` if it was taken off already (completed twice)."""
        if self.futures.pop(msg_id, None) is None:  # whoever waits holds the future itself
            return False
        self.outstanding.discard(msg_id)
        engine = self._engine_of.pop(msg_id, None)
        if engine is not None:
            s = self._by_engine.get(engine)
            if s is not None:
                s.discard(msg_id)
                if not s:
                    del self._by_engine[engine]
        if msg_id in self._recorded:
            self._recorded.discard(msg_id)
            self.results[msg_id] = value
            self._result_bytes[msg_id] = nbytes
            self._total_bytes += nbytes
            if self._total_bytes > self.results_max_bytes or len(self.results) > (self.history.maxlen or 0) \
                    or len(self.metadata) > 2 * (self.history.maxlen or 0):
                self._evict()
        else:
            self.metadata.pop(msg_id, None)
        return True

    def _evict(self) -> None:
        """Forget the oldest finished requests beyond the bounds (caller holds the lock)."""
        limit = self.history.maxlen or 0
        while self.results and (self._total_bytes > self.results_max_bytes or len(self.results) > limit):
            old, _ = self.results.popitem(last=False)
            self._total_bytes -= self._result_bytes.pop(old, 0)
            if old not in self.outstanding:
                self.metadata.pop(old, None)
        if len(self.metadata) > 2 * limit:  # metadata of requests that never finished, e.g. aborted
            for old in list(self.metadata)[: len(self.metadata) - limit]:
                if old not in self.outstanding:
                    del self.metadata[old]

    def purge(self, msg_ids: list[str] | None = None) -> None:
        """Forget finished requests (all of them by default); outstanding ones are kept."""
        with self._lock:
            for m in list(self.results) if msg_ids is None else msg_ids:
                if m in self.outstanding:
                    continue
                self.results.pop(m, None)
                self.metadata.pop(m, None)
                self._total_bytes -= self._result_bytes.pop(m, 0)


class _Batch:
    """``with tracker.batch:`` defers completing futures of replies until the block ends (see
    :class:`RequestTracker`); nests, and only the outermost block completes."""

    __slots__ = ("_tracker", "_depth")

    def __init__(self, tracker: RequestTracker) -> None:
        self._tracker = tracker
        self._depth = 0

    def __enter__(self) -> None:
        t = self._tracker
        if self._depth == 0:
            t._deferring_thread = get_ident()
            t._deferred = []
        self._depth += 1

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            t = self._tracker
            # stop deferring first: callbacks of the futures completed below may handle replies
            # on this thread (they complete at once then)
            deferred, t._deferred, t._deferring_thread = t._deferred, None, 0
            t._complete_each(deferred or [])


def _nbytes(buf: Any) -> int:
    if buf.__class__ is bytes:
        return len(buf)
    try:
        return memoryview(buf).nbytes
    except TypeError:
        return 0
