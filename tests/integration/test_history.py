"""The controller's task records: hub_history, db_query, result_status, get_result across clients."""

from __future__ import annotations

import pytest

import ipcluster
from ipcluster import errors


def _other_client(shared_cluster) -> ipcluster.Client:
    client = ipcluster.Client(url_file=shared_cluster.connection_file)
    client.wait_for_engines(2, timeout=30)
    return client


def test_another_clients_load_balanced_result(rc, shared_cluster):
    lview = rc.load_balanced_view()
    ar = lview.apply_async(lambda x: {"value": x * 2, "data": b"x" * 100_000}, 21)
    failing = lview.apply_async(lambda: 1 / 0)
    assert ar.get(timeout=10)["value"] == 42
    with pytest.raises(ZeroDivisionError):
        failing.get(timeout=10)
    other = _other_client(shared_cluster)
    try:
        assert other.result_status([ar.msg_ids[0], "nope"]) == {
            "completed": [ar.msg_ids[0]], "pending": [], "unknown": ["nope"]}
        got = other.get_result(ar.msg_ids[0], block=True)
        assert got.get(timeout=10) == {"value": 42, "data": b"x" * 100_000}
        assert got.engine_id == ar.engine_id
        both = other.get_result([failing.msg_ids[0], ar.msg_ids[0]])
        with pytest.raises(errors.CompositeError):
            both.get(timeout=10)
        with pytest.raises(ZeroDivisionError):
            other.get_result(failing.msg_ids[0]).get(timeout=10)
    finally:
        other.close()


def test_direct_false_requests_are_recorded(shared_cluster):
    with ipcluster.Client(url_file=shared_cluster.connection_file, direct=False) as first:
        first.wait_for_engines(2, timeout=30)
        ar = first[0].apply_async(lambda: "via the controller")
        assert ar.get(timeout=10) == "via the controller"
        with _other_client(shared_cluster) as other:
            assert other.get_result(ar.msg_ids[0]).get(timeout=10) == "via the controller"
            [row] = other.db_query({"msg_id": ar.msg_ids[0]})
            assert row["engine_id"] == 0 and row["status"] == "ok" and row["client"] == first.session.session_id


def test_own_results_come_from_the_client(rc):
    ar = rc.load_balanced_view().apply_async(lambda: 5)
    assert rc.get_result(ar.msg_ids[0]).get(timeout=10) == 5
    assert rc.result_status(ar) == {"completed": [ar.msg_ids[0]], "pending": [], "unknown": []}


def test_db_query_on_completion_times(rc):
    lview = rc.load_balanced_view()
    first = [lview.apply_async(lambda i: i, i) for i in range(3)]
    for ar in first:
        ar.get(timeout=10)
    ids_first = [ar.msg_ids[0] for ar in first]
    cut = max(r["completed"] for r in rc.db_query({"msg_id": {"$in": ids_first}}))
    # the second batch is sent after the first one's replies arrived: it completes later
    second = [lview.apply_async(lambda i: i, i) for i in range(3)]
    for ar in second:
        ar.get(timeout=10)
    ids_second = [ar.msg_ids[0] for ar in second]
    mine = {"$in": ids_first + ids_second}
    after = [r["msg_id"] for r in rc.db_query({"msg_id": mine, "completed": {"$gt": cut}})]
    assert sorted(after) == sorted(ids_second)
    before = [r["msg_id"] for r in rc.db_query({"msg_id": mine, "completed": {"$lte": cut}})]
    assert sorted(before) == sorted(ids_first)
    assert rc.db_query({"msg_id": mine, "completed": {"$lt": cut}, "status": {"$ne": "ok"}}) == []


def test_db_query_keys_and_errors(rc):
    ar = rc.load_balanced_view().apply_async(lambda: None)
    ar.get(timeout=10)
    [row] = rc.db_query({"msg_id": ar.msg_ids[0]}, keys=["engine_id", "completed"])
    assert set(row) == {"msg_id", "engine_id", "completed"}
    assert row["engine_id"] == ar.engine_id and isinstance(row["completed"], float)
    [full] = rc.db_query({"msg_id": ar.msg_ids[0]})
    assert full["msg_type"] == "apply_request" and full["status"] == "ok" and full["submitted"] <= full["completed"]
    with pytest.raises(ValueError, match="unknown query operator"):
        rc.db_query({"completed": {"$after": 0}})
    with pytest.raises(ValueError, match="unknown record field"):
        rc.db_query({}, keys=["nope"])


def test_unknown_msg_id_is_a_clear_error(rc):
    with pytest.raises(errors.IPClusterError, match="unknown msg_id"):
        rc.get_result("0" * 32)


def test_hub_history_order(rc):
    lview = rc.load_balanced_view()
    ars = [lview.apply_async(lambda i: i, i) for i in range(5)]
    for ar in ars:
        ar.get(timeout=10)
    ids = [ar.msg_ids[0] for ar in ars]
    history = rc.hub_history()
    assert [m for m in history if m in set(ids)] == ids


def test_get_result_of_another_clients_running_task_waits_for_it(rc, shared_cluster, tmp_path):
    flag = tmp_path / "release"

    def wait_for_file(path):
        import os
        import time
        while not os.path.exists(path):
            time.sleep(0.01)
        return "released"

    ar = rc.load_balanced_view().apply_async(wait_for_file, str(flag))
    with _other_client(shared_cluster) as other:
        assert other.result_status(ar) == {"completed": [], "pending": [ar.msg_ids[0]], "unknown": []}
        got = other.get_result(ar.msg_ids[0])
        assert not got.done()
        flag.touch()
        assert got.get(timeout=10) == "released"
        assert ar.get(timeout=10) == "released"  # the submitter's reply may come after the notification
        assert got.engine_id == ar.engine_id
        assert other.get_result(ar.msg_ids[0], block=True).get(timeout=10) == "released"  # now completed


def test_get_result_waits_end_with_the_controller(shared_cluster):
    """A client whose controller goes away does not wait for a pending result forever."""
    from ipcluster.client import hubresults

    with _other_client(shared_cluster) as other:
        fut = other._remote_waits.add("m")
        other._lose_controller("test: the controller shut down")
        with pytest.raises(errors.ControllerError):
            fut.result(timeout=5)
        assert other._remote_waits.take("m") == []
        assert isinstance(other._remote_waits, hubresults.RemoteWaits)
