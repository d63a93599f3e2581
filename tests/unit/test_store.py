"""The persistent task store (controller/store.py): file modes, schema version, round trips."""

from __future__ import annotations

import os
import sqlite3
import threading
import stat

import pytest

from controller import store as S
from controller.records import TaskRecords
from controller.store import StoreError, TaskStore, pack_frames, store_path, unpack_frames


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def db(tmp_path):
    return store_path(tmp_path / "profile", "c1")


def test_store_path_is_in_the_security_directory(tmp_path):
    assert store_path(tmp_path, "") == tmp_path / "security" / "ipcluster-tasks.db"
    assert store_path(tmp_path, "x") == tmp_path / "security" / "ipcluster-x-tasks.db"


def test_frames_round_trip_without_decoding():
    frames = [b"<IDS|MSG>", b"sig", b'{"h": 1}', b"", memoryview(b"buffer"), bytearray(b"\x00" * 3)]
    assert unpack_frames(pack_frames(frames)) == [bytes(f) for f in frames]
    assert unpack_frames(pack_frames([])) == []


@pytest.mark.parametrize("blob", [b"", b"\x01\x00", pack_frames([b"abc"])[:-1], pack_frames([b"abc"]) + b"x"])
def test_malformed_blob_is_a_store_error(blob):
    with pytest.raises(StoreError):
        unpack_frames(blob)


def test_file_is_0600_in_a_0700_directory_from_creation(db, monkeypatch):
    os.umask(0o022)  # a permissive umask must not matter
    modes_at_open = []
    real_connect = sqlite3.connect

    def spy(path, *a, **kw):  # the file exists, already private, before SQLite touches it
        modes_at_open.append(_mode(path))
        return real_connect(path, *a, **kw)

    monkeypatch.setattr(S.sqlite3, "connect", spy)
    st = TaskStore(db)
    rec = TaskRecords()
    rec.store = st
    st.attach(rec.reply)
    rec.submitted("m1", "client", "apply_request", 1.0)
    st.flush()
    assert modes_at_open == [0o600]
    assert _mode(db.parent) == 0o700
    for p in db.parent.iterdir():  # the database and its -wal / -shm files
        assert _mode(p) == 0o600, p
    assert {p.name for p in db.parent.iterdir()} >= {db.name, db.name + "-wal"}
    st.close()


