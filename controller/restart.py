"""Engines coming back: after a controller restart (from the task store) or a network partition.

Three moments, each called by the hub:

* :meth:`Returns.restore` — a controller started with ``--restore`` takes back what its store held
  (:mod:`controller.store`): task records and kept replies, and the engines registered at the kill.
  Each such engine gets a record (registered, not ready) holding the requests it had been sent, and a
  heartbeat deadline: its heartbeat reconnects by itself, and one that does not answer within
  ``misses`` periods is unregistered as dead, failing those requests like any engine death.
  Requests that had not reached an engine (queued in the scheduler) fail at once with
  ``ControllerRestarted``: the store keeps no request payloads (see ``docs/reliability.md``).
* :meth:`Returns.pong_from_unknown` — a heartbeat echo from an engine this controller knew but has
  unregistered (it stopped answering during a partition, then came back): the engine is told to
  register again (``reregistration_notification``), at most once per period.
* :meth:`Returns.ready` — an engine that registered again says it is ready and lists the requests
  it still holds (``queued``).  Every reply it sent before that notification has arrived (one
  ordered connection), so a request we expect from it that it does not hold lost its reply with the
  old controller: it fails with ``ControllerRestarted`` (it ran at most once).  A request it holds
  that we have a record of but do not expect from it was failed or retried elsewhere while it was
  away: it is aborted on the engine, so it does not run late (and a late reply is dropped anyway:
  one result per msg_id).  One we have no record of (it arrived in the last instants before the
  kill, before the store's commit) runs, and its reply is delivered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ipcluster.protocol import messages as M

if TYPE_CHECKING:  # pragma: no cover
    from controller.hub import Hub
    from controller.registry import EngineRecord
    from controller.store import Restored

#: Engines remembered as asked to re-register (bounded: junk identities cannot grow it).
MAX_ASKED = 10_000
#: The ``ename`` of requests a restarted controller could not finish.
CONTROLLER_RESTARTED = "ControllerRestarted"


class Returns:
    """Engines expected back after a restart, and engines asked to register again."""

    def __init__(self, hub: "Hub"):
        self.hub = hub
        #: engines registered at the kill that have not said they are ready since the restart
        self.restored: set[bytes] = set()
        self._asked: OrderedDict[bytes, float] = OrderedDict()
        self._asked_restored: set[bytes] = set()

    # --- a controller restored from its store ---------------------------------------------------

    def restore(self, restored: "Restored") -> int:
        """Take back what the store held; returns how many in-flight requests failed at once."""
        hub = self.hub
        hub.records.restore(restored.records, restored.replies)
        now = time.monotonic()
        for e in restored.engines.values():
            uuid = e.uuid.encode("ascii", "replace")
            hub.registry.remember(uuid, e.id)
            if e.registered:
                rec = hub.registry.add(uuid, e.hostname, e.pid)
                self.restored.add(rec.uuid)
                hub.monitor.add(uuid, now)  # dead unless its heartbeat comes back in time
        failed = 0
        for r in hub.records.pending():
            client = r.client.encode("ascii", "replace")
            header = {"msg_id": r.msg_id, "msg_type": r.msg_type, "session": r.client, "date": r.submitted}
            owner = hub.registry.by_uuid(r.engine_uuid.encode("ascii", "replace")) if r.engine_uuid else None
            if owner is not None and owner.uuid in self.restored:
                hub.registry.submitted(owner, client, header)  # its reply may still come
                continue
            # the client matches a reply by its parent msg_id; the routing id only names the sender
            route = M.SCHEDULER if r.engine_uuid is None else r.engine_uuid.encode("ascii", "replace")
            why = ("it was still queued in the controller" if r.engine_uuid is None
                   else f"engine {r.engine_id}, which had the request, was no longer registered")
            hub.mux.reply_error(client, route, header, CONTROLLER_RESTARTED,
                                f"the controller restarted while {why}; the request did not finish", owner)
            failed += 1
        hub.log.info("restored %d task records (%d results kept, %d in flight failed) and %d engines",
                     len(hub.records), len(restored.replies), failed, len(self.restored))
        return failed

    # --- an engine that registered again --------------------------------------------------------

    def ready(self, rec: "EngineRecord", content: dict[str, Any]) -> None:
        """*rec* is ready again after a lost connection (``queued`` in *content*); see the module docstring."""
        queued_list = content.get("queued")
        if not isinstance(queued_list, list):
            return  # a first registration
        queued = {m for m in queued_list if isinstance(m, str)}
        hub = self.hub
        self._asked.pop(rec.uuid, None)
        if rec.uuid in self.restored:
            self.restored.discard(rec.uuid)
            self._asked_restored.discard(rec.uuid)
            lost = [(m, p) for m, p in rec.pending.items() if m not in queued]
            for m, p in lost:
                del rec.pending[m]
                hub.mux.reply_error(p.client, rec.uuid, p.header, CONTROLLER_RESTARTED,
                                    f"the reply of engine {rec.id} was lost when the controller restarted "
                                    "(the request ran at most once)", rec)
            if lost:
                hub.log.warning("engine %d: %d replies lost in the controller restart", rec.id, len(lost))
        # known here, but not expected from this engine: answered (or re-queued) while it was away;
        # a request we have no record of (submitted in the last instants before a kill) may run
        stale = sorted(m for m in queued if m not in rec.pending and m in hub.records)
        if stale:
            hub.log.info("engine %d: aborting %d requests answered while it was away", rec.id, len(stale))
            hub.send_to_engine_control(rec.uuid, M.ABORT_REQUEST, {"msg_ids": stale})

    def unregistered(self, rec: "EngineRecord") -> bool:
        """*rec* left; True if it was expected back after a restart (clients knew it as registered)."""
        if rec.uuid in self.restored:
            self.restored.discard(rec.uuid)
            self._asked_restored.discard(rec.uuid)
            return True
        return False

    # --- an engine we unregistered is alive after all -------------------------------------------

    def pong_from_restored(self, uuid: bytes) -> None:
        """A heartbeat echo from an engine expected back after the restart: ask it (once) to register
        again, in case it did not notice the restart by itself (its connection never looked lost)."""
        if uuid in self.restored and uuid not in self._asked_restored:
            self._asked_restored.add(uuid)
            self.hub.send_to_engine_control(uuid, M.REREGISTRATION_NOTIFICATION, {})

    def pong_from_unknown(self, uuid: bytes, now: float) -> None:
        """A heartbeat echo from *uuid*, which is not registered: if this controller once knew it
        (a partition that healed), ask it to register again, at most once per heartbeat period."""
        hub = self.hub
        if hub.registry.by_uuid(uuid) is not None or hub.registry.id_of(uuid) is None:
            return  # registered (not ready yet), or never registered here: nothing to ask
        last = self._asked.get(uuid)
        if last is not None and now - last < hub.monitor.period:
            return
        self._asked[uuid] = now
        self._asked.move_to_end(uuid)
        while len(self._asked) > MAX_ASKED:
            self._asked.popitem(last=False)
        hub.log.info("engine %s answers heartbeats again: asking it to register again", uuid[:8].decode(
            "ascii", "replace"))
        hub.send_to_engine_control(uuid, M.REREGISTRATION_NOTIFICATION, {})
