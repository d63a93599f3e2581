"""Watches on pending results, and the records' hook that fires them, without sockets."""

from __future__ import annotations

import pytest

from controller.records import TaskRecords
from controller.results import ResultWatches, result_entry

pytestmark = pytest.mark.timeout(10)


def test_finished_and_culled_records_fire_the_watch():
    records = TaskRecords(max_records=2)
    watches = ResultWatches()
    fired = []
    records.watch(watches.by_msg_id, lambda m: fired.append((m, watches.pop(m))))
    records.submitted("a", "c", "apply_request", 0.0)
    records.submitted("b", "c", "apply_request", 0.0)
    watches.add("a", b"client1", {"msg_id": "q1"})
    watches.add("b", b"client2", {"msg_id": "q2"})
    assert result_entry(records, "a", False, [])["status"] == "pending"
    records.finished("a", "ok", 1.0, reply=[b"D", b"s", b"{}", b"{}", b"{}", b"{}", b"buf"], buffers=[b"buf"])
    assert fired == [("a", [(b"client1", {"msg_id": "q1"})])]
    buffers: list = []
    entry = result_entry(records, "a", False, buffers)
    assert entry["status"] == "completed" and entry["kept"] and buffers == [b"buf"]
    records.submitted("c", "c", "apply_request", 0.0)  # the oldest completed record goes first: "a"
    records.submitted("d", "c", "apply_request", 0.0)  # then the pending "b", whose waiter must hear
    assert fired[-1] == ("b", [(b"client2", {"msg_id": "q2"})])
    assert len(watches) == 0


def test_watches_are_capped_oldest_first():
    watches = ResultWatches(max_watches=2)
    assert watches.add("a", b"1", {}) == []
    assert watches.add("a", b"2", {}) == []
    dropped = watches.add("b", b"3", {})
    assert [d[:2] for d in dropped] == [("a", b"1"), ("a", b"2")]
    assert "a" not in watches and "b" in watches and len(watches) == 1
