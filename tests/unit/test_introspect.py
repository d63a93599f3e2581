"""controller_state: the invariant checks find broken bookkeeping, and report nothing when it is sound."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from controller.introspect import sizes, violations
from controller.records import TaskRecords
from controller.registry import EngineRegistry
from controller.scheduling.state import TaskScheduler
from controller.tasks import TaskServer

pytestmark = pytest.mark.timeout(10)

ENGINE = b"e" * 32


class Hub(SimpleNamespace):
    """The parts of controller.hub.Hub the checks read, wired like the real one."""


def make_hub() -> tuple[Hub, list[list]]:
    sent: list[list] = []
    registry = EngineRegistry()
    records = TaskRecords()
    tasks = TaskServer(TaskScheduler(), registry, sent.append, lambda *a, **k: None, logging.getLogger("test"))
    tasks.records = records
    rec = registry.add(ENGINE, "host", 1)
    rec.ready = True
    tasks.engine_added(ENGINE)
    return Hub(registry=registry, records=records, tasks=tasks), sent


def submit(hub: Hub, msg_id: str) -> None:
    header = {"msg_id": msg_id, "msg_type": "apply_request", "session": "c", "date": 1.0}
    hub.records.submitted(msg_id, "c", "apply_request", 1.0)
    hub.tasks.submit(b"client", header, {}, [b"<IDS|MSG>", b"sig", b"{}", b"{}", b"{}", b"{}"])


def test_a_sound_controller_has_no_violations():
    hub, sent = make_hub()
    submit(hub, "t1")
    assert len(sent) == 1  # assigned to the one engine, and pending there
    assert violations(hub) == []
    assert hub.registry.by_uuid(ENGINE).pending.keys() == {"t1"}


def test_a_task_pending_and_completed_is_reported():
    hub, _ = make_hub()
    submit(hub, "t1")
    hub.records.finished("t1", "ok", 2.0)
    found = violations(hub)
    assert any("t1 is pending on engine 0 but completed" in v for v in found)
    assert any("t1 is in the scheduler but completed" in v for v in found)


def test_a_task_on_an_engine_that_left_is_reported():
    hub, _ = make_hub()
    submit(hub, "t1")
    hub.registry.remove(hub.registry.by_uuid(ENGINE))  # gone from the registry, not from the scheduler
    found = violations(hub)
    assert any("scheduler engines differ" in v for v in found)
    assert any("which is not a ready registered engine" in v for v in found)


def test_counts_that_disagree_are_reported():
    hub, _ = make_hub()
    submit(hub, "t1")
    hub.registry.by_uuid(ENGINE).pending.clear()  # the registry forgot what the scheduler assigned
    hub.tasks.tasks.pop("t1")  # and the task server its frames
    found = violations(hub)
    assert any("assigned to engine 0 but not pending there" in v for v in found)
    assert any("scheduler tasks differ from kept task frames" in v for v in found)


def test_sizes_count_what_is_held():
    hub, _ = make_hub()
    hub.clients, hub.watches, hub.drops = {}, {}, SimpleNamespace(counts={})
    hub.mux = SimpleNamespace(coalescer={})
    hub.monitor = SimpleNamespace(watched=[ENGINE])
    from ipcluster.protocol.session import Session

    hub.session = Session(b"k")
    submit(hub, "t1")
    s = sizes(hub)
    assert s["records"] == 1 and s["task_frames"] == 1 and s["scheduler_tasks"] == 1 and s["pending_requests"] == 1
    assert s["engines"] == 1 and s["heartbeat_watched"] == 1 and s["replay_guard_digests"] == 0