def test_wal_mode_and_schema_version(db):
    TaskStore(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == S.SCHEMA_VERSION
    conn.close()


def test_another_schema_version_is_refused(db):
    TaskStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={S.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="schema version"):
        TaskStore(db)


def test_not_a_database_is_refused(db):
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a SQLite file at all" * 100)
    with pytest.raises(StoreError, match="cannot use"):
        TaskStore(db)


def _records_with_store(db, **kw) -> tuple[TaskRecords, TaskStore]:
    st = TaskStore(db)
    rec = TaskRecords(**kw)
    st.attach(rec.reply)
    rec.store = st
    return rec, st


def _reply(i: int) -> list[bytes]:
    return [b"<IDS|MSG>", b"sig", b'{"msg_type": "apply_reply"}', b"{}", b"{}", b'{"status": "ok"}', b"R%d" % i]


def test_records_replies_and_engines_round_trip(db):
    rec, st = _records_with_store(db)
    for i in range(5):
        rec.submitted(f"m{i}", "c", "apply_request", float(i), request_bytes=10)
    rec.assigned("m0", 0, "u0")
    rec.finished("m0", "ok", 10.0, engine_id=0, engine_uuid="u0", reply=_reply(0), buffers=[b"R0"])
    rec.finished("m1", "error", 11.0, ename="ValueError", engine_id=1, reply=_reply(1), buffers=[b"R1"])
    st.engine(0, "u0", "host", 123)
    st.engine(1, "u1", "host", 124, registered=False)
    assert st.flush() == 7  # 5 records (each written once, final state) + 2 engines
    assert st.flush() == 0
    st.close()

    loaded = TaskStore(db).load()
    assert [r.msg_id for r in loaded.records] == [f"m{i}" for i in range(5)]
    r0 = loaded.records[0]
    assert (r0.status, r0.engine_id, r0.engine_uuid, r0.completed, r0.result_bytes) == ("ok", 0, "u0", 10.0, 2)
    assert loaded.records[1].ename == "ValueError"
    assert loaded.records[2].completed is None and loaded.records[2].status == "pending"
    assert loaded.replies["m0"] == _reply(0) and set(loaded.replies) == {"m0", "m1"}
    assert loaded.engines[0].uuid == "u0" and loaded.engines[0].registered
    assert not loaded.engines[1].registered and loaded.next_engine_id == 2

    back = TaskRecords()
    back.restore(loaded.records, loaded.replies)
    assert back.history() == [f"m{i}" for i in range(5)]
    assert back.reply("m0") == _reply(0)
    assert [r.msg_id for r in back.pending()] == ["m2", "m3", "m4"]


def test_culled_records_are_deleted_from_the_file(db):
    rec, st = _records_with_store(db, max_records=3)
    for i in range(5):
        rec.submitted(f"m{i}", "c", "apply_request", float(i))
        rec.finished(f"m{i}", "ok", float(i), reply=_reply(i), buffers=[b"R"])
        st.flush()
    st.close()
    assert [r.msg_id for r in TaskStore(db).load().records] == ["m2", "m3", "m4"]


def test_restore_keeps_the_byte_budget(db):
    rec, st = _records_with_store(db)
    for i in range(4):
        rec.submitted(f"m{i}", "c", "apply_request", float(i))
        rec.finished(f"m{i}", "ok", float(i), reply=_reply(i), buffers=[b"0123456789"])
    st.close()
    loaded = TaskStore(db).load()
    small = TaskRecords(max_result_bytes=25)  # room for two 10-byte results: the newest stay
    small.restore(loaded.records, loaded.replies)
    assert [m for m in small.history() if small.reply(m) is not None] == ["m2", "m3"]
    assert small.result_bytes == 20


def test_a_busy_task_path_flushes_when_the_timer_is_late(db, monkeypatch):
    rec, st = _records_with_store(db)
    now = [1000.0]
    monkeypatch.setattr(S.time, "monotonic", lambda: now[0])
    st._flushed_at = now[0]
    for i in range(S.CHECK_EVERY):
        rec.submitted(f"a{i}", "c", "apply_request", 0.0)
    assert st.writes == 0  # on time: left to the timer
    now[0] += 2 * S.FLUSH_INTERVAL
    for i in range(S.CHECK_EVERY):
        rec.submitted(f"b{i}", "c", "apply_request", 0.0)
    assert st.pending_writes == 0  # handed to the writer thread
    assert st.wait_written(10)
    assert st.writes == 2 * S.CHECK_EVERY
    st.close()


def test_clear_starts_afresh(db):
    rec, st = _records_with_store(db)
    rec.submitted("m", "c", "apply_request", 0.0)
    st.engine(0, "u")
    st.flush()
    st.clear()
    loaded = st.load()
    assert loaded.records == [] and loaded.engines == {}
    st.close()


def test_second_reply_is_not_delivered():
    from controller.records import reply_seen

    rec = TaskRecords()
    rec.submitted("m", "c", "apply_request", 0.0)
    frames = _reply(0)
    assert reply_seen(rec, "m", frames[4], frames[5], frames, 0, b"u", 1.0)
    assert not reply_seen(rec, "m", frames[4], frames[5], frames, 0, b"u", 2.0)
    assert reply_seen(rec, "unknown", frames[4], frames[5], frames, 0, b"u", 2.0)  # not ours to judge


def test_changes_made_while_a_write_runs_go_with_the_next_one(db):
    rec, st = _records_with_store(db)
    gate = threading.Event()
    st._writer.on_written = lambda rows: gate.wait(10)  # the first write stays in flight
    rec.submitted("m0", "c", "apply_request", 0.0)
    assert st.flush_soon() == 1
    rec.finished("m0", "ok", 1.0, reply=_reply(0), buffers=[b"R0"])
    rec.submitted("m1", "c", "apply_request", 0.0)
    assert st.flush_soon() == 0 and st.pending_writes == 2  # kept dirty, not queued
    gate.set()
    assert st.wait_written(10)
    st._writer.on_written = st._written
    assert st.flush() == 2  # m0's final state and m1, in one write
    st.close()
    loaded = TaskStore(db).load()
    assert [(r.msg_id, r.status) for r in loaded.records] == [("m0", "ok"), ("m1", "pending")]
    assert loaded.replies["m0"] == _reply(0)


def test_a_failed_write_is_reported_and_the_writer_goes_on(db):
    rec, st = _records_with_store(db)
    rec.submitted("m0", "c", "apply_request", 0.0)
    st.flush()
    st.db.execute("DROP TABLE tasks")  # every row write fails now
    rec.submitted("m1", "c", "apply_request", 0.0)
    st.flush_soon()
    assert st.wait_written(10)
    err = st.take_error()
    assert isinstance(err, sqlite3.OperationalError) and "tasks" in str(err)
    assert st.take_error() is None  # reported once
    rec.submitted("m2", "c", "apply_request", 0.0)
    with pytest.raises(sqlite3.OperationalError):
        st.flush()  # a waiting flush raises it itself
    st.db.executescript(S._SCHEMA)
    rec.submitted("m3", "c", "apply_request", 0.0)
    assert st.flush() == 1
    st.close()
    assert [r.msg_id for r in TaskStore(db).load().records] == ["m3"]


def test_close_waits_for_the_write_in_flight(db):
    rec, st = _records_with_store(db)
    for i in range(200):
        rec.submitted(f"m{i}", "c", "apply_request", float(i))
    st.flush_soon()
    st.close()  # no flush needed from the caller: close finishes the write in flight
    assert len(TaskStore(db).load().records) == 200
    assert not any(t.name == "ipcluster-store-writer" and t.is_alive() for t in threading.enumerate()
                   if t is st._writer._thread)
