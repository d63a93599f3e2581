"""The load-balanced task route: the thin socket side of :mod:`controller.scheduling`.

A client sends a task on its mux socket addressed to the reserved routing id ``SCHEDULER``; the
router hands it here.  The pure :class:`~controller.scheduling.state.TaskScheduler` decides where
and when it runs; this module only turns its instructions into sends: ``Assign`` forwards the
task's frames (kept, never copied or unpickled) to the engine through the mux back socket, exactly
as a direct request, and ``Fail`` answers the client with an error reply.  Replies come back
through the router, which asks :meth:`TaskServer.on_reply` whether to deliver them (a failed
attempt that will be retried is not delivered).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Sequence

import zmq

from controller.registry import EngineRecord, EngineRegistry
from controller.scheduling.dependencies import Dependency
from controller.scheduling.state import TaskScheduler
from controller.scheduling.tasks import Assign, Fail, Instruction, Task
from ipcluster.protocol.messages import SCHEDULER

# (client, engine uuid, request header, ename, evalue[, engine record]): Router.reply_error
ReplyError = Callable[..., None]


class TaskServer:
    """Keeps the frames of scheduled tasks and carries out the scheduler's instructions."""

    def __init__(self, scheduler: TaskScheduler, registry: EngineRegistry, send_to_engine: Callable[[list[Any]], None],
                 reply_error: ReplyError, log: logging.Logger):
        self.scheduler = scheduler
        self.registry = registry
        self.send_to_engine = send_to_engine
        self.reply_error = reply_error
        self.log = log
        # msg_id -> (client identity, request header, frames from the delimiter on)
        self.tasks: dict[str, tuple[bytes, dict[str, Any], list[Any]]] = {}
        self.records: Any = None  # the controller's TaskRecords (set by the app)
        # the mux route's EngineOutbox (set by the app): tasks assigned while the controller
        # handles queued messages go to each engine together; None sends each at once
        self.outbox: Any = None

    # --- events in ----------------------------------------------------------------------------

    def submit(self, client: bytes, header: dict[str, Any], metadata: dict[str, Any], msg_frames: list[Any]) -> None:
        msg_id = header.get("msg_id", "")
        if msg_id.__class__ is not str:
            msg_id = str(msg_id)
        now = time.monotonic()
        try:
            task = self._task(msg_id, client, metadata, now)
        except (TypeError, ValueError, KeyError) as e:
            self.reply_error(client, SCHEDULER, header, "InvalidDependency" if "depend" in str(e) else "ValueError",
                             f"invalid task options: {e}")
            return
        # outcomes the client saw (e.g. of direct-route requests the controller never saw)
        known = metadata.get("known")
        if known and isinstance(known, dict):
            for dep_id, outcome in known.items():
                if isinstance(outcome, dict) and self._unknown(str(dep_id)):
                    engine = str(outcome.get("engine") or "").encode() or None
                    self.carry_out(self.scheduler.record_outcome(str(dep_id), bool(outcome.get("success")), engine))
        pending = metadata.get("pending")
        if pending and isinstance(pending, list):
            for dep_id in pending:
                if self._unknown(str(dep_id)):
                    self.scheduler.record_pending(str(dep_id))  # its outcome comes from the client
        if msg_id in self.tasks:
            self.reply_error(client, SCHEDULER, header, "ValueError", f"task {msg_id} was already submitted")
            return
        self.tasks[msg_id] = (client, header, msg_frames)
        self.carry_out(self.scheduler.submit(task, now))

    def engine_added(self, engine: bytes) -> None:
        self.carry_out(self.scheduler.add_engine(engine, time.monotonic()))

    def engine_removed(self, engine: bytes, reason: str = "", died: bool = False, running: str | None = None,
                       killed: dict[str, tuple[str, str]] | None = None) -> None:
        """*engine* left (see :meth:`TaskScheduler.remove_engine` for the arguments)."""
        self.carry_out(self.scheduler.remove_engine(engine, time.monotonic(), reason, died, running, killed))

    def on_reply(self, engine: bytes, msg_id: str, status: str) -> bool:
        """A reply to a scheduled task arrived; ``True`` if it goes to the client."""
        if msg_id not in self.tasks:
            return True
        instructions, deliver = self.scheduler.finished(engine, msg_id, status == "ok", time.monotonic())
        if deliver:
            self.tasks.pop(msg_id, None)
        self.carry_out(instructions)
        return deliver

    def declined(self, engine: bytes, msg_id: str) -> None:
        """*engine* declined a scheduled task (an ``@require`` / ``@depend`` is unmet there).

        The reply is not delivered: the scheduler places the task on another engine, or fails it
        with ``UnmetDependency`` once every engine that could run it has declined.
        """
        self.carry_out(self.scheduler.declined(engine, msg_id, time.monotonic()))

    def record_outcome(self, msg_id: str, success: bool, engine: bytes) -> None:
        """A request that did not go through the scheduler finished (dependencies may name it)."""
        if self._unknown(msg_id):
            self.carry_out(self.scheduler.record_outcome(msg_id, success, engine))

    def _unknown(self, msg_id: str) -> bool:
        """Neither a task of ours nor a request whose outcome the scheduler already has."""
        return msg_id not in self.tasks and self.scheduler.outcome(msg_id) is None

    def abort(self, msg_ids: Sequence[str]) -> list[str]:
        """Remove queued tasks; returns the msg_ids that were aborted here."""
        instructions = self.scheduler.abort(msg_ids, time.monotonic())
        self.carry_out(instructions)
        return [i.msg_id for i in instructions if isinstance(i, Fail) and i.ename == "TaskAborted"]

    def tick(self) -> None:
        self.carry_out(self.scheduler.tick(time.monotonic()))

    # --- instructions out ---------------------------------------------------------------------

    def carry_out(self, instructions: Sequence[Instruction]) -> None:
        if not instructions:
            return
        tasks, registry, records, outbox = self.tasks, self.registry, self.records, self.outbox
        for ins in instructions:
            entry = tasks.get(ins.msg_id)
            if entry is None:
                continue
            client, header, msg_frames = entry
            if isinstance(ins, Assign):
                rec = registry.by_uuid(ins.engine)
                if rec is None or not rec.ready:
                    # the scheduler learns of deaths through engine_removed; this is a race
                    self.carry_out(self.scheduler.remove_engine(ins.engine, time.monotonic()))
                    continue
                if outbox is not None:  # noted as sent now; undone if the engine is unreachable
                    registry.submitted(rec, client, header)
                    if records is not None:
                        records.assigned(ins.msg_id, rec.id, rec.uuid_text)
                    outbox.send([ins.engine, client, *msg_frames],
                                functools.partial(self._unreachable, rec, ins.msg_id), self.send_to_engine)
                    continue
                try:
                    self.send_to_engine([ins.engine, client, *msg_frames])
                except zmq.ZMQError as e:
                    if e.errno != zmq.EHOSTUNREACH:
                        raise
                    self.carry_out(self.scheduler.remove_engine(ins.engine, time.monotonic()))
                    continue
                registry.submitted(rec, client, header)
                if records is not None:
                    records.assigned(ins.msg_id, rec.id, rec.uuid_text)
            else:
                self.tasks.pop(ins.msg_id, None)
                where = None
                if ins.engine is not None:  # name the engine it was on (it may have left already)
                    eid = self.registry.id_of(ins.engine)
                    where = EngineRecord(eid, ins.engine) if eid is not None else None
                self.reply_error(client, SCHEDULER, header, ins.ename, ins.evalue, where)

    def _unreachable(self, rec: EngineRecord, msg_id: str) -> None:
        """The task could not be sent to *rec* (its connection is gone): as for a failed send."""
        rec.pending.pop(msg_id, None)  # (not a completion)
        self.carry_out(self.scheduler.remove_engine(rec.uuid, time.monotonic()))

    # --- helpers ------------------------------------------------------------------------------

    def _task(self, msg_id: str, client: bytes, md: dict[str, Any], now: float) -> Task:
        get = md.get
        targets, after, follow, retries, timeout = (get("targets"), get("after"), get("follow"), get("retries"),
                                                    get("timeout"))
        uuids = None
        if targets is not None:
            uuids = []
            for eid in targets:
                rec = self.registry.by_id(int(eid))
                if rec is not None:
                    uuids.append(rec.uuid)
        return Task(msg_id, client, uuids, _dependency(after) if after else None,
                    _dependency(follow) if follow else None, int(retries) if retries else 0,
                    float(timeout) if timeout is not None else None, now)

    @property
    def unassigned(self) -> int:
        return self.scheduler.queued


def _dependency(wire: Any) -> Dependency | None:
    if not wire:
        return None
    if not isinstance(wire, dict):
        raise ValueError("dependency must be an object with msg_ids")
    return Dependency.from_wire(wire)
