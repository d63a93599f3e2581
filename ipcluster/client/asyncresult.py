"""AsyncResult: the future a view returns for one call on one or many engines.

An :class:`AsyncResult` is a :class:`concurrent.futures.Future` (so ``concurrent.futures.wait`` and
``as_completed`` work) built over one child future per request (``msg_id``).  It completes when every
child has: with the single value (one target given as an int), the list of values, or — when requests
failed — the error (one target) or a :class:`~ipcluster.errors.CompositeError` (several).  It is also
awaitable from any asyncio loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, Sequence

from ipcluster import errors
from ipcluster.client.future import LightFuture
from ipcluster.client.metadata import Metadata

if TYPE_CHECKING:
    from ipcluster.client.client import Client


#: Seconds :meth:`AsyncResult.cancel` waits for the requests to end.
CANCEL_WAIT = 30.0
#: The (empty) msg_ids and metadata of an AsyncResult made for a request not registered yet.
_UNBOUND: list[Any] = []


class AsyncResult(LightFuture):
    """Result of a call on one or more engines.

    Parameters
    ----------
    client: the :class:`~ipcluster.Client` that sent the requests.
    msg_ids: one per request, in target order.
    fname: the name of what was called, for messages.
    single: ``True`` when the call named one engine by int: ``get()`` returns one value, not a list.
    """

    def __init__(
        self,
        client: "Client",
        msg_ids: Sequence[str],
        children: Sequence[concurrent.futures.Future],  # type: ignore[type-arg]
        fname: str = "unknown",
        single: bool = False,
    ):
        super().__init__()
        self._client = client
        self.msg_ids = list(msg_ids)
        self._fname = fname
        self._single = single
        self._kids: list[concurrent.futures.Future] | None = list(children)  # type: ignore[type-arg]
        self._metadata = [getattr(c, "metadata", None) or Metadata(msg_id=m) for c, m in zip(children, msg_ids)]
        self._submitted = time.time()
        self._lock = threading.Lock()
        self._remaining = len(self._kids)
        if all(c.done() for c in self._kids):  # (also: no children) nothing to wait for
            self._finish()
            return
        # The callback holds only a weak reference: a bound method would make a cycle
        # (self -> child -> callback -> self) that keeps every result alive until the cyclic
        # GC runs, which for large arrays means memory growing with each call.
        ref = weakref.ref(self)

        def child_done(child: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
            ar = ref()
            if ar is not None:
                ar._child_done(child)

        for child in self._kids:
            child.add_done_callback(child_done)

    @classmethod
    def _for_request(cls, client: "Client", fname: str) -> "AsyncResult":
        """An AsyncResult for one request on one target that is itself that request's future.

        The client's bookkeeping completes it directly (see :meth:`_bind_request`): no second
        future, no callback from one to the other.  Its only child, for the methods that look at
        children, is itself.
        """
        self = cls.__new__(cls)
        LightFuture.__init__(self)
        self._client = client
        self.msg_ids = _UNBOUND  # (until _bind_request, which comes before anyone else sees it)
        self._fname = fname
        self._single = True
        self._kids = None
        self._metadata = _UNBOUND
        self._submitted = time.time()
        return self

    def _bind_request(self, msg_id: str, metadata: Metadata) -> None:
        """(from the request tracker) This result stands for request *msg_id*, described by *metadata*."""
        self.msg_ids = [msg_id]
        self._metadata = [metadata]

    @property
    def _children(self) -> list[concurrent.futures.Future]:  # type: ignore[type-arg]
        kids = self._kids
        # (built on each use, not stored: a list holding self would be a reference cycle)
        return [self] if kids is None else kids

    # --- completion ---------------------------------------------------------------------------

    def _child_done(self, child: concurrent.futures.Future) -> None:  # type: ignore[type-arg]
        if self._single and self.__class__ is AsyncResult and len(self._children) == 1:
            # one request (every load-balanced apply): its outcome is ours as it is
            if not self.done():
                exc = child.exception()
                if exc is not None:
                    self.set_exception(exc)
                else:
                    self.set_result(child.result())
            return
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self._finish()

    def _values(self) -> tuple[list[Any], list[BaseException]]:
        values: list[Any] = []
        failures: list[BaseException] = []
        for child in self._children:
            exc = child.exception()
            if exc is not None:
                failures.append(exc)
                values.append(exc)
            else:
                values.append(child.result())
        return values, failures

    def _reconstruct(self, values: list[Any]) -> Any:
        return values[0] if self._single else values

    def _finish(self) -> None:
        values, failures = self._values()
        if self.done():
            return
        try:
            if failures:
                self.set_exception(failures[0] if self._single else errors.CompositeError(
                    f"one or more exceptions raised in {self._fname}", failures))
            else:
                self.set_result(self._reconstruct(values))
        except Exception as e:  # a joiner that fails (e.g. mixed chunk types) is the user's error
            if not self.done():
                self.set_exception(e)

    # --- ipyparallel-style API ----------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until done (or *timeout* seconds; ``-1``/``None`` waits forever); returns ``ready()``."""
        if timeout is not None and timeout < 0:
            timeout = None
        concurrent.futures.wait([self], timeout=timeout)
        return self.done()

    def get(self, timeout: float | None = None) -> Any:
        """The result, raising the remote error if the call failed.

        Raises :class:`ipcluster.TimeoutError` if not ready within *timeout* seconds.
        """
        if timeout is not None and timeout < 0:
            timeout = None
        try:
            return self.result(timeout)
        except concurrent.futures.TimeoutError:
            if self.done():  # the remote call itself raised a TimeoutError
                raise
            raise errors.TimeoutError(f"{self._fname}: result not ready after {timeout} s") from None

    def ready(self) -> bool:
        return self.done()

    def successful(self) -> bool:
        """Whether the call succeeded; raises ``AssertionError`` if it is not done yet."""
        if not self.done():
            raise AssertionError("successful() called before the result is ready")
        return self.exception() is None

    def get_dict(self, timeout: float | None = None) -> dict[int, Any]:
        """``{engine_id: result}``; requires one request per engine."""
        results = self.get(timeout)
        if self._single:
            results = [results]
        ids = [md["engine_id"] for md in self._metadata_list]
        if len(set(ids)) != len(ids):
            raise ValueError("get_dict() needs one request per engine; this result has several per engine")
        return dict(zip(ids, results))

    def wait_interactive(self, interval: float = 0.1, timeout: float = -1) -> bool:
        """Wait with a progress bar (tqdm; a widget in Jupyter), or one summary line when output is
        not a terminal.  Returns ``ready()``."""
        return wait_with_progress(self._children, interval, timeout, desc=self._fname) and self.wait(0)

    def abort(self) -> None:
        """Abort the requests that have not started yet (they fail with ``TaskAborted``)."""
        pending = [m for m, c in zip(self.msg_ids, self._children) if not c.done()]
        if pending:
            self._client.abort(pending, block=False)

    def cancel(self) -> bool:
        """Stop this call: what has not started is aborted (``TaskAborted``), what is running is
        interrupted and, if it does not stop within its engine supervisor's grace period, killed
        with its engine, which is restarted (``TaskCancelled``, a ``TaskAborted``).

        Waits until every request has ended (at most :data:`CANCEL_WAIT` seconds) and returns
        ``True`` if none of them completed; ``False`` if the call was already done or some request
        finished anyway (the result then holds what completed).  Engines without a supervisor
        only abort queued requests: running work there finishes.
        """
        if self.done():
            return False
        pending = [(m, c) for m, c in zip(self.msg_ids, self._children) if not c.done()]
        self._client.cancel([m for m, _ in pending])
        concurrent.futures.wait([c for _, c in pending], timeout=CANCEL_WAIT)
        return all(isinstance(c.exception(0) if c.done() else None, errors.TaskAborted) for c in self._children)

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()

    def __repr__(self) -> str:
        state = "finished" if self.done() else "pending"
        return f"<{type(self).__name__}({self._fname}): {state}>"

    # --- metadata -----------------------------------------------------------------------------

    @property
    def _metadata_list(self) -> list[Metadata]:
        return self._metadata

    def _collect(self, key: str) -> Any:
        values = [md[key] for md in self._metadata_list]
        return values[0] if self._single else values

    @property
    def metadata(self) -> Any:
        mds = self._metadata_list
        return mds[0] if self._single else mds

    @property
    def engine_id(self) -> Any:
        return self._collect("engine_id")

    @property
    def stdout(self) -> Any:
        return self._collect("stdout")

    @property
    def stderr(self) -> Any:
        return self._collect("stderr")

    @property
    def outputs(self) -> Any:
        return self._collect("outputs")

    @property
    def execute_result(self) -> Any:
        return self._collect("execute_result")

    @property
    def elapsed(self) -> float:
        """Seconds since submission, or until the last request completed."""
        if self.done():
            completed = [md["completed"] for md in self._metadata_list if md["completed"]]
            if completed:
                return max(completed) - self._submitted
        return time.time() - self._submitted

    @property
    def wall_time(self) -> float:
        """Seconds from the first submission to the last completion (requires ``ready()``)."""
        self._require_ready()
        mds = self._metadata_list
        submitted = [md["submitted"] for md in mds if md["submitted"]]
        completed = [md["completed"] for md in mds if md["completed"]]
        if not submitted or not completed:
            return 0.0
        return max(completed) - min(submitted)

    @property
    def serial_time(self) -> float:
        """Sum of the engines' computation times (requires ``ready()``)."""
        self._require_ready()
        return sum(md["completed"] - md["started"] for md in self._metadata_list
                   if md["completed"] and md["started"])

    def _require_ready(self) -> None:
        if not self.done():
            raise AssertionError("timing information is available once the result is ready")

    def display_outputs(self, groupby: str = "type") -> None:
        """Print (or display, under IPython) each engine's stdout, stderr and rich output.

        ``groupby="type"``: all stdout, then all stderr, then rich output and results;
        ``"engine"`` (or ``"order"``): everything of engine 0, then engine 1, ...
        """
        if groupby not in ("type", "engine", "order"):
            raise ValueError(f"groupby must be 'type', 'engine' or 'order', not {groupby!r}")
        display: Callable[..., Any] | None = None
        if "IPython" in sys.modules:
            from IPython.display import display as ipython_display

            display = ipython_display
        mds = sorted(self._metadata_list, key=lambda m: (m["engine_id"] is None, m["engine_id"]))
        kinds = ("stdout", "stderr", "rich")
        if groupby == "type":
            for kind in kinds:
                for md in mds:
                    _show_kind(md, kind, display)
        else:
            for md in mds:
                for kind in kinds:
                    _show_kind(md, kind, display)

    def __len__(self) -> int:
        return 1 if self._single else len(self.msg_ids)

    def __iter__(self) -> Iterator[Any]:
        value = self.get()
        yield from ([value] if self._single else value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._collect(key)
        value = self.get()
        return value[key] if not self._single else [value][key]


def wait_with_progress(futures: Sequence[concurrent.futures.Future], interval: float = 0.1,  # type: ignore[type-arg]
                       timeout: float = -1, desc: str = "tasks") -> bool:
    """Wait for *futures*, showing how many are done; ``True`` if all finished in time."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    deadline = None if timeout is None or timeout < 0 else start + timeout
    pending = set(futures)
    total = len(pending)
    with tqdm(total=total, desc=desc, unit="tasks", disable=None) as bar:
        while pending:
            wait_for = interval if deadline is None else min(interval, deadline - time.monotonic())
            if wait_for <= 0:
                break
            done, pending = concurrent.futures.wait(pending, timeout=wait_for,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            bar.update(len(done))
        quiet = bar.disable
    if quiet:  # not a terminal: tqdm drew nothing, say where we got
        print(f"{desc}: {total - len(pending)}/{total} done after {time.monotonic() - start:.2f} s")
    return not pending


def _show_kind(md: Metadata, kind: str, display: Callable[..., Any] | None) -> None:
    eid = md["engine_id"]
    if kind in ("stdout", "stderr"):
        text = md[kind]
        if text:
            print(f"[{kind}:{eid}] " + text, end="" if text.endswith("\n") else "\n",
                  file=sys.stdout if kind == "stdout" else sys.stderr)
        return
    for out in md["outputs"]:
        _show(out, display, eid)
    result = md["execute_result"]
    if result is not None:
        _show(result, display, eid, prefix=f"Out[{eid}:{result.get('execution_count')}]: ")


def _show(output: dict[str, Any], display: Callable[..., Any] | None, eid: Any, prefix: str = "") -> None:
    data = output.get("data", {})
    if display is not None and any(k != "text/plain" for k in data):
        display(data, raw=True, metadata=output.get("metadata") or {})
    else:
        print(f"{prefix}{data.get('text/plain', '')}" if prefix else f"[output:{eid}] {data.get('text/plain', '')}")


def _concatenate(chunks: list[Any]) -> Any:
    """``numpy.concatenate(chunks)``; a large result goes into a reused buffer of the process's
    pool (:mod:`ipcluster.protocol.bufpool`: fresh memory costs more than the copy)."""
    import numpy

    from ipcluster.protocol import bufpool

    first = chunks[0]
    dtype = first.dtype
    if (first.ndim == 0 or dtype.hasobject
            or any(c.dtype != dtype or c.ndim != first.ndim or c.shape[1:] != first.shape[1:] for c in chunks)):
        return numpy.concatenate(chunks)  # numpy's own rules (and errors) for mixed chunks
    shape = (sum(c.shape[0] for c in chunks), *first.shape[1:])
    nbytes = dtype.itemsize * int(numpy.prod(shape))
    if nbytes < bufpool.MIN_SIZE:
        return numpy.concatenate(chunks)
    out = numpy.frombuffer(bufpool.POOL.take(nbytes), dtype=dtype).reshape(shape)
    return numpy.concatenate(chunks, out=out)


def _join_chunks(chunks: list[Any]) -> Any:
    """Concatenate per-engine chunks in order: lists flatten; NumPy arrays concatenate."""
    if chunks and all(type(c).__module__ == "numpy" and hasattr(c, "shape") for c in chunks):
        return _concatenate(chunks)
    out: list[Any] = []
    for c in chunks:
        if isinstance(c, list):
            out.extend(c)
        elif isinstance(c, tuple) or type(c).__module__ == "numpy" and hasattr(c, "shape"):
            out.extend(list(c))
        else:
            out.append(c)
    return out


class AsyncMapResult(AsyncResult):
    """Result of a ``map``, ``scatter`` or ``gather``: per-engine chunks joined back in order.

    Iterating yields the items in order as their chunks arrive (no need to wait for the whole map);
    with ``ordered=False`` it yields each chunk's items as soon as that chunk is done.  For a
    ``map``, ``len()`` is the number of items from the start, :meth:`partial` gives the items
    finished so far, and :attr:`item_metadata` tells where and when each item ran.
    """

    def __init__(self, client: "Client", msg_ids: Sequence[str],
                 children: Sequence[concurrent.futures.Future], fname: str = "map",  # type: ignore[type-arg]
                 joiner: Callable[[list[Any]], Any] = _join_chunks, ordered: bool = True,
                 item_counts: Sequence[int] | None = None):
        self._joiner = joiner
        self.ordered = ordered
        # items per chunk, when each chunk's result is a list of that many items (map)
        self._item_counts = list(item_counts) if item_counts is not None else None
        super().__init__(client, msg_ids, children, fname, single=False)

    def _reconstruct(self, values: list[Any]) -> Any:
        return self._joiner(values)

    def __iter__(self) -> Iterator[Any]:
        children: Any = self._children
        if not self.ordered:
            children = concurrent.futures.as_completed(self._children)
        for child in children:
            chunk = child.result()  # raises the chunk's error where it happened
            yield from (chunk if isinstance(chunk, (list, tuple)) else self._joiner([chunk]))

    def __len__(self) -> int:
        """The number of items (known from the start for a ``map``; otherwise waits for the result)."""
        if self._item_counts is not None:
            return sum(self._item_counts)
        return len(self.get())

    def _chunk_starts(self) -> list[int]:
        if self._item_counts is None:
            raise TypeError(f"{self._fname} results are not items of a map: no per-item view")
        starts, n = [], 0
        for count in self._item_counts:
            starts.append(n)
            n += count
        return starts

    def partial(self) -> dict[int, Any]:
        """The items whose chunk has finished successfully so far, ``{index: value}``; never waits.

        Items of failed or unfinished chunks are missing (their errors come from :meth:`get`).
        """
        out: dict[int, Any] = {}
        for start, child in zip(self._chunk_starts(), self._children):
            if child.done() and not child.cancelled() and child.exception() is None:
                for k, value in enumerate(child.result()):
                    out[start + k] = value
        return out

    @property
    def item_metadata(self) -> list[Any]:
        """One metadata record per item: that of the task (chunk) that computed it — ``engine_id``,
        ``started``, ``completed``, ``status``, ... (the same object for items of one chunk)."""
        if self._item_counts is None:
            self._chunk_starts()  # raises the TypeError that explains why
            return []
        return [md for md, count in zip(self._metadata_list, self._item_counts) for _ in range(count)]
