"""Riding out a controller restart: wait for the connection to come back, then catch up.

A controller with a persistent task store (``connection_reply`` says ``"persistent": true``) is
restarted on the same ports with the same key when it dies.  The client's zmq sockets reconnect by
themselves; what the client must do is learn what happened meanwhile:

1. ``connection_request`` again: the new controller learns this client (for notifications) and
   tells which engines are registered.
2. A *barrier* on the mux socket: an empty ``task_abort_request`` to the scheduler.  Its reply
   proves that every request queued on mux before it (sent while the controller was down) has been
   received and recorded, so the next question cannot overtake them.
3. ``result_request`` (``wait``) for every request still outstanding through the controller
   (load-balanced tasks, and requests to engines whose active route is the controller).  A result
   that completed meanwhile is taken from the answer (its reply may have been sent while this
   client was not connected); a pending one finishes when its reply arrives on mux or its
   ``result_notification`` (whichever comes first); one the controller does not know was lost
   with the old controller, or reached it in its last instants (before its store committed it):
   it fails with :class:`~ipcluster.errors.ControllerRestarted` unless its reply arrives within
   :data:`UNKNOWN_GRACE` seconds.
   Control requests (abort, clear, signal, shutdown) still outstanding fail the same way.

If the connection is not back within :data:`RECONNECT_TIMEOUT` seconds, everything outstanding
fails with :class:`~ipcluster.errors.ControllerError`, as it does at once for a controller without
a store.  Requests sent straight to same-host engines (the direct route) are not affected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any

from ipcluster import errors
from ipcluster.client import hubresults
from ipcluster.client.io import log
from ipcluster.protocol import messages as M
from ipcluster.protocol.session import Message

if TYPE_CHECKING:
    from ipcluster.client.client import Client

#: Seconds a client waits for a restarted controller before failing what is outstanding.
RECONNECT_TIMEOUT = 10.0
#: Seconds after catching up that a request the restarted controller has no record of may still
#: get its reply (it reached the old controller just before the kill and is running), before it
#: fails: so every request in flight at a kill is settled within about 10 s of it.
UNKNOWN_GRACE = 3.0
#: Seconds the catch-up's barrier may wait per outstanding request, beyond RECONNECT_TIMEOUT.
BARRIER_PER_REQUEST = 0.002


class Reconnector:
    """The client's side of a controller restart (see the module docstring)."""

    def __init__(self, client: "Client", timeout: float = RECONNECT_TIMEOUT):
        self.client = client
        self.timeout = timeout
        #: monotonic time the connection was lost; None while connected
        self.lost_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lock = threading.Lock()
        self._watching: set[str] = set()  # msg_ids whose result_notification settles a request
        self.reconnects = 0
        #: monotonic time the last catch-up got the controller's answer (the grace starts then)
        self.caught_up_at: float | None = None

    # --- IO thread ------------------------------------------------------------------------------

    def lost(self) -> None:
        """The hub connection dropped: wait for it (a timer gives up after :attr:`timeout`)."""
        if self.lost_at is not None:
            return
        self.lost_at = time.monotonic()
        log.warning("lost the connection to the controller at %s; waiting up to %g s for it to come back",
                    self.client.connection_info.location, self.timeout)
        self._timer = self.client._io.loop.call_later(self.timeout, self._give_up)

    def back(self) -> None:
        """The hub connection is up again: catch up in a thread of its own (it waits for replies)."""
        if self.lost_at is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info("the connection to the controller is back after %.1f s", time.monotonic() - self.lost_at)
        self.lost_at = None
        threading.Thread(target=self._catch_up, name="ipcluster-reconnect", daemon=True).start()

    def _give_up(self) -> None:
        self._timer = None
        if self.lost_at is not None:
            self.client._lose_controller(f"lost the connection to the controller at "
                                         f"{self.client.connection_info.location}; it did not come back "
                                         f"within {self.timeout:g} s")

    def on_notification(self, msg: Message) -> None:
        """A ``result_notification``: settles requests we asked about while catching up."""
        results = msg.content.get("results")
        if not isinstance(results, dict) or not self._watching:
            return
        for m, entry in results.items():
            with self._lock:
                if m not in self._watching:
                    continue
                self._watching.discard(m)
            if isinstance(entry, dict):
                self._settle(m, entry, msg.buffers)

    # --- catching up (own thread) ---------------------------------------------------------------

    def _catch_up(self) -> None:
        client = self.client
        try:
            catch_up(self, client)
            self.reconnects += 1
        except Exception as e:
            if self.lost_at is not None or client._closed:
                return  # lost again meanwhile: the next reconnection catches up
            client._lose_controller(f"reconnected to the controller at {client.connection_info.location} "
                                    f"but could not catch up: {type(e).__name__}: {e}")

    def _settle(self, m: str, entry: dict[str, Any], buffers: list[Any]) -> None:
        tracker = self.client._tracker
        status = entry.get("status")
        if status == "completed" and entry.get("kept"):
            start, stop = entry["buffers"]
            header = entry.get("header") or {}
            tracker.on_reply(Message(header, {"msg_id": m}, entry.get("metadata") or {},
                                     entry.get("content") or {}, list(buffers[start:stop])))
        elif status == "completed":
            tracker.fail(m, errors.ControllerRestarted(
                f"{m} completed while this client was reconnecting, but the controller no longer keeps "
                "its result"))
        elif status != "pending":
            # unknown: lost with the old controller, or sent in its last instants (before its store
            # committed it) and still running: wait for a reply, but not for ever
            self.client._io.loop.call_soon_threadsafe(self._expire_later, m)

    def _expire_later(self, m: str) -> None:
        self.client._io.loop.call_later(UNKNOWN_GRACE, self._expire, m)

    def _expire(self, m: str) -> None:
        self.client._tracker.fail(m, errors.ControllerRestarted(
            f"{m} was lost when the controller restarted: the restarted controller had no record of it and "
            f"no reply came within {UNKNOWN_GRACE:g} s (it ran at most once)"))

    def watch(self, msg_ids: list[str]) -> None:
        with self._lock:
            self._watching.update(msg_ids)


