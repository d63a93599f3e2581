"""Forwarding between clients and named engines (the mux and control routes).

A client's DEALER sends ``[engine_uuid, <IDS|MSG>, ...]``; the front ROUTER prepends the client's
identity; we swap the two identities and send ``[engine_uuid, client, <IDS|MSG>, ...]`` on the back
ROUTER (``ROUTER_MANDATORY``, so a vanished engine is an error, not a silent drop).  Replies come back
the same way in reverse.  Frames are forwarded as the zmq frames we received: payload buffers are
never copied or unpickled; only the small JSON header (and, for replies, the parent header) is read.

Messages an engine sends without a destination identity are for the controller itself and go to
``on_engine_message``.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable

import zmq

from controller.coalesce import Coalescer
from controller.outbox import ClientOutbox, EngineOutbox, Outboxes
from controller.rawlinks import RAW_CLIENT_PREFIX
from controller.records import TaskRecords, reply_seen, request_seen
from controller.registry import EngineRecord, EngineRegistry
from ipcluster.errors import ProtocolError
from ipcluster.protocol import batch as batching
from ipcluster.protocol.channel import Channel
from ipcluster.protocol.messages import (BROADCAST, OUTPUT_TYPES, REPLY_FOR, SCHEDULER, TASK_ABORT_REPLY,
                                         TASK_ABORT_REQUEST)
from ipcluster.protocol.session import DELIM, Message, Session, json_loads

EngineMessageHandler = Callable[[bytes, Message], None]

#: Distinct (route, kind) pairs a DropLog counts separately.
MAX_DROP_KINDS = 256

_Frame = zmq.Frame


def _b(frame: Any) -> bytes:
    """A frame's bytes: zmq frames from sockets, bytearrays from raw links (controller.rawlinks)."""
    return frame.bytes if frame.__class__ is _Frame else bytes(frame)


#: In a reply's metadata: the engine already delivered it to the client (compact JSON, as engines write it).
_DELIVERED = b'"delivered":true'


class DropLog:
    """Counts rejected messages; logs a short line at counts 1, 10, 100, ... per (route, kind).

    The kind is the *reason* up to its first colon (``"InvalidSignature: ..."`` -> ``InvalidSignature``),
    so details a peer controls (frame counts, message types) never make new kinds; and at most
    :data:`MAX_DROP_KINDS` kinds are kept, later ones counting as ``other``.  A logged line is at most
    a few hundred characters whatever the message held.
    """

    def __init__(self, log: logging.Logger):
        self.log = log
        self.counts: dict[tuple[str, str], int] = {}

    def drop(self, route: str, reason: str, peer: bytes = b"") -> None:
        key = (route, reason.partition(":")[0][:60])
        if key not in self.counts and len(self.counts) >= MAX_DROP_KINDS:
            key = (route, "other")
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        if n == 1 or n in (10, 100, 1000, 10_000, 100_000) or n % 1_000_000 == 0:
            self.log.warning("dropped message on %s from peer %s: %s (%d so far)",
                             route, peer[:8].hex(), reason[:120], n)


