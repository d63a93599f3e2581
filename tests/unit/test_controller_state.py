"""Controller state without sockets: heartbeat monitor and engine registry."""

import pytest

from controller.heartbeat import HeartMonitor
from controller.registry import EngineRegistry


def test_heart_monitor_expires_only_silent_engines():
    m = HeartMonitor(period=1.0, misses=3)
    m.add(b"a", now=0.0)
    m.add(b"b", now=0.0)
    m.beat(b"a", now=2.5)
    assert m.expired(now=2.9) == []
    assert m.expired(now=3.1) == [b"b"]
    assert list(m.watched) == [b"a"]
    assert m.expired(now=5.6) == [b"a"]
    assert m.expired(now=100) == []


def test_heart_monitor_ignores_unknown_and_discarded():
    m = HeartMonitor(period=1.0, misses=1)
    m.beat(b"stranger", now=0.0)
    assert list(m.watched) == []
    m.add(b"a", now=0.0)
    m.discard(b"a")
    assert m.expired(now=10) == []


@pytest.mark.parametrize("period,misses", [(0, 3), (-1, 3), (1, 0)])
def test_heart_monitor_rejects_bad_settings(period, misses):
    with pytest.raises(ValueError):
        HeartMonitor(period, misses)


def test_registry_ids_are_never_reused_and_lookup_works():
    r = EngineRegistry()
    a = r.add(b"ua", "h", 1)
    b = r.add(b"ub", "h", 2)
    assert (a.id, b.id) == (0, 1)
    assert r.add(b"ua") is a  # re-registration of the same uuid keeps the id
    r.remove(a)
    c = r.add(b"uc")
    assert c.id == 2
    assert r.by_uuid(b"ua") is None and r.by_id(1) is b and len(r) == 2


def test_registry_queue_status_counts_pending_and_completed():
    r = EngineRegistry()
    e = r.add(b"u")
    e.ready = True
    r.submitted(e, b"client", {"msg_id": "m1", "msg_type": "apply_request"})
    r.submitted(e, b"client", {"msg_id": "m2", "msg_type": "apply_request"})
    r.finished(e, "m1")
    r.finished(e, "unknown")  # a reply we never saw the request of does not count
    assert r.queue_status() == {"0": {"queue": 1, "completed": 1}}
    assert r.queue_status(verbose=True) == {"0": {"queue": ["m2"], "completed": 1}}
    assert r.queue_status(targets=[5]) == {}
    not_ready = r.add(b"v")
    assert "1" not in r.queue_status() and not_ready.id == 1