def _through_controller(client: "Client") -> tuple[list[str], list[str]]:
    """Outstanding requests the controller handles: ``(recorded ones, control ones)``."""
    tracker = client._tracker
    routed: list[str] = list(tracker.outstanding_on(M.SCHEDULER))
    for uuid in list(client._engines.values()) + list(client._direct_urls):
        if client._routes.active(uuid) in (None, "mux"):
            routed += tracker.outstanding_on(uuid)
    recorded = [m for m in dict.fromkeys(routed) if m in tracker._recorded]
    control = [m for m in list(tracker.outstanding) if m not in tracker._recorded]
    return recorded, control


def catch_up(rc: Reconnector, client: "Client") -> None:
    """Steps 1-3 of the module docstring; raises if the controller does not answer in time."""
    timeout = rc.timeout
    reply = client._hub_request(M.CONNECTION_REQUEST, {}, timeout)
    engines = reply.content.get("engines") or {}

    def add_engines() -> None:
        for eid, e in engines.items():
            client._add_engine(int(eid), e)

    client._io.call(add_engines)
    # control requests in flight at the kill are lost; the barrier (record=False too) comes after
    _, control = _through_controller(client)
    header = client.session.header(M.TASK_ABORT_REQUEST)
    barrier = client._tracker.register(header["msg_id"], M.SCHEDULER, None, record=False)
    client._io.send("mux", client.session.serialize(M.TASK_ABORT_REQUEST, {"msg_ids": []}, header=header,
                                                    idents=[M.SCHEDULER]))
    # the barrier waits behind every request this client queued while the controller was away
    # (the restarted controller works through them first): allow for a slow one
    wait = timeout + BARRIER_PER_REQUEST * len(client._tracker.outstanding)
    try:
        barrier.result(wait)
    except concurrent.futures.TimeoutError:
        raise errors.TimeoutError(f"no answer on the mux route within {wait:g} s") from None
    for m in control:
        client._tracker.fail(m, errors.ControllerRestarted(
            "the controller restarted while this control request was in flight; it may not have reached "
            "the engine"))
    ask, _ = _through_controller(client)
    # get_result waits for other clients' requests: the old controller's watches died with it
    remote = [m for m in client._remote_waits.msg_ids() if m not in set(ask)]
    if not ask and not remote:
        rc.caught_up_at = time.monotonic()
        return
    rc.watch(ask)  # before asking: a notification may overtake the reply's handling
    reply = client._hub_request(M.RESULT_REQUEST, {"msg_ids": ask + remote, "wait": True}, timeout)
    rc.caught_up_at = time.monotonic()
    results = reply.content.get("results") or {}
    for m in remote:  # pending ones finish on the new watch's notification (hubresults.on_notification)
        entry = results.get(m) or {"status": "unknown"}
        problem = hubresults._problem(m, entry)
        if problem is not None or entry.get("status") == "completed":
            for fut in client._remote_waits.take(m):
                if problem is not None:
                    fut.set_exception(problem)
                else:
                    hubresults._settle(fut, m, entry, reply.buffers)
    settled = 0
    for m in ask:
        entry = results.get(m) or {"status": "unknown"}
        if entry.get("status") != "pending":
            with rc._lock:
                rc._watching.discard(m)
            rc._settle(m, entry, reply.buffers)
            settled += 1
    log.info("caught up with the restarted controller: %d requests outstanding, %d settled from its records",
             len(ask), settled)
