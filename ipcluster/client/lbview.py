"""LoadBalancedView: tasks placed on engines by the controller's scheduler.

Each call becomes one task sent to the controller (routing id ``SCHEDULER``), which picks an engine
with its policy (``leastload`` by default), honours ``targets``, ``after`` / ``follow``
dependencies, ``retries`` and ``timeout``, and forwards the task; the reply comes back like any
other.  ``map`` sends the sequence in chunks, one task each.
"""

from __future__ import annotations

import concurrent.futures
import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ipcluster.client import remotefunction as rf
from ipcluster.client.asyncresult import AsyncMapResult, AsyncResult
from ipcluster.client.dependency import Dependency, as_dependency
from ipcluster.client.partition import partition_many
from ipcluster.client.view import View, check_time_limit
from ipcluster.protocol import messages as M
from ipcluster.protocol.serialize import pack_apply_message

if TYPE_CHECKING:
    from ipcluster.client.client import Client, Targets


class LoadBalancedView(View):
    """Submit tasks; the controller chooses the engines.

    Flags (``set_flags`` / ``temp_flags``): ``block``, ``targets`` (engines allowed, default any),
    ``retries`` (re-run a failed task elsewhere up to this many times), ``timeout`` (seconds a task
    may wait for an engine before failing with ``TaskTimeout``), ``time_limit`` (seconds a task
    may run: past it, it is interrupted and fails with ``TaskTimeout``), ``after`` (time
    dependency) and ``follow`` (location dependency): msg_ids, AsyncResults or
    :class:`~ipcluster.Dependency`.
    """

    _flag_names: tuple[str, ...] = ("block", "targets", "retries", "timeout", "time_limit", "after", "follow")

    def __init__(self, client: "Client", targets: "Targets" = None, block: bool = False):
        super().__init__(client, targets, block)
        self.retries = 0
        self.timeout: float | None = None
        self.time_limit: float | None = None
        self.after: Any = None
        self.follow: Any = None

    # --- submitting ---------------------------------------------------------------------------

    def _task_metadata(self) -> dict[str, Any]:
        targets = None
        if self.targets is not None and self.targets != "all":
            targets, _ = self.client._resolve_targets(self.targets)
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {self.retries!r}")
        if self.timeout is not None and (not isinstance(self.timeout, (int, float)) or self.timeout < 0):
            raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {self.timeout!r}")
        md: dict[str, Any] = {"targets": targets, "retries": self.retries, "timeout": self.timeout}
        if self.time_limit is not None:
            md["time_limit"] = check_time_limit(self.time_limit)
        for name in ("after", "follow"):
            dep = as_dependency(getattr(self, name))
            md[name] = dep.to_wire() if dep is not None else None
        return md

    def _submit(self, buffers: Sequence[Any], wait: bool = False,
                future: AsyncResult | None = None) -> tuple[str, concurrent.futures.Future[Any]]:
        md = self._task_metadata()
        return self.client.send_task(buffers, md, _dependency_ids(md), wait=wait, future=future)

    def _apply(self, f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
               block: bool | None = None, targets: "Targets" = None) -> Any:
        if not callable(f):
            raise TypeError(f"apply needs a callable, got {type(f).__name__}")
        if targets is not None:
            with self.temp_flags(targets=targets):
                return self._apply(f, args, kwargs, block)
        block = self._block(block)
        buffers = pack_apply_message(f, args, kwargs)
        fname = getattr(f, "__name__", "f")
        if not block:  # the AsyncResult is the task's own future
            ar = AsyncResult._for_request(self.client, fname)
            self._submit(buffers, future=ar)
            return ar
        msg_id, fut = self._submit(buffers, wait=True)
        if fut.done():
            return fut.result()  # what AsyncResult.get() would return or raise, without building one
        return AsyncResult(self.client, [msg_id], [fut], fname=fname, single=True).get()

    def execute(self, code: str, silent: bool = True, targets: "Targets" = None,
                block: bool | None = None) -> Any:
        """Run *code* (IPython syntax, ``%magics`` included) as one task on an engine the scheduler picks.

        The result (single) holds that engine's stdout/stderr, display outputs and ``execute_result``.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        if targets is not None:
            with self.temp_flags(targets=targets):
                return self.execute(code, silent, block=block)
        md = self._task_metadata()
        ar = AsyncResult._for_request(self.client, "execute")
        self.client.send_task((), md, _dependency_ids(md), msg_type=M.EXECUTE_REQUEST,
                              content={"code": code, "silent": silent}, future=ar)
        return self._finish(ar, self._block(block))

    def map(self, f: Callable[..., Any], *sequences: Any, block: bool | None = None, ordered: bool = True,
            chunksize: int | None = None) -> Any:
        """``map(f, *sequences)`` as load-balanced tasks of *chunksize* items each.

        The default chunk size gives each engine about four chunks, which keeps engines busy
        without a message per item.  With ``ordered=False`` iteration yields chunks as they finish.
        """
        if not sequences:
            raise TypeError("map() needs at least one sequence")
        return self._map_chunks(f, sequences, block, per_chunk=False, ordered=ordered, chunksize=chunksize)

    def _map_chunks(self, f: Callable[..., Any], sequences: Sequence[Any], block: bool | None,
                    per_chunk: bool, ordered: bool = True, chunksize: int | None = None) -> Any:
        """One task per chunk: ``map(f, *chunk)`` on it, or ``f(*chunk)`` with ``per_chunk``
        (what ``@lview.parallel`` does); results joined in order."""
        if not callable(f):
            raise TypeError(f"map needs a callable, got {type(f).__name__}")
        seqs = [s if hasattr(s, "__len__") and hasattr(s, "__getitem__") else list(s) for s in sequences]
        n = len(seqs[0])
        if chunksize is None:
            engines = max(len(self.client.ids), 1)
            chunksize = max(1, math.ceil(n / (4 * engines)))
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, not {chunksize}")
        nchunks = max(1, math.ceil(n / chunksize)) if n else 0
        msg_ids, futures, counts = [], [], []
        for chunks in partition_many(seqs, nchunks) if nchunks else []:
            call = (f, chunks) if per_chunk else (rf._map, (f, *chunks))
            m, fu = self._submit(pack_apply_message(call[0], call[1], {}))
            msg_ids.append(m)
            futures.append(fu)
            counts.append(len(chunks[0]))
        ar = AsyncMapResult(self.client, msg_ids, futures, fname=getattr(f, "__name__", "map"), ordered=ordered,
                            item_counts=None if per_chunk else counts)
        return self._finish(ar, self._block(block))

    def map_sync(self, f: Callable[..., Any], *sequences: Any, **kwargs: Any) -> list[Any]:
        return self.map(f, *sequences, block=True, **kwargs)

    def map_async(self, f: Callable[..., Any], *sequences: Any, **kwargs: Any) -> AsyncMapResult:
        return self.map(f, *sequences, block=False, **kwargs)

    def imap(self, f: Callable[..., Any], *sequences: Any, ordered: bool = True,
             chunksize: int | None = None) -> Iterator[Any]:
        """Results of ``map`` as they become available (in order unless ``ordered=False``)."""
        return iter(self.map(f, *sequences, block=False, ordered=ordered, chunksize=chunksize))


def _dependency_ids(md: dict[str, Any]) -> set[str]:
    """The msg_ids a task's ``after`` and ``follow`` dependencies name."""
    after, follow = md["after"], md["follow"]
    if after is None and follow is None:
        return set()
    return set((after or {}).get("msg_ids", ())) | set((follow or {}).get("msg_ids", ()))


__all__ = ["LoadBalancedView", "Dependency"]
