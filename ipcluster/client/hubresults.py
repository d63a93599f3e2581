"""Results and task records kept by the controller: what ``Client.get_result`` and
``Client.result_status`` fall back on for requests this client does not know.

The controller records the requests that pass through it: load-balanced tasks, and DirectView
requests from a ``Client(direct=False)`` or from another host.  A DirectView request a client sends
straight to an engine on its own host (the default for same-host engines) never reaches the
controller, so only the client that sent it knows its result.
"""

from __future__ import annotations

import concurrent.futures
from typing import TYPE_CHECKING, Any, Iterable

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


def fetch(client: "Client", msg_ids: list[str]) -> dict[str, Future[Any]]:
    """Completed results from the controller, as finished futures; raises for the others."""
    reply = client._hub_request(M.RESULT_REQUEST, {"msg_ids": msg_ids})
    results = reply.content.get("results") or {}
    unknown = [m for m in msg_ids if (results.get(m) or {}).get("status") not in ("pending", "completed")]
    if unknown:
        raise errors.IPClusterError(
            f"unknown msg_id(s) {unknown}: neither this client nor the controller has a record of them "
            "(the controller records only requests that went through it, and forgets the oldest past 100,000)")
    pending = [m for m in msg_ids if results[m]["status"] == "pending"]
    if pending:
        raise errors.IPClusterError(
            f"msg_id(s) {pending} are still pending at the controller (submitted by another client); "
            "ask again once rc.result_status() lists them as completed")
    dropped = [m for m in msg_ids if not results[m].get("kept")]
    if dropped:
        raise errors.IPClusterError(
            f"the results of {dropped} are no longer kept by the controller (it keeps the most recent "
            "results within a memory budget); their records remain: rc.db_query({'msg_id': ...})")
    out = {}
    for m in msg_ids:
        r = results[m]
        start, stop = r["buffers"]
        msg = Message(r.get("header") or {}, {"msg_id": m}, r.get("metadata") or {}, r.get("content") or {},
                      reply.buffers[start:stop])
        record = r.get("record") or {}
        md = Metadata(msg_id=m, **{k: record.get(k) for k in _RECORD_TIMES})
        fut: Future[Any] = Future()
        fut.metadata = md  # type: ignore[attr-defined]
        try:
            ok, value = reply_value(msg)
        except Exception as e:  # the result did not unpickle here
            ok, value = False, e
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
        out[m] = fut
    return out
