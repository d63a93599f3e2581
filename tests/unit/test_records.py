"""The controller's task records: bounds and the query operators."""

from __future__ import annotations

import pytest

from controller.records import TaskRecords, query


def _store(n: int = 5, **kw) -> TaskRecords:
    """n requests submitted at t=0..n-1 and completed at t=10+i (status ok, engine i % 2)."""
    recs = TaskRecords(**kw)
    for i in range(n):
        recs.submitted(f"m{i}", "client", "apply_request", float(i), request_bytes=i)
        recs.finished(f"m{i}", "ok", 10.0 + i, engine_id=i % 2, engine_uuid=f"e{i % 2}")
    return recs


def _ids(rows):
    return [r["msg_id"] for r in rows]


def test_gt_means_greater_than():
    recs = _store()
    assert _ids(recs.query({"completed": {"$gt": 12.0}})) == ["m3", "m4"]


def test_gte_lt_lte():
    recs = _store()
    assert _ids(recs.query({"completed": {"$gte": 12.0}})) == ["m2", "m3", "m4"]
    assert _ids(recs.query({"completed": {"$lt": 12.0}})) == ["m0", "m1"]
    assert _ids(recs.query({"completed": {"$lte": 12.0}})) == ["m0", "m1", "m2"]
    assert _ids(recs.query({"completed": {"$gt": 10.0, "$lt": 13.0}})) == ["m1", "m2"]


def test_eq_ne_and_plain_equality():
    recs = _store()
    assert _ids(recs.query({"engine_id": {"$eq": 1}})) == ["m1", "m3"]
    assert _ids(recs.query({"engine_id": {"$ne": 1}})) == ["m0", "m2", "m4"]
    assert _ids(recs.query({"engine_id": 0, "status": "ok"})) == ["m0", "m2", "m4"]
    assert recs.query({"status": "error"}) == []


def test_in_nin():
    recs = _store()
    assert _ids(recs.query({"msg_id": {"$in": ["m1", "m4", "zz"]}})) == ["m1", "m4"]
    assert _ids(recs.query({"msg_id": {"$nin": ["m1", "m4"]}})) == ["m0", "m2", "m3"]
    with pytest.raises(ValueError, match="need a list"):
        recs.query({"msg_id": {"$in": "m1"}})


def test_comparisons_skip_missing_values():
    recs = _store(2)
    recs.submitted("p", "client", "apply_request", 5.0)  # pending: completed is None
    assert "p" not in _ids(recs.query({"completed": {"$lt": 100.0}}))
    assert "p" not in _ids(recs.query({"completed": {"$gt": 0.0}}))
    assert _ids(recs.query({"completed": None})) == ["p"]
    assert _ids(recs.query({"status": "pending"})) == ["p"]


def test_unknown_operator_and_field_are_errors():
    recs = _store(1)
    with pytest.raises(ValueError, match="unknown query operator"):
        recs.query({"completed": {"$after": 1}})
    with pytest.raises(ValueError, match="unknown query operator"):
        query([], {"completed": {"$regex": "x"}})
    with pytest.raises(ValueError, match="unknown record field"):
        recs.query({}, keys=["nope"])


def test_keys_select_fields_and_keep_msg_id():
    recs = _store(2)
    rows = recs.query({}, keys=["completed", "engine_id"])
    assert rows == [{"completed": 10.0, "engine_id": 0, "msg_id": "m0"},
                    {"completed": 11.0, "engine_id": 1, "msg_id": "m1"}]


def test_history_in_submission_order_and_duplicates_ignored():
    recs = TaskRecords()
    for m in ("b", "a", "c"):
        recs.submitted(m, "client", "apply_request", 0.0)
    recs.submitted("a", "other", "execute_request", 9.0)
    assert recs.history() == ["b", "a", "c"]
    assert recs.get("a").client == "client"


def test_record_fields():
    recs = TaskRecords()
    recs.submitted("t", "sess", "apply_request", 1.0, request_bytes=7)
    recs.assigned("t", 3, "uuid3")
    recs.finished("t", "error", 4.0, ename="ZeroDivisionError", received=2.0, started=3.0,
                  reply=[b"<IDS|MSG>"], buffers=[b"12345"])
    r = recs.get("t").to_dict()
    assert r == {"msg_id": "t", "client": "sess", "msg_type": "apply_request", "engine_id": 3,
                 "engine_uuid": "uuid3", "submitted": 1.0, "received": 2.0, "started": 3.0,
                 "completed": 4.0, "status": "error", "ename": "ZeroDivisionError",
                 "request_bytes": 7, "result_bytes": 5}
    recs.finished("t", "ok", 5.0)  # a second reply changes nothing
    assert recs.get("t").status == "error"


def test_record_count_bound_culls_oldest_completed_first():
    recs = TaskRecords(max_records=3)
    recs.submitted("pending", "c", "apply_request", 0.0)
    for m in ("a", "b"):
        recs.submitted(m, "c", "apply_request", 1.0)
    recs.finished("b", "ok", 2.0, reply=[b"x"])
    recs.finished("a", "ok", 3.0)
    recs.submitted("c", "c", "apply_request", 4.0)  # over the cap: "b" completed first, goes
    assert recs.history() == ["pending", "a", "c"]
    assert recs.reply("b") is None
    recs.submitted("d", "c", "apply_request", 5.0)
    assert recs.history() == ["pending", "c", "d"]
    recs.submitted("e", "c", "apply_request", 6.0)  # nothing completed: the oldest pending goes
    assert recs.history() == ["c", "d", "e"]
    assert len(recs) == 3


def test_result_byte_budget_drops_oldest_replies():
    recs = TaskRecords(max_result_bytes=10)
    for i, m in enumerate("abc"):
        recs.submitted(m, "c", "apply_request", float(i))
    frames = {m: [b"<IDS|MSG>", b"sig", bytes(4)] for m in "abc"}
    for m in "abc":
        recs.finished(m, "ok", 1.0, reply=frames[m], buffers=frames[m][2:])
    assert recs.reply("a") is None  # 12 bytes > 10: the oldest reply is dropped
    assert recs.reply("b") == frames["b"] and recs.reply("c") == frames["c"]  # kept (small frames as copies)
    assert recs.result_bytes == 8
    assert recs.get("a").status == "ok"  # the record stays; only its payload is gone
    recs.submitted("big", "c", "apply_request", 9.0)
    recs.finished("big", "ok", 9.0, reply=[b"<IDS|MSG>", bytes(11)], buffers=[bytes(11)])
    assert recs.reply("big") is None and recs.reply("c") is not None  # too big for the budget
    assert recs.get("big").result_bytes == 11


def test_memoryview_and_frame_sizes():
    zmq = pytest.importorskip("zmq")
    recs = TaskRecords()
    recs.submitted("m", "c", "apply_request", 0.0)
    recs.finished("m", "ok", 1.0, buffers=[memoryview(bytes(3)), zmq.Frame(bytes(5))])
    assert recs.get("m").result_bytes == 8