class Router:
    """One route (mux or control): a front ROUTER facing clients, a back ROUTER facing engines."""

    def __init__(
        self,
        name: str,
        session: Session,
        registry: EngineRegistry,
        front: Any,  # a Channel, or controller.rawlinks.Front around one
        back: Channel,
        on_engine_message: EngineMessageHandler,
        drops: DropLog,
        iopub: Channel | None = None,
        track: bool = False,
    ):
        self.name = name
        self.session = session
        self.registry = registry
        self.front = front
        self.back = back
        self.iopub = iopub
        self.on_engine_message = on_engine_message
        self.drops = drops
        self.track = track
        self.tasks: Any = None  # the TaskServer, on the mux route (set by the app)
        # (content, answer): the app's task abort, which calls answer(reply content) when it is in effect
        self.abort_tasks: Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None] | None = None
        self.records: TaskRecords | None = None  # task records, on the mux route (set by the app)
        # what the controller sends on this route while it handles a pass of queued messages is
        # held and sent per peer, several small messages as one batch (controller/outbox.py)
        self.to_engines = EngineOutbox(session, back.send, immediate_prefix=RAW_CLIENT_PREFIX,
                                       takes_batches=self._engine_takes_batches)
        self.to_client = ClientOutbox(session, front)
        self.outboxes = Outboxes(self.to_engines, self.to_client)
        self.batches_received = self.batch_parts_received = self.engine_batches_received = 0
        self.coalescer = Coalescer(session, self.to_client.send)  # broadcasts answered with one message
        front.on_message = self.from_client
        back.on_message = self.from_engine

    def _engine_takes_batches(self, uuid: bytes) -> bool:
        rec = self.registry.by_uuid(uuid)
        return rec is not None and rec.batches

    # --- client -> engine ---------------------------------------------------------------------

    def from_client(self, frames: list[Any], in_batch: bool = False) -> None:
        """A client's message (*in_batch*: a part of a batch, see ``ipcluster.protocol.batch``)."""
        if len(frames) < 3 or _b(frames[2]) != DELIM:
            self.drops.drop(f"{self.name}_front", "no engine identity before the delimiter",
                            _b(frames[0]) if frames else b"")
            return
        client, target = _b(frames[0]), _b(frames[1])
        if target == batching.BATCH_TARGET and self.track:
            if in_batch:
                self.drops.drop(f"{self.name}_front", "a batch inside a batch", client)
            else:
                self._client_batch(client, frames)
            return
        try:
            parts, header = self.session.verify_header(frames[3:], self.name)
        except (ProtocolError, ValueError, UnicodeDecodeError) as e:
            self.drops.drop(f"{self.name}_front", f"{type(e).__name__}: {e}", client)
            return
        self._request(client, target, frames, parts, header)

    def _request(self, client: bytes, target: bytes, frames: list[Any], parts: list[bytes],
                 header: dict[str, Any]) -> None:
        """A client's request whose signature checked out: to the scheduler, to engines, or answered."""
        if target == SCHEDULER and self.tasks is not None:
            if header.get("msg_type") == TASK_ABORT_REQUEST and self.abort_tasks is not None:
                try:
                    content = json_loads(parts[3])
                except ValueError:
                    content = {}
                def answer(reply: dict[str, Any]) -> None:
                    self.to_client.send(self.session.serialize(TASK_ABORT_REPLY, reply, parent=header,
                                                               idents=[client, SCHEDULER]))

                self.abort_tasks(content if isinstance(content, dict) else {}, answer)
                return
            try:
                metadata = json_loads(parts[2])
            except ValueError:
                metadata = {}
            if self.records is not None:
                request_seen(self.records, header, frames[8:])
            self.tasks.submit(client, header, metadata if isinstance(metadata, dict) else {}, frames[2:])
            return
        if target == BROADCAST and self.track:
            self._broadcast(client, header, parts[2], frames)
            return
        rec = self.registry.by_uuid(target)
        if rec is None or not rec.ready:
            self.reply_error(client, target, header, "EngineError",
                             f"engine {target.decode('ascii', 'replace')} is not registered "
                             "(it may have died or been shut down)")
            return
        frames[0], frames[1] = frames[1], frames[0]
        if self.track:  # noted as sent now; undone if the engine turns out unreachable
            self.registry.submitted(rec, client, header)
            if self.records is not None:
                request_seen(self.records, header, frames[8:], rec.id, rec.uuid)
            self.to_engines.send(frames, functools.partial(self._unreachable, client, target, header, rec))
            return
        try:
            self.back.send(frames)
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise
            self.reply_error(client, target, header, "EngineError",
                             f"engine {rec.id} is unreachable (its connection is gone)", rec)

    def _unreachable(self, client: bytes, target: bytes, header: dict[str, Any], rec: EngineRecord) -> None:
        """A request sent to *rec* could not be (its connection is gone): answer it with an error."""
        rec.pending.pop(str(header.get("msg_id", "")), None)  # (not a completion)
        self.reply_error(client, target, header, "EngineError",
                         f"engine {rec.id} is unreachable (its connection is gone)", rec)

    def _client_batch(self, client: bytes, frames: list[Any]) -> None:
        """A client's batch: each part handled as if it had come alone, in order, with what that
        sends to engines and clients held until the last part (controller/outbox.py).

        Each part's own signature is checked too (unlike engines and clients, which trust the
        controller's batches): a part may later be forwarded alone, and its receiver checks it.
        A part that fails is dropped and counted like a message alone; the others go on."""
        try:
            msg = self.session.deserialize(frames[2:], route=self.name)
            parts = batching.unpack(msg)
        except (ProtocolError, ValueError, UnicodeDecodeError) as e:
            self.drops.drop(f"{self.name}_front", f"{type(e).__name__}: {e}", client)
            return
        self.to_client.takes_batches(client)
        self.batches_received += 1
        self.batch_parts_received += len(parts)
        ident = frames[0]
        verify, name = self.session.verify_header, self.name
        with self.outboxes:
            for part in parts:
                # the usual part, [target, DELIM, signed frames...], checked here as from_client would
                # (the same checks and drops, in the same order); anything else goes through it
                target = part[0]
                if len(part) > 2 and part[1] is DELIM and target.__class__ is bytes and target != batching.BATCH_TARGET:
                    try:
                        vparts, header = verify(part[2:], name)
                    except (ProtocolError, ValueError, UnicodeDecodeError) as e:
                        self.drops.drop(f"{name}_front", f"{type(e).__name__}: {e}", client)
                        continue
                    self._request(client, target, [ident, *part], vparts, header)
                else:
                    self.from_client([ident, *part], in_batch=True)

    def _broadcast(self, client: bytes, header: dict[str, Any], metadata_part: Any, frames: list[zmq.Frame]) -> None:
        """Forward one request to every engine its metadata's ``targets`` names (null: all ready).

        Each engine gets the same zmq frames (pyzmq sends a Frame by reference, so the payload is
        neither copied nor unpickled).  Every part is pending under the request's msg_id in its own
        engine's record, so queue_status, replies and ``fail_pending`` work per engine.
        """
        try:
            metadata = json_loads(metadata_part)
        except ValueError:
            metadata = {}
        if not isinstance(metadata, dict):
            metadata = {}
        targets = metadata.get("targets")
        if targets is None:
            ids = [rec.id for rec in self.registry.ready_engines()]
        elif isinstance(targets, list) and all(isinstance(t, int) for t in targets):
            ids = list(dict.fromkeys(targets))  # one part per engine: pending is keyed by msg_id
        else:
            self.drops.drop(f"{self.name}_front", "broadcast targets is not a list of engine ids", client)
            return
        rest = frames[2:]
        msg_id = str(header.get("msg_id", ""))
        coalesce = metadata.get("coalesce") is True and msg_id not in self.coalescer
        if coalesce:
            self.coalescer.start(msg_id, client, header)
        for eid in ids:
            rec = self.registry.by_id(eid)
            if rec is None or not rec.ready:
                # no uuid to route by: the reply names the engine by id in its metadata
                self.reply_error(client, b"", header, "EngineError",
                                 f"engine {eid} is not registered (it may have died or been shut down)",
                                 rec or EngineRecord(eid, b""))
                continue
            if coalesce:
                self.coalescer.expect(msg_id, rec.uuid)
            self.registry.submitted(rec, client, header)  # undone if the engine is unreachable
            self.to_engines.send([rec.uuid, client, *rest],
                                 functools.partial(self._unreachable, client, rec.uuid, header, rec))
        if coalesce:
            self.coalescer.flush(msg_id)  # sends now if no engine was reachable

    # --- engine -> client ---------------------------------------------------------------------

    def from_engine(self, frames: list[Any], in_batch: bool = False) -> None:
        """An engine's message (*in_batch*: a part of a batch of its replies)."""
        if len(frames) < 2:
            self.drops.drop(f"{self.name}_back", "too few frames", _b(frames[0]) if frames else b"")
            return
        engine = _b(frames[0])
        to_controller = _b(frames[1]) == DELIM
        start = 1 if to_controller else 2
        if not to_controller and (len(frames) < 3 or _b(frames[2]) != DELIM):
            self.drops.drop(f"{self.name}_back", "no delimiter after the client identity", engine)
            return
        try:
            if to_controller:
                msg = self.session.deserialize(frames[start:], has_idents=False, route=self.name)
            else:
                parts, header = self.session.verify_header(frames[start + 1 :], self.name)
        except (ProtocolError, ValueError, UnicodeDecodeError) as e:
            self.drops.drop(f"{self.name}_back", f"{type(e).__name__}: {e}", engine)
            return
        if to_controller and (in_batch or msg.msg_type == batching.BATCH):
            if in_batch or not self.track:
                self.drops.drop(f"{self.name}_back", "a message for the controller inside a batch" if in_batch
                                else "a batch where none is expected", engine)
            else:
                self._engine_batch(frames[0], engine, msg)
            return
        if to_controller:
            if msg.msg_type in OUTPUT_TYPES:  # output of a request the engine got directly
                self._publish(engine, msg.msg_type, frames[start:])
            else:
                self.on_engine_message(engine, msg)
            return
        rec = self.registry.by_uuid(engine)
        if rec is None:
            # a late message from an engine we unregistered: its requests were already failed
            self.drops.drop(f"{self.name}_back", "message from an unregistered engine", engine)
            return
        self._reply(engine, rec, frames, parts, header)

    def _reply(self, engine: bytes, rec: EngineRecord, frames: list[Any], parts: list[bytes],
               header: dict[str, Any]) -> None:
        """An engine's reply (or output) for a client, its signature checked: noted, then passed on."""
        msg_type = header.get("msg_type", "")
        if msg_type in OUTPUT_TYPES:
            frames[0], frames[1] = frames[1], frames[0]
            self.to_client.send(frames)
            self._publish(engine, msg_type, frames[2:])
            return
        deliver = True
        content: Any = parts[3]
        if self.track:
            parent_id = json_loads(parts[1]).get("msg_id", "")
            self.registry.finished(rec, parent_id)
            tasks = self.tasks
            if tasks is not None:
                content = json_loads(content)  # (decoded once: reply_seen takes it decoded)
                status = content.get("status") if isinstance(content, dict) else None
                ok = status == "ok"
                if parent_id not in tasks.tasks:
                    tasks.record_outcome(parent_id, ok, engine)
                elif status == "unmet":
                    tasks.declined(engine, parent_id)  # placed elsewhere or failed; never delivered
                    deliver = False
                else:
                    deliver = tasks.on_reply(engine, parent_id, "ok" if ok else "error")
        if deliver and self.records is not None:  # (False for a late second reply: one result per msg_id)
            deliver = reply_seen(self.records, parent_id, parts[2], content, frames[2:], rec.id, rec.uuid,
                                 time.time())
        if deliver and self.coalescer.pending and self.coalescer.part(parent_id, engine, frames[2:]):
            return
        if deliver and _DELIVERED in parts[2]:
            return  # the engine sent it to the waiting client directly; this copy is for the records
        if deliver:
            frames[0], frames[1] = frames[1], frames[0]
            self.to_client.send(frames)

    def _engine_batch(self, ident: Any, engine: bytes, msg: Message) -> None:
        """Replies an engine sent together (``engines/replyhold.py``): each one checked in full and
        handled in order as if it had come alone (the controller passes them on, alone or in its
        own batches, so it checks what it passes on)."""
        try:
            parts = batching.unpack(msg)
        except ProtocolError as e:
            self.drops.drop(f"{self.name}_back", f"{type(e).__name__}: {e}", engine)
            return
        self.engine_batches_received += 1
        verify, name, by_uuid = self.session.verify_header, self.name, self.registry.by_uuid
        with self.outboxes:
            for part in parts:
                # the usual part, a reply for a client ([client, DELIM, signed frames...]), checked here
                # as from_engine would (the same checks and drops); anything else goes through it
                if len(part) > 2 and part[1] is DELIM and part[0] != DELIM:
                    try:
                        vparts, header = verify(part[2:], name)
                    except (ProtocolError, ValueError, UnicodeDecodeError) as e:
                        self.drops.drop(f"{name}_back", f"{type(e).__name__}: {e}", engine)
                        continue
                    rec = by_uuid(engine)
                    if rec is None:
                        self.drops.drop(f"{name}_back", "message from an unregistered engine", engine)
                        continue
                    self._reply(engine, rec, [ident, *part], vparts, header)
                else:
                    self.from_engine([ident, *part], in_batch=True)

    def _publish(self, engine: bytes, msg_type: str, msg_frames: list[zmq.Frame]) -> None:
        """A copy of an engine's output on iopub, topic ``engine.<id>.<msg_type>`` (frames from the delimiter)."""
        rec = self.registry.by_uuid(engine)
        if self.iopub is None or rec is None:
            return
        self.iopub.send([b"engine.%d.%s" % (rec.id, msg_type.encode()), *msg_frames])

    # --- answers the controller gives on an engine's behalf ----------------------------------

    def reply_error(
        self,
        client: bytes,
        engine_uuid: bytes,
        request: dict[str, Any],
        ename: str,
        evalue: str,
        rec: EngineRecord | None = None,
    ) -> None:
        reply_type = REPLY_FOR.get(request.get("msg_type", ""), "error")
        info = {"engine_id": rec.id if rec else None,
                "engine_uuid": engine_uuid.decode("ascii", "replace"),
                "method": request.get("msg_type", "").replace("_request", "")}
        content = {"status": "error", "ename": ename, "evalue": evalue, "traceback": [],
                   "exc_module": "ipcluster.errors", "exc_qualname": ename, "engine_info": info}
        now = time.time()
        metadata = {"engine_id": info["engine_id"], "engine_uuid": info["engine_uuid"],
                    "status": "error", "received": now, "started": None, "completed": now}
        frames = self.session.serialize(reply_type, content, parent=request, metadata=metadata,
                                        idents=[client, engine_uuid])
        msg_id = str(request.get("msg_id", ""))
        if not (self.coalescer and self.coalescer.part(msg_id, engine_uuid, frames[2:])):
            self.to_client.send(frames)
        if self.records is not None:  # a request that ends here (dead engine, failed task ...)
            self.records.finished(str(request.get("msg_id", "")), "error", now, ename=ename,
                                  engine_id=info["engine_id"], reply=frames[2:])

    def fail_pending(self, rec: EngineRecord, reason: str) -> int:
        """Answer every request *rec* still owed with ``EngineDied``; returns how many.

        The error names the request, in the same words a client uses when it fails a request it sent
        straight to the engine: a DirectView request goes through here whenever the client's direct
        connection to the engine was not up yet, and the client may then get this error before the
        unregistration notice it would otherwise build its own from."""
        pending, rec.pending = rec.pending, {}
        for msg_id, p in pending.items():
            self.reply_error(p.client, rec.uuid, p.header, "EngineDied",
                             f"engine {rec.id} stopped before replying to {msg_id} ({reason})", rec)
        return len(pending)
