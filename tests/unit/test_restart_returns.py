"""controller/restart.py without sockets: what a restored controller expects back, fails, aborts."""

from __future__ import annotations

import logging
from typing import Any

from controller.heartbeat import HeartMonitor
from controller.records import TaskRecords, TaskRecord
from controller.registry import EngineRegistry
from controller.restart import CONTROLLER_RESTARTED, Returns
from controller.store import Restored, StoredEngine
from ipcluster.protocol import messages as M


class FakeMux:
    def __init__(self, records: TaskRecords):
        self.records = records
        self.errors: list[tuple[bytes, bytes, str, str, str]] = []

    def reply_error(self, client: bytes, route: bytes, header: dict[str, Any], ename: str, evalue: str,
                    rec: Any = None) -> None:
        self.errors.append((client, route, str(header["msg_id"]), ename, evalue))
        self.records.finished(str(header["msg_id"]), "error", 1.0, ename=ename)


class FakeHub:
    def __init__(self) -> None:
        self.records = TaskRecords()
        self.registry = EngineRegistry()
        self.monitor = HeartMonitor(0.2, 3)
        self.mux = FakeMux(self.records)
        self.log = logging.getLogger("test")
        self.sent: list[tuple[bytes, str, dict[str, Any]]] = []
        self.returns = Returns(self)  # type: ignore[arg-type]

    def send_to_engine_control(self, engine: bytes, msg_type: str, content: dict[str, Any]) -> None:
        self.sent.append((engine, msg_type, content))


def _restored() -> Restored:
    recs = [
        TaskRecord("done", "c1", "apply_request", 0, "e0", 1.0, completed=2.0, status="ok"),
        TaskRecord("on-e0-a", "c1", "apply_request", 0, "e0", 1.0),
        TaskRecord("on-e0-b", "c1", "apply_request", 0, "e0", 1.0),
        TaskRecord("queued", "c2", "apply_request", None, None, 1.0),
        TaskRecord("on-gone", "c2", "apply_request", 2, "e2", 1.0),
    ]
    engines = {0: StoredEngine(0, "e0", "h", 10), 1: StoredEngine(1, "e1", "h", 11),
               2: StoredEngine(2, "e2", "h", 12, registered=False)}
    return Restored(recs, {"done": [b"frames"]}, engines)


def test_restore_expects_engines_back_with_their_ids_and_fails_what_cannot_finish():
    hub = FakeHub()
    failed = hub.returns.restore(_restored())
    assert failed == 2
    assert {(m, e) for _, _, m, e, _ in hub.mux.errors} == {("queued", CONTROLLER_RESTARTED),
                                                            ("on-gone", CONTROLLER_RESTARTED)}
    e0, e1 = hub.registry.by_uuid(b"e0"), hub.registry.by_uuid(b"e1")
    assert (e0.id, e1.id) == (0, 1) and not e0.ready and hub.registry.by_uuid(b"e2") is None
    assert set(e0.pending) == {"on-e0-a", "on-e0-b"}  # its replies may still come
    assert set(hub.monitor.watched) == {b"e0", b"e1"}  # dead unless their heartbeats come back
    assert hub.registry.add(b"e2").id == 2 and hub.registry.add(b"new").id == 3
    assert hub.records.reply("done") == [b"frames"]


def test_ready_again_fails_lost_replies_and_aborts_what_was_answered():
    hub = FakeHub()
    hub.returns.restore(_restored())
    hub.mux.errors.clear()
    e0 = hub.registry.by_uuid(b"e0")
    del e0.pending["on-e0-b"]  # its reply was resent before the ready notification
    hub.records.finished("on-e0-b", "ok", 3.0)
    hub.returns.ready(e0, {"uuid": "e0", "queued": ["done", "never-seen"]})
    # on-e0-a: neither held nor answered: its reply was lost with the old controller
    assert [(m, e) for _, _, m, e, _ in hub.mux.errors] == [("on-e0-a", CONTROLLER_RESTARTED)]
    # "done" was answered before the kill: not run again; one we have no record of runs
    assert hub.sent == [(b"e0", M.ABORT_REQUEST, {"msg_ids": ["done"]})]
    assert b"e0" not in hub.returns.restored


def test_a_first_registration_is_not_reconciled():
    hub = FakeHub()
    rec = hub.registry.add(b"x")
    hub.returns.ready(rec, {"uuid": "x"})
    assert hub.sent == [] and hub.mux.errors == []


def test_an_engine_we_unregistered_is_asked_back_once_per_period():
    hub = FakeHub()
    rec = hub.registry.add(b"p")
    hub.registry.remove(rec)  # unregistered (a partition)
    hub.returns.pong_from_unknown(b"p", now=10.0)
    hub.returns.pong_from_unknown(b"p", now=10.1)  # within the period: not again
    hub.returns.pong_from_unknown(b"p", now=10.3)
    hub.returns.pong_from_unknown(b"stranger", now=10.3)  # never registered here: ignored
    assert [(e, t) for e, t, _ in hub.sent] == [(b"p", M.REREGISTRATION_NOTIFICATION)] * 2
