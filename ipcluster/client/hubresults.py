"""Results and task records kept by the controller: what ``Client.get_result`` and
``Client.result_status`` fall back on for requests this client does not know.

The controller records the requests that pass through it: load-balanced tasks, and DirectView
requests from a ``Client(direct=False)`` or from another host.  A DirectView request a client sends
straight to an engine on its own host (the default for same-host engines) never reaches the
controller, so only the client that sent it knows its result.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ipcluster import errors
from ipcluster.client.metadata import Metadata, reply_value
from ipcluster.protocol import messages as M
from ipcluster.protocol.session import Message

if TYPE_CHECKING:
    from ipcluster.client.client import Client

Future = concurrent.futures.Future

_RECORD_TIMES = ("engine_id", "engine_uuid", "submitted", "received", "started", "completed", "status")


def msg_ids_of(jobs: Any) -> list[str]:
    """msg_ids from a msg_id, an AsyncResult, or an iterable of either."""
    items = [jobs] if isinstance(jobs, str) or hasattr(jobs, "msg_ids") else list(jobs)
    ids: list[str] = []
    for j in items:
        ids.extend(getattr(j, "msg_ids", [j]))
    return ids


def local_status(client: "Client", msg_id: str) -> str | None:
    tracker = client._tracker
    if msg_id in tracker.outstanding:
        return "pending"
    if msg_id in tracker.results:
        return "completed"
    return None


def result_status(client: "Client", msg_ids: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"completed": [], "pending": [], "unknown": []}
    ask = []
    for m in msg_ids:
        state = local_status(client, m)
        if state is None:
            ask.append(m)
        else:
            out[state].append(m)
    if ask:
        reply = client._hub_request(M.RESULT_REQUEST, {"msg_ids": ask, "status_only": True})
        results = reply.content.get("results") or {}
        for m in ask:
            state = (results.get(m) or {}).get("status")
            out[state if state in out else "unknown"].append(m)
    return out


def local_future(client: "Client", msg_id: str) -> Future[Any] | None:
    """The future of a request this client sent (outstanding, or finished and still remembered)."""
    tracker = client._tracker
    fut = tracker.futures.get(msg_id)
    if fut is not None:
        return fut
    if msg_id not in tracker.results:
        return None
    value = tracker.results[msg_id]
    md = tracker.metadata.get(msg_id) or Metadata(msg_id=msg_id)
    done: Future[Any] = Future()
    done.metadata = md  # type: ignore[attr-defined]
    if md.get("status") not in (None, "ok") and isinstance(value, BaseException):
        done.set_exception(value)
    else:
        done.set_result(value)
    return done


class RemoteWaits:
    """Futures of results this client asked the controller for, not completed yet: ``msg_id -> futures``.

    Registered *before* the request is sent, so a notification that overtakes the caller's
    handling of the reply still finds them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, list[Future[Any]]] = {}

    def add(self, msg_id: str) -> Future[Any]:
        fut: Future[Any] = Future()
        fut.metadata = Metadata(msg_id=msg_id)  # type: ignore[attr-defined]  # filled in when it completes
        with self._lock:
            self._futures.setdefault(msg_id, []).append(fut)
        return fut

    def take(self, msg_id: str, fut: Future[Any] | None = None) -> list[Future[Any]]:
        """Remove and return the futures waiting for *msg_id* (only *fut*, if given)."""
        with self._lock:
            futs = self._futures.get(msg_id, [])
            if fut is None:
                self._futures.pop(msg_id, None)
                return futs
            if fut in futs:
                futs.remove(fut)
                if not futs:
                    del self._futures[msg_id]
                return [fut]
            return []

    def msg_ids(self) -> list[str]:
        """The msg_ids waited for (to ask a restarted controller again)."""
        with self._lock:
            return list(self._futures)

    def fail_all(self, error: BaseException) -> None:
        with self._lock:
            waits, self._futures = self._futures, {}
        for futs in waits.values():
            for fut in futs:
                if not fut.done():
                    fut.set_exception(error)


def _settle(fut: Future[Any], m: str, entry: dict[str, Any], buffers: Sequence[Any]) -> None:
    """Finish *fut* from a controller's answer about *m* (``completed`` with the reply kept)."""
    start, stop = entry["buffers"]
    msg = Message(entry.get("header") or {}, {"msg_id": m}, entry.get("metadata") or {},
                  entry.get("content") or {}, list(buffers[start:stop]))
    record = entry.get("record") or {}
    md = getattr(fut, "metadata", None)
    if md is None:
        md = fut.metadata = Metadata(msg_id=m)  # type: ignore[attr-defined]
    md.update({k: record.get(k) for k in _RECORD_TIMES})
    try:
        ok, value = reply_value(msg)
    except Exception as e:  # the result did not unpickle here
        ok, value = False, e
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _problem(m: str, entry: dict[str, Any]) -> errors.IPClusterError | None:
    status = entry.get("status")
    if status == "completed" and not entry.get("kept"):
        return errors.IPClusterError(
            f"the result of {m} is no longer kept by the controller (it keeps the most recent results "
            "within a memory budget); its record remains: rc.db_query({'msg_id': ...})")
    if status == "dropped":
        return errors.IPClusterError(f"the controller stopped watching {m} for this client (too many waits)")
    if status not in ("pending", "completed"):
        return errors.IPClusterError(
            f"unknown msg_id {m}: neither this client nor the controller has a record of it "
            "(the controller records only requests that went through it, and forgets the oldest past 100,000)")
    return None


def fetch(client: "Client", msg_ids: list[str]) -> dict[str, Future[Any]]:
    """Futures for results the controller knows: completed ones finished now, pending ones (another
    client's tasks still queued or running) finished when the controller says they completed.

    Raises :class:`ipcluster.IPClusterError` for msg_ids nobody knows or results no longer kept.
    """
    waits: RemoteWaits = client._remote_waits
    futures = {m: waits.add(m) for m in msg_ids}
    try:
        reply = client._hub_request(M.RESULT_REQUEST, {"msg_ids": msg_ids, "wait": True})
    except BaseException:
        for m, fut in futures.items():
            waits.take(m, fut)
        raise
    results = reply.content.get("results") or {}
    problems = {m: p for m in msg_ids if (p := _problem(m, results.get(m) or {})) is not None}
    for m, fut in futures.items():
        entry = results.get(m) or {}
        if problems or entry.get("status") == "completed":
            waits.take(m, fut)
            if not problems:
                _settle(fut, m, entry, reply.buffers)
    if problems:  # nothing is returned: cancel the controller's watches by not waiting on them
        raise next(iter(problems.values()))
    return futures


def on_notification(client: "Client", msg: Message) -> None:
    """A result this client waits for has completed (IO thread)."""
    results = msg.content.get("results")
    if not isinstance(results, dict):
        return
    for m, entry in results.items():
        if not isinstance(entry, dict):
            continue
        problem = _problem(m, entry)
        if problem is None and entry.get("status") != "completed":
            problem = errors.IPClusterError(f"the controller lost track of {m}")
        for fut in client._remote_waits.take(m):
            if fut.done():
                continue
            if problem is not None:
                fut.set_exception(problem)
            else:
                _settle(fut, m, entry, msg.buffers)
