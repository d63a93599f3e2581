"""Views: the objects through which work is sent to engines.

A :class:`DirectView` runs work on the engines it names — every call goes to every target.  Its
``targets`` may be an int (results are single values), a list of ints, or ``'all'`` (evaluated at each
call, so it follows engines as they come and go).  ``block`` decides whether calls return results
(``True``) or :class:`~ipcluster.AsyncResult` futures (``False``, the default).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ipcluster.client import remotefunction as rf
from ipcluster.client.asyncresult import AsyncMapResult, AsyncResult
from ipcluster.client.partition import partition, partition_many

if TYPE_CHECKING:
    from ipcluster.client.client import Client
    from ipcluster.client.executor import ViewExecutor
    from ipcluster.client.targets import Targets


class View:
    """Common flags and plumbing of all views."""

    _flag_names: tuple[str, ...] = ("block", "targets")

    def __init__(self, client: "Client", targets: "Targets" = "all", block: bool = False):
        self.client = client
        self.targets = targets
        self.block = block

    def set_flags(self, **kwargs: Any) -> None:
        """Set view flags (``block``, ``targets``); unknown names are an error."""
        for k, v in kwargs.items():
            if k not in self._flag_names:
                raise KeyError(f"invalid view flag {k!r}; valid flags: {', '.join(self._flag_names)}")
            setattr(self, k, v)

    @contextlib.contextmanager
    def temp_flags(self, **kwargs: Any) -> Iterator["View"]:
        """``with view.temp_flags(block=True): ...`` sets flags for the block only."""
        saved = {k: getattr(self, k) for k in kwargs}
        self.set_flags(**kwargs)
        try:
            yield self
        finally:
            for k, v in saved.items():
                setattr(self, k, v)

    def _request_metadata(self) -> dict[str, Any] | None:
        """Per-request options sent with each request (``time_limit``), or ``None``."""
        limit = getattr(self, "time_limit", None)
        if limit is None:
            return None
        return {"time_limit": check_time_limit(limit)}

    def _targets(self, targets: "Targets" = None) -> tuple[list[int], bool]:
        return self.client._resolve_targets(self.targets if targets is None else targets)

    def _block(self, block: bool | None) -> bool:
        return self.block if block is None else block

    @staticmethod
    def _finish(ar: AsyncResult, block: bool) -> Any:
        return ar.get() if block else ar

    # --- apply --------------------------------------------------------------------------------

    def _apply(self, f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
               block: bool | None = None, targets: "Targets" = None) -> Any:
        if not callable(f):
            raise TypeError(f"apply needs a callable, got {type(f).__name__}")
        ids, single = self._targets(targets)
        block = self._block(block)
        fname = getattr(f, "__name__", "f")
        if single and not block:  # one engine: the AsyncResult is the request's own future
            ar = AsyncResult._for_request(self.client, fname)
            self.client.send_apply(ids, f, args, kwargs, metadata=self._request_metadata(), futures=[ar])
            return ar
        msg_ids, futures = self.client.send_apply(ids, f, args, kwargs, wait=block, metadata=self._request_metadata())
        if block and single and futures[0].done():
            return futures[0].result()  # what AsyncResult.get() would return or raise, without building one
        ar = AsyncResult(self.client, msg_ids, futures, fname=fname, single=single)
        return self._finish(ar, block)

    def apply(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``f(*args, **kwargs)`` on the targets; result or AsyncResult according to ``block``."""
        return self._apply(f, args, kwargs)

    def apply_async(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> AsyncResult:
        """``f(*args, **kwargs)`` on the targets; always returns an :class:`AsyncResult`."""
        return self._apply(f, args, kwargs, block=False)

    def apply_sync(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``f(*args, **kwargs)`` on the targets; waits and returns the result(s)."""
        return self._apply(f, args, kwargs, block=True)

    # --- decorators ---------------------------------------------------------------------------

    def remote(self, block: bool | None = None) -> Callable[[Callable[..., Any]], rf.RemoteFunction]:
        """Decorator: calls of the function run on this view (``@view.remote()``)."""
        return rf.remote(self, block)  # type: ignore[arg-type]

    def parallel(self, block: bool | None = None, map: bool = False
                 ) -> Callable[[Callable[..., Any]], rf.ParallelFunction]:
        """Decorator: the function runs on partitions of its sequence arguments (``@view.parallel()``)."""
        return rf.parallel(self, block, map)  # type: ignore[arg-type]

    # --- engine control -----------------------------------------------------------------------

    def abort(self, jobs: Any = None, targets: "Targets" = None, block: bool | None = None) -> Any:
        return self.client.abort(jobs, self.targets if targets is None else targets, self._block(block))

    def clear(self, targets: "Targets" = None, block: bool | None = None) -> Any:
        return self.client.clear(self.targets if targets is None else targets, self._block(block))

    def shutdown(self, targets: "Targets" = None, restart: bool = False, hub: bool = False,
                 block: bool | None = None) -> None:
        self.client.shutdown(self.targets if targets is None else targets, restart, hub, block)

    def queue_status(self, targets: "Targets" = None, verbose: bool = False) -> dict[Any, Any]:
        return self.client.queue_status(self.targets if targets is None else targets, verbose)

    def wait(self, jobs: Any = None, timeout: float = -1) -> bool:
        return self.client.wait(jobs, timeout)

    @property
    def executor(self) -> "ViewExecutor":
        """A new :class:`concurrent.futures.Executor` whose tasks run through this view."""
        from ipcluster.client.executor import ViewExecutor

        return ViewExecutor(self)

    def activate(self, suffix: str = "") -> None:
        """Make this view the one ``%px<suffix>``, ``%%px<suffix>``, ``%autopx<suffix>``,
        ``%pxresult<suffix>`` and ``%pxconfig<suffix>`` run on (IPython only; several views can
        each have their own suffix)."""
        from ipcluster.magics import activate

        activate(self, suffix)

    def __len__(self) -> int:
        return len(self._targets()[0])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.targets!r}>"


def check_time_limit(value: Any) -> float:
    """A valid ``time_limit`` flag (seconds > 0) as a float; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"time_limit must be a number of seconds > 0 or None, not {value!r}")
    return float(value)


class DirectView(View):
    """Run work on explicitly named engines (every call goes to every target).

    Flags (``set_flags`` / ``temp_flags``): ``block``, ``targets`` and ``time_limit`` (seconds a
    request may run; past it, it is interrupted and fails with ``TaskTimeout``, its engine killed
    and restarted if it does not stop; see ``docs/reliability.md``).
    """

    _flag_names: tuple[str, ...] = ("block", "targets", "time_limit")
    time_limit: float | None = None

    # --- code and namespaces ------------------------------------------------------------------

    def execute(self, code: str, silent: bool = True, targets: "Targets" = None,
                block: bool | None = None) -> Any:
        """Run *code* (IPython syntax, ``%magics`` included) in the engines' namespaces.

        The result holds each engine's stdout/stderr, display outputs and ``execute_result``.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        ids, single = self._targets(targets)
        block = self._block(block)
        msg_ids, futures = self.client.send_execute(ids, code, silent=silent, wait=block,
                                                    metadata=self._request_metadata())
        ar = AsyncResult(self.client, msg_ids, futures, fname="execute", single=single)
        return self._finish(ar, block)

    def run(self, filename: str | os.PathLike[str], targets: "Targets" = None,
            block: bool | None = None) -> Any:
        """Execute the contents of the local file *filename* on the engines."""
        with open(filename) as f:
            code = f.read()
        return self.execute(code, targets=targets, block=block)

    def push(self, ns: dict[str, Any], targets: "Targets" = None, block: bool | None = None) -> Any:
        """Set names in the engines' namespaces from the dict *ns*."""
        if not isinstance(ns, dict):
            raise TypeError(f"push needs a dict of names to values, not {type(ns).__name__}")
        bad = [k for k in ns if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ValueError(f"push: not valid Python names: {bad!r}")
        return self._apply(rf._push, (ns,), {}, block, targets)

    def pull(self, names: str | Sequence[str], targets: "Targets" = None, block: bool | None = None) -> Any:
        """Values of *names* (a name or a list of names) from the engines' namespaces."""
        if not isinstance(names, str):
            names = list(names)
        return self._apply(rf._pull, (names,), {}, block, targets)

    def __setitem__(self, key: str, value: Any) -> None:
        self.push({key: value}, block=True)

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise TypeError(f"DirectView keys are names (str), not {type(key).__name__}; use client[...]"
                            " to select engines")
        return self.pull(key, block=True)

    def update(self, ns: dict[str, Any]) -> None:
        """``view.update(d)``: push *d* and wait."""
        self.push(ns, block=True)

    def get(self, key: str) -> Any:
        return self[key]

    # --- scatter / gather / map ---------------------------------------------------------------

    def scatter(self, key: str, seq: Any, dist: str = "b", flatten: bool = False,
                targets: "Targets" = None, block: bool | None = None) -> Any:
        """Split *seq* into contiguous blocks, one per target, and store each block as *key*.

        NumPy arrays are split into views and sent without copies.  With ``flatten=True`` an engine
        whose block holds one item receives the item itself.
        """
        _check_dist(dist)
        ids, _ = self._targets(targets)
        block = self._block(block)
        calls = [(eid, rf._push, ({key: part[0] if flatten and len(part) == 1 else part},))
                 for eid, part in zip(ids, partition(seq, len(ids)))]
        msg_ids, futures = self.client.send_apply_each(calls, wait=block)
        ar = AsyncResult(self.client, msg_ids, futures, fname="scatter")
        return self._finish(ar, block)

    def gather(self, key: str, dist: str = "b", targets: "Targets" = None, block: bool | None = None) -> Any:
        """Join the blocks stored as *key* on each target, in target order (inverse of scatter)."""
        _check_dist(dist)
        ids, _ = self._targets(targets)
        block = self._block(block)
        msg_ids, futures = self.client.send_apply(ids, rf._pull, (key,), wait=block)
        ar = AsyncMapResult(self.client, msg_ids, futures, fname="gather")
        return self._finish(ar, block)

    def map(self, f: Callable[..., Any], *sequences: Any, block: bool | None = None) -> Any:
        """``map(f, *sequences)`` with the sequences split in contiguous blocks over the targets.

        Returns the list of results in order (``block=True``) or an :class:`AsyncMapResult`.
        """
        if not sequences:
            raise TypeError("map() needs at least one sequence")
        return self._map_chunks(f, sequences, block=block, per_chunk=False)

    def map_sync(self, f: Callable[..., Any], *sequences: Any) -> list[Any]:
        return self.map(f, *sequences, block=True)

    def map_async(self, f: Callable[..., Any], *sequences: Any) -> AsyncMapResult:
        return self.map(f, *sequences, block=False)

    def _map_chunks(self, f: Callable[..., Any], sequences: Sequence[Any], block: bool | None,
                    per_chunk: bool) -> Any:
        if not callable(f):
            raise TypeError(f"map needs a callable, got {type(f).__name__}")
        ids, _ = self._targets()
        msg_ids, futures, counts = [], [], []
        for eid, chunks in zip(ids, partition_many(sequences, len(ids))):
            if len(chunks[0]) == 0:
                continue  # fewer items than engines
            md = self._request_metadata()
            if per_chunk:
                m, fu = self.client.send_apply([eid], f, chunks, metadata=md)
            else:
                m, fu = self.client.send_apply([eid], rf._map, (f, *chunks), metadata=md)
            msg_ids += m
            futures += fu
            counts.append(len(chunks[0]))
        ar = AsyncMapResult(self.client, msg_ids, futures, fname=getattr(f, "__name__", "map"),
                            item_counts=None if per_chunk else counts)
        return self._finish(ar, self._block(block))

    # --- imports ------------------------------------------------------------------------------

    def sync_imports(self, local: bool = True, quiet: bool = False) -> "SyncImports":
        """Context manager: imports made in its block also happen on the engines.

        >>> with dview.sync_imports():    # doctest: +SKIP
        ...     import numpy as np
        """
        return SyncImports(self, local, quiet)


def _check_dist(dist: str) -> None:
    if dist != "b":
        raise ValueError(f"only block distribution (dist='b') is supported, not {dist!r}")


class SyncImports:
    """Records the names an import statement binds in the caller's frame and binds them on engines."""

    def __init__(self, view: DirectView, local: bool, quiet: bool):
        self.view = view
        self.local = local
        self.quiet = quiet
        self._records: list[tuple[str, tuple[str, ...]]] = []

    def __enter__(self) -> "SyncImports":
        frame = sys._getframe(1)
        self._ns = frame.f_locals if frame.f_code.co_name != "<module>" else frame.f_globals
        self._before = dict(self._ns)
        self._orig_import = builtins.__import__
        records = self._records
        orig = self._orig_import

        def recording_import(name: str, globals: Any = None, locals: Any = None,
                             fromlist: Sequence[str] | None = (), level: int = 0) -> Any:
            if level == 0 and sys._getframe(1).f_code is frame.f_code:
                records.append((name, tuple(fromlist or ())))
            return orig(name, globals, locals, fromlist, level)

        builtins.__import__ = recording_import
        return self

    def __exit__(self, *exc: Any) -> None:
        builtins.__import__ = self._orig_import
        if exc[0] is not None:
            return
        frame_ns = self._ns
        changed = {k: v for k, v in frame_ns.items() if k not in self._before or self._before[k] is not v}
        jobs: list[tuple[str, str | None, str]] = []
        for asname, value in changed.items():
            if isinstance(value, types.ModuleType):
                jobs.append((value.__name__, None, asname))
                continue
            for module, fromlist in self._records:
                mod = sys.modules.get(module)
                for attr in fromlist:
                    if mod is not None and getattr(mod, attr, None) is value:
                        jobs.append((module, attr, asname))
                        break
        for modname, attrname, bound in jobs:
            if not self.quiet:
                what = f"from {modname} import {attrname}" if attrname else f"import {modname}"
                print(f"{what}{'' if (attrname or modname) == bound else ' as ' + bound} on engine(s)")
            self.view._apply(rf._import, (modname, attrname, bound), {}, block=True)
        if not self.local:
            for asname in changed:
                if asname in self._before:
                    frame_ns[asname] = self._before[asname]
                else:
                    frame_ns.pop(asname, None)
