"""The hub: registration, client connections, queries, liveness and notifications.

Handlers are tables keyed by message type, one per socket role.  Every handler receives an
authenticated :class:`~ipcluster.protocol.session.Message`; frames are decoded once at the edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import zmq

from controller.heartbeat import HeartMonitor
from controller.introspect import controller_state
from controller.records import TaskRecords
from controller.restart import Returns
from controller.registry import EngineRecord, EngineRegistry
from controller.results import ResultWatches, result_entry
from controller.router import DropLog, Router
from ipcluster.errors import ProtocolError
from ipcluster.protocol import messages as M
from ipcluster.protocol.channel import Channel
from ipcluster.protocol.session import Message, Session, json_loads
from ipcluster.protocol.versions import incompatibility, local_versions

#: Seconds after a hub connection drops before the clients are probed (one probe per burst).
CLIENT_PROBE_DELAY = 1.0
#: Seconds a cancel waits for the engine to confirm the abort before the running task is stopped.
ABORT_FIRST = 0.2
#: Seconds the answer to a client's task abort waits at most for the engines to confirm it.
ABORT_CONFIRM = 2.0
#: Notifications sent to clients are capped per client set; a client that vanished without saying
#: goodbye is forgotten after this many clients connect after it.
MAX_CLIENTS = 10_000


def _death_facts(c: dict[str, Any], default: str = "") -> tuple[str, bool, str | None, dict[str, tuple[str, str]],
                                                                bool]:
    """``(reason, died, running, killed, restarting)`` for :meth:`Hub.unregister`, from a supervisor's
    death report (``engine_died_notification`` content, also repeated in a restarted engine's
    registration)."""
    code = c.get("exit_code")
    pid = c.get("pid")
    process = f"process {pid}" if isinstance(pid, int) and not isinstance(pid, bool) else "process"
    reason = f"{process} exited with {c.get('how') or f'code {code}'}" if "exit_code" in c else default
    killed: dict[str, tuple[str, str]] = {}
    k = c.get("killed")
    if isinstance(k, dict) and isinstance(k.get("msg_id"), str):
        killed[k["msg_id"]] = (str(k.get("ename") or "EngineDied"), str(k.get("evalue") or ""))
    running = c.get("running") if isinstance(c.get("running"), str) else None
    return reason, code != 0, running, killed, bool(c.get("restarting"))


class Hub:
    def __init__(
        self,
        session: Session,
        registry: EngineRegistry,
        hub: Channel,
        mux: Router,
        control: Router,
        hb_ping: Channel,
        monitor: HeartMonitor,
        drops: DropLog,
        log: logging.Logger,
        on_shutdown: Callable[[], None],
    ):
        self.session = session
        self.registry = registry
        self.hub = hub
        self.mux = mux
        self.control = control
        self.hb_ping = hb_ping
        self.monitor = monitor
        self.drops = drops
        self.log = log
        self.on_shutdown = on_shutdown
        self.clients: dict[bytes, float] = {}
        self.tasks: Any = None  # the TaskServer (set by the app)
        self.records = TaskRecords()  # what the mux route saw (the app hands it to the routers)
        self.raw_links: Any = None  # controller.rawlinks.RawLinks on the controller's host (set by the app)
        self.watches = ResultWatches()  # clients waiting for results still pending
        # cancels waiting for their engine to confirm the abort: abort msg_id -> (engine, msg_ids)
        self._after_abort: dict[str, tuple[bytes, list[str]]] = {}
        self._abort_waits: dict[str, _AbortWait] = {}  # abort sent to an engine -> the client's answer
        self.records.watch(self.watches.by_msg_id, self.result_finished)
        self.store: Any = None  # the persistent TaskStore (controller/store.py), set by the app
        self.returns = Returns(self)  # engines back from a controller restart or a partition
        self.read_pongs: Callable[[], None] | None = None  # drains the hb_pong socket (set by the app)
        self._probe_pending = False  # a probe of the clients is scheduled (see on_hub_disconnect)
        self.versions = local_versions()
        self.hub_handlers: dict[str, Callable[[Message], None]] = {
            M.CONNECTION_REQUEST: self.on_connection_request,
            M.QUEUE_STATUS_REQUEST: self.on_queue_status_request,
            M.CONTROLLER_SHUTDOWN_REQUEST: self.on_controller_shutdown_request,
            M.DISCONNECT_NOTIFICATION: self.on_disconnect,
            M.ENGINE_DIED_NOTIFICATION: self.on_engine_died,
            M.TASK_OUTCOME_NOTIFICATION: self.on_task_outcome,
            M.HISTORY_REQUEST: self.on_history_request,
            M.DB_QUERY_REQUEST: self.on_db_query_request,
            M.RESULT_REQUEST: self.on_result_request,
            M.CONTROLLER_STATE_REQUEST: self.on_controller_state_request,
            M.TASK_CANCEL_REQUEST: self.on_task_cancel_request,
        }
        self.engine_handlers: dict[str, Callable[[bytes, Message], None]] = {
            M.REGISTRATION_REQUEST: self.on_registration_request,
            M.UNREGISTRATION_NOTIFICATION: self.on_unregistration,
            M.ENGINE_READY_NOTIFICATION: self.on_engine_ready,
            M.ENGINE_STATUS_NOTIFICATION: self.on_engine_status,
            M.SHUTDOWN_REPLY: lambda engine, msg: None,
            M.ABORT_REPLY: self._on_abort_reply,
            M.TASK_INTERRUPT_REPLY: lambda engine, msg: None,
        }
        hub.on_message = self.from_hub_socket

    # --- edge ---------------------------------------------------------------------------------

    def from_hub_socket(self, frames: list[zmq.Frame]) -> None:
        try:
            msg = self.session.deserialize(frames, route="hub")
        except ProtocolError as e:
            self.drops.drop("hub", f"{type(e).__name__}: {e}", frames[0].bytes if frames else b"")
            return
        handler = self.hub_handlers.get(msg.msg_type)
        if handler is None:
            self.drops.drop("hub", f"unknown message type: {msg.msg_type[:40]!r}", msg.idents[0] if msg.idents else b"")
            return
        handler(msg)

    def from_engine(self, engine: bytes, msg: Message) -> None:
        handler = self.engine_handlers.get(msg.msg_type)
        if handler is None:
            self.drops.drop("engine", f"unknown message type: {msg.msg_type[:40]!r}", engine)
            return
        handler(engine, msg)

    def reply(self, request: Message, msg_type: str, content: dict[str, Any]) -> None:
        self.hub.send(self.session.serialize(msg_type, content, parent=request, idents=request.idents))

    def notify_clients(self, msg_type: str, content: dict[str, Any]) -> None:
        """Send a notification to every client; a client whose connection is gone (it died
        without saying goodbye) is forgotten, with its result watches (``client_gone``)."""
        sock = self.hub.sock
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a gone peer is an error here, not a silent drop
        try:
            for client in list(self.clients):
                try:
                    self.hub.send(self.session.serialize(msg_type, content, idents=[client]))
                except zmq.ZMQError as e:
                    if e.errno != zmq.EHOSTUNREACH:
                        raise
                    self.client_gone(client)
        finally:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)

    def on_hub_disconnect(self, frames: list[zmq.Frame]) -> None:
        """A connection to the hub socket dropped (a monitor event, which does not say whose):
        probe the clients soon, once per burst of disconnections."""
        if not self._probe_pending:
            self._probe_pending = True
            asyncio.get_running_loop().call_later(CLIENT_PROBE_DELAY, self.probe_clients)

    def probe_clients(self) -> None:
        """Find the clients that are gone (a send to one fails) and free what we keep for them."""
        self._probe_pending = False
        self.notify_clients(M.CLIENT_PROBE_NOTIFICATION, {})

    def client_gone(self, client: bytes) -> None:
        """Free what the controller keeps for *client* (its results stay, by msg_id)."""
        self.clients.pop(client, None)
        dropped = self.watches.drop_client(client)
        self.log.info("client %s is gone: forgotten (%d result watches dropped)", client[:16].decode(
            "ascii", "replace"), dropped)

    # --- clients ------------------------------------------------------------------------------

    def on_connection_request(self, msg: Message) -> None:
        client = msg.idents[0]
        self.clients[client] = time.time()
        if len(self.clients) > MAX_CLIENTS:
            oldest = min(self.clients, key=self.clients.__getitem__)
            del self.clients[oldest]
        engines = {str(e.id): e.info() for e in self.registry.ready_engines()}
        self.reply(msg, M.CONNECTION_REPLY, {
            "status": "ok", "engines": engines, "heartbeat_period": self.monitor.period,
            "versions": self.versions, "persistent": self.store is not None,
            "batches": True,  # the client may send batches (ipcluster.protocol.batch)
        })

    def on_disconnect(self, msg: Message) -> None:
        self.client_gone(msg.idents[0])

    def on_task_outcome(self, msg: Message) -> None:
        """A client reports how a request ended that a task depends on (and we may not have seen)."""
        c = msg.content
        if self.tasks is not None and isinstance(c.get("msg_id"), str):
            engine = str(c.get("engine") or "").encode() or None
            self.tasks.record_outcome(c["msg_id"], bool(c.get("success")), engine)

    def abort_tasks(self, content: dict[str, Any], answer: Callable[[dict[str, Any]], None]) -> None:
        """Abort load-balanced tasks: queued ones here; ones already sent, on their engine.

        Either way the task's client gets a ``TaskAborted`` error; a task already running finishes,
        unless ``cancel`` is true: then its engine's supervisor stops it (see :meth:`interrupt_tasks`).
        Clients send this on the mux route (like the tasks), so it arrives after the tasks it names.
        *answer* is called with the reply's content once every engine the abort went to has
        confirmed it (at most :data:`ABORT_CONFIRM` seconds: an engine busy in C code holding the
        GIL, or dead, answers late or never), so that when the client's ``abort()`` returns, the
        aborted tasks queued on engines can no longer start.
        """
        ids = [m for m in content.get("msg_ids") or [] if isinstance(m, str)]
        aborted: list[str] = []
        forwarded: list[str] = []
        by_engine: dict[bytes, list[str]] = {}
        if self.tasks is not None and ids:
            for m in ids:
                engine = self.tasks.scheduler.engine_of(m)
                if engine is not None:
                    by_engine.setdefault(engine, []).append(m)
            aborted = self.tasks.abort(ids)
        reply = {"status": "ok", "aborted": aborted, "forwarded": forwarded}
        waiting = _AbortWait(answer, reply)
        for engine, engine_ids in by_engine.items():
            key = self._send_abort(engine, engine_ids)
            if content.get("cancel"):
                if key is None:
                    self.interrupt_tasks(engine, engine_ids)
                else:
                    self._interrupt_when_aborted(key, engine, engine_ids)
            if key is not None:
                waiting.keys.add(key)
                self._abort_waits[key] = waiting
            forwarded += engine_ids
        if not waiting.keys:
            waiting.finish()
            return
        while len(self._abort_waits) > MAX_CLIENTS:  # (bounded: replies of engines that died)
            self._abort_confirmed(next(iter(self._abort_waits)))
        try:
            asyncio.get_running_loop().call_later(ABORT_CONFIRM, self._abort_timed_out, waiting)
        except RuntimeError:  # no loop (tests of the hub alone): at once
            self._abort_timed_out(waiting)

    def _send_abort(self, engine: bytes, msg_ids: list[str]) -> str | None:
        """An ``abort_request`` to *engine*'s control thread; its msg_id (None: not sent)."""
        header = self.session.header(M.ABORT_REQUEST)
        try:
            self.control.back.send(self.session.serialize(M.ABORT_REQUEST, {"msg_ids": msg_ids}, header=header,
                                                          idents=[engine]))
        except zmq.ZMQError as e:
            self.log.warning("cannot send an abort to engine %s: %s", engine[:8].hex(), e)
            return None
        return str(header["msg_id"])

    def _on_abort_reply(self, engine: bytes, msg: Message) -> None:
        self._abort_confirmed(msg.parent_id)
        self._interrupt_after_abort(msg.parent_id)

    def _abort_timed_out(self, waiting: "_AbortWait") -> None:
        """Answer the client without the confirmations still missing (engines that never reply
        are not waited for again)."""
        for key in waiting.keys:
            self._abort_waits.pop(key, None)
        waiting.keys.clear()
        waiting.finish()

    def _abort_confirmed(self, key: str) -> None:
        waiting = self._abort_waits.pop(key, None)
        if waiting is not None:
            waiting.keys.discard(key)
            if not waiting.keys:
                waiting.finish()

    def _interrupt_when_aborted(self, key: str, engine: bytes, msg_ids: list[str]) -> None:
        """Cancel tasks on *engine*: the abort (*key*) went first, so a task queued behind the
        running one is skipped rather than started and then interrupted; the running one is
        stopped once the engine confirms the abort, or after :data:`ABORT_FIRST` seconds (its
        control thread may be held up by a task holding the GIL)."""
        self._after_abort[key] = (engine, msg_ids)
        while len(self._after_abort) > MAX_CLIENTS:  # replies that never came (engines that died)
            del self._after_abort[next(iter(self._after_abort))]
        try:
            asyncio.get_running_loop().call_later(ABORT_FIRST, self._interrupt_after_abort, key)
        except RuntimeError:  # no loop (tests of the hub alone): at once
            self._interrupt_after_abort(key)

    def _interrupt_after_abort(self, abort_id: str) -> None:
        entry = self._after_abort.pop(abort_id, None)
        if entry is not None:
            self.interrupt_tasks(*entry)

    def on_task_cancel_request(self, msg: Message) -> None:
        """Stop running requests a client cancelled: ``{"tasks": {msg_id: engine uuid}}``.

        Clients send this for requests they sent to named engines (the controller may not have
        seen them: same-host requests go straight to the engine); the abort of queued ones goes to
        the engines themselves.
        """
        tasks = msg.content.get("tasks")
        by_engine: dict[bytes, list[str]] = {}
        if isinstance(tasks, dict):
            for msg_id, uuid in tasks.items():
                if isinstance(uuid, str):
                    by_engine.setdefault(uuid.encode("ascii", "replace"), []).append(str(msg_id))
        interrupting = []
        for engine, ids in by_engine.items():
            if self.interrupt_tasks(engine, ids):
                interrupting += ids
        self.reply(msg, M.TASK_CANCEL_REPLY, {"status": "ok", "interrupting": interrupting})

    def interrupt_tasks(self, engine: bytes, msg_ids: list[str], reason: str = "cancel") -> bool:
        """Ask *engine*'s supervisor to stop it running any of *msg_ids* (interrupt, then kill and
        restart it); an engine without a supervisor is asked itself (it interrupts only).
        ``False`` if the engine is unknown."""
        rec = self.registry.by_uuid(engine)
        if rec is None:
            return False
        content = {"uuid": engine.decode("ascii", "replace"), "msg_ids": msg_ids, "reason": reason}
        if not rec.supervisor_id:
            self.send_to_engine_control(engine, M.TASK_INTERRUPT_REQUEST, content)
            return True
        return self._to_supervisor(rec, content)

    def _to_supervisor(self, rec: EngineRecord, content: dict[str, Any]) -> bool:
        """Send *rec*'s supervisor a ``task_interrupt_request``; ``False`` if it cannot be sent."""
        try:
            self.hub.send(self.session.serialize(M.TASK_INTERRUPT_REQUEST, content, idents=[rec.supervisor_id]))
        except zmq.ZMQError as e:
            self.log.warning("cannot reach the supervisor of engine %d: %s", rec.id, e)
            return False
        return True

    def on_queue_status_request(self, msg: Message) -> None:
        targets = msg.content.get("targets")
        status = self.registry.queue_status(targets, bool(msg.content.get("verbose")))
        unassigned = self.tasks.unassigned if self.tasks is not None else 0
        self.reply(msg, M.QUEUE_STATUS_REPLY, {"status": "ok", "engines": status, "unassigned": unassigned})

    # --- task records (requests that went through the controller; not same-host direct ones) ---

    def on_history_request(self, msg: Message) -> None:
        self.reply(msg, M.HISTORY_REPLY, {"status": "ok", "history": self.records.history()})

    def on_db_query_request(self, msg: Message) -> None:
        query, keys = msg.content.get("query"), msg.content.get("keys")
        try:
            if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                raise ValueError("keys must be a list of field names")
            records = self.records.query(query if query is not None else {}, keys)
        except ValueError as e:
            self.reply(msg, M.DB_QUERY_REPLY, {"status": "error", "ename": "ValueError", "evalue": str(e)})
            return
        self.reply(msg, M.DB_QUERY_REPLY, {"status": "ok", "records": records})

    def on_result_request(self, msg: Message) -> None:
        """Status of each msg_id and, for completed ones whose reply is still kept, the reply's
        header, metadata and content, its buffers appended to this reply's (``buffers``: [start, stop]).
        With ``wait``, the client is notified when each pending one completes (see ``results.py``)."""
        results: dict[str, dict[str, Any]] = {}
        buffers: list[Any] = []
        status_only = bool(msg.content.get("status_only"))
        wait = bool(msg.content.get("wait")) and not status_only
        for m in [m for m in msg.content.get("msg_ids") or [] if isinstance(m, str)]:
            results[m] = result_entry(self.records, m, status_only, buffers)
            if wait and results[m]["status"] == "pending":
                for dropped in self.watches.add(m, msg.idents[0] if msg.idents else b"", msg.header):
                    self._notify_result(*dropped, {"status": "dropped"})
        self.hub.send(self.session.serialize(M.RESULT_REPLY, {"status": "ok", "results": results}, parent=msg,
                                             buffers=buffers, idents=msg.idents))

    def result_finished(self, msg_id: str) -> None:
        """A watched request finished (or its record was dropped): tell the clients waiting for it."""
        for client, request in self.watches.pop(msg_id):
            buffers: list[Any] = []
            self._notify_result(msg_id, client, request, result_entry(self.records, msg_id, False, buffers),
                                buffers)

    def _notify_result(self, msg_id: str, client: bytes, request: dict[str, Any], entry: dict[str, Any],
                       buffers: list[Any] | None = None) -> None:
        try:
            self.hub.send(self.session.serialize(M.RESULT_NOTIFICATION, {"results": {msg_id: entry}},
                                                 parent=request, buffers=buffers or [], idents=[client]))
        except zmq.ZMQError:
            pass  # the client has gone

    def on_controller_state_request(self, msg: Message) -> None:
        """Diagnostics: see :mod:`controller.introspect`."""
        c = msg.content
        self.reply(msg, M.CONTROLLER_STATE_REPLY,
                   controller_state(self, bool(c.get("verbose")), bool(c.get("objects"))))

    def on_controller_shutdown_request(self, msg: Message) -> None:
        self.reply(msg, M.CONTROLLER_SHUTDOWN_REPLY, {"status": "ok"})
        self.log.info("shutdown requested by a client")
        self.on_shutdown()

    def shutdown_engines(self) -> None:
        """Ask every registered engine to exit (used when the controller itself stops)."""
        for rec in self.registry:
            self.send_to_engine_control(rec.uuid, M.SHUTDOWN_REQUEST, {"restart": False})

    # --- engines ------------------------------------------------------------------------------

    def send_to_engine_control(self, engine: bytes, msg_type: str, content: dict[str, Any],
                               parent: Message | None = None) -> None:
        try:
            self.control.back.send(self.session.serialize(msg_type, content, parent=parent, idents=[engine]))
        except zmq.ZMQError as e:
            self.log.warning("cannot answer engine %s: %s", engine[:8].hex(), e)

    def on_registration_request(self, engine: bytes, msg: Message) -> None:
        c = msg.content
        uuid = str(c.get("uuid", ""))
        if uuid.encode() != engine:
            self.send_to_engine_control(engine, M.REGISTRATION_REPLY, {
                "status": "error", "evalue": "registration uuid does not match the socket identity"}, msg)
            return
        problem = incompatibility(self.versions, c.get("versions") or {})
        if problem:
            self.log.error("refused engine on %s pid %s: %s", c.get("hostname"), c.get("pid"), problem)
            self.send_to_engine_control(engine, M.REGISTRATION_REPLY, {
                "status": "error", "evalue": f"version mismatch: {problem}"}, msg)
            return
        restart_of = str(c.get("restart_of") or "").encode("ascii", "replace") or None
        old = self.registry.by_uuid(restart_of) if restart_of else None
        if old is not None:  # its supervisor restarted it before we heard of the death
            death = c.get("death")
            self.unregister(old, *_death_facts(death if isinstance(death, dict) else {},
                                               "engine restarted by its supervisor"))
        rec = self.registry.add(engine, str(c.get("hostname", "")), c.get("pid"), c.get("supervisor_pid"),
                                restart_of=restart_of)
        rec.supervisor_id = str(c.get("supervisor_id") or "").encode("ascii", "replace")
        rec.direct_url = str(c.get("direct_url") or "")
        rec.raw_url = str(c.get("raw_url") or "")
        if self.raw_links is not None and rec.raw_url:
            self.raw_links.connect_engine(engine, rec.raw_url)  # its load-balanced tasks go there
        rec.host_key = str(c.get("host_key") or "")
        rec.batches = c.get("batches") is True
        if self.store is not None:
            self.store.engine(rec.id, uuid, rec.hostname, rec.pid)
        self.send_to_engine_control(engine, M.REGISTRATION_REPLY, {
            "status": "ok", "id": rec.id, "heartbeat_period": self.monitor.period}, msg)

    def on_engine_ready(self, engine: bytes, msg: Message) -> None:
        rec = self.registry.by_uuid(engine)
        if rec is None or rec.ready:
            return
        rec.ready = True
        self.monitor.add(engine, time.monotonic())
        self.returns.ready(rec, msg.content)
        self.log.info("engine %d registered (%s pid %s)", rec.id, rec.hostname, rec.pid)
        self.notify_clients(M.ENGINE_REGISTERED_NOTIFICATION, {"id": rec.id, **rec.info()})
        if self.tasks is not None:
            self.tasks.engine_added(engine)

    def on_engine_status(self, engine: bytes, msg: Message) -> None:
        rec = self.registry.by_uuid(engine)
        done = msg.content.get("direct_completed")
        if rec is not None and isinstance(done, int) and done >= rec.direct_completed:
            rec.direct_completed = done

    def on_unregistration(self, engine: bytes, msg: Message) -> None:
        rec = self.registry.by_uuid(engine)
        if rec is not None:
            self.unregister(rec, "engine shut down")

    def on_engine_died(self, msg: Message) -> None:
        c = msg.content
        uuid = c.get("uuid")
        rec = self.registry.by_uuid(str(uuid).encode()) if uuid else None
        if rec is None:
            pid = c.get("pid")
            rec = next((e for e in self.registry if pid is not None and e.pid == pid), None)
        if rec is None:
            known = bool(uuid) and self.registry.id_of(str(uuid).encode()) is not None
            if c.get("exit_code") != 0 and not known:  # else: it was unregistered already
                self.log.warning("engine pid %s exited (code %s) before registering: %s",
                                 c.get("pid"), c.get("exit_code"), str(c.get("output", ""))[-500:])
            return
        self.unregister(rec, *_death_facts(c))

    def unregister(self, rec: EngineRecord, reason: str, died: bool = False, running: str | None = None,
                   killed: dict[str, tuple[str, str]] | None = None, restarting: bool = False) -> None:
        """Forget *rec*; fail or retry what it owed.  *died*, *running*, *killed*: see
        :meth:`controller.scheduling.state.TaskScheduler.remove_engine` (requests in *killed* fail
        with their own error, also direct ones; clients are told in the notification)."""
        self.registry.remove(rec)
        self.monitor.discard(rec.uuid)
        if self.raw_links is not None:
            self.raw_links.drop_engine(rec.uuid)
        killed = killed or {}
        what = f"engine {rec.id} (pid {rec.pid}) stopped: {reason}"
        if self.tasks is not None:
            # the scheduler retries or fails its own tasks; only direct requests are failed below
            for msg_id in [m for m in rec.pending if m in self.tasks.tasks]:
                del rec.pending[msg_id]
            self.tasks.engine_removed(rec.uuid, what, died, running, killed)
        for msg_id, (ename, evalue) in killed.items():
            p = rec.pending.pop(msg_id, None)
            if p is not None:
                self.mux.reply_error(p.client, rec.uuid, p.header, ename, evalue, rec)
        failed = self.mux.fail_pending(rec, reason) + self.control.fail_pending(rec, reason)
        self.log.info("engine %d unregistered: %s (%d pending requests failed)", rec.id, reason, failed)
        if self.store is not None:
            self.store.engine(rec.id, rec.uuid.decode("ascii", "replace"), rec.hostname, rec.pid, registered=False)
        if self.returns.unregistered(rec) or rec.ready:
            self.notify_clients(M.ENGINE_UNREGISTERED_NOTIFICATION, {
                "id": rec.id, "uuid": rec.uuid.decode("ascii", "replace"), "reason": reason,
                "killed": {m: list(e) for m, e in killed.items()}, "restarting": restarting})

    # --- heartbeat ----------------------------------------------------------------------------

    def on_pong(self, frames: list[zmq.Frame]) -> None:
        if frames:
            uuid = frames[0].bytes
            if uuid in self.monitor.watched:
                self.monitor.beat(uuid, time.monotonic())
                if self.returns.restored:
                    self.returns.pong_from_restored(uuid)
            else:
                self.returns.pong_from_unknown(uuid, time.monotonic())

    def heartbeat_tick(self) -> None:
        if self.read_pongs is not None:
            self.read_pongs()  # echoes already here count, even if the loop was busy until now
        now = time.monotonic()
        for uuid in self.monitor.expired(now):
            rec = self.registry.by_uuid(uuid)
            if rec is not None:
                self.unregister(rec, f"no heartbeat for {self.monitor.period * self.monitor.misses:g} s",
                                died=True)
                if rec.supervisor_id:  # a stopped process: its supervisor kills (and may restart) it
                    self._to_supervisor(rec, {"uuid": rec.uuid.decode("ascii", "replace"), "msg_ids": [],
                                              "reason": "no heartbeat", "kill_if_stopped": True})
        self.hb_ping.send([b"%f" % now])
        self.monitor.ping(now)


class _AbortWait:
    """A client's task abort, answered once every engine it went to confirmed it (or on time-out)."""

    __slots__ = ("answer", "reply", "keys", "done")

    def __init__(self, answer: Callable[[dict[str, Any]], None], reply: dict[str, Any]):
        self.answer, self.reply = answer, reply
        self.keys: set[str] = set()  # msg_ids of the abort_requests not confirmed yet
        self.done = False

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.answer(self.reply)
