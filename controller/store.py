"""The persistent task store: what a restarted controller needs, in one SQLite file.

A controller started with ``--persist`` keeps its task records (:mod:`controller.records`), the
reply frames of completed requests, and its engines' ids in
``<profile>/security/ipcluster[-<cluster_id>]-tasks.db``.  After a SIGKILL the controller started
with ``--restore`` reads it back: every result completed before the kill is served again by
``result_request`` (``Client.get_result``), engines re-register under their old ids, and requests
that were in flight are finished or failed (see ``docs/reliability.md``).

Write path: a request or reply does not write by itself.  Record events mark a record *dirty*
(one dict store); a timer in the controller's loop calls :meth:`TaskStore.flush_soon` every
:data:`FLUSH_INTERVAL` seconds, which takes a row of every dirty record (its final state only: a
task submitted and finished within one interval is one row write) and hands them to the writer
thread (:mod:`controller.storewriter`), which writes them and commits once while the loop goes on.
While that write runs, later changes stay dirty for the next one.  While the loop drains a long
burst of messages its timers wait, so every :data:`CHECK_EVERY` changes the task path looks at the
clock and hands over itself when a flush is overdue.  A kill therefore loses about the last
interval's changes (and the write in flight).

The file is SQLite in WAL mode (readers never block the writer; a commit is one append),
``synchronous=NORMAL`` (a commit survives a killed process; only a power loss can drop the last
ones), and its schema version is ``PRAGMA user_version``.  It is created 0600 before SQLite opens
it, in the 0700 security directory; SQLite gives its ``-wal`` / ``-shm`` files the database's mode.

Reply frames (``[DELIM, signature, header, parent, metadata, content, *buffers]``, still signed by
the engine) are stored as one blob: ``<count:u32><len:u64 * count><frame bytes...>``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from controller import frameblob
from controller.frameblob import pack_frames  # (also this module's: the store's blob format)
from controller.records import TaskRecord
from controller.storewriter import StoreWriter

#: Schema version (``PRAGMA user_version``); a file of another version is refused, not guessed at.
SCHEMA_VERSION = 1
#: Seconds between two commits at most (the controller's flush timer).
FLUSH_INTERVAL = 0.05
#: Changes between two looks at the clock on the task path: a controller draining a long burst of
#: messages does not run its timers, so the task path flushes when the timer is overdue.
CHECK_EVERY = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL,
    client TEXT NOT NULL,
    msg_type TEXT NOT NULL,
    engine_id INTEGER,
    engine_uuid TEXT,
    submitted REAL,
    received REAL,
    started REAL,
    completed REAL,
    status TEXT NOT NULL,
    ename TEXT,
    request_bytes INTEGER NOT NULL,
    result_bytes INTEGER NOT NULL,
    reply BLOB
);
CREATE TABLE IF NOT EXISTS engines (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    hostname TEXT NOT NULL,
    pid INTEGER,
    registered INTEGER NOT NULL
);
"""

_TASK_COLUMNS = ("seq", "msg_id", "client", "msg_type", "engine_id", "engine_uuid", "submitted", "received",
                 "started", "completed", "status", "ename", "request_bytes", "result_bytes", "reply")
_UPSERT = (f"INSERT OR REPLACE INTO tasks ({', '.join(_TASK_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_TASK_COLUMNS))})")


class StoreError(Exception):
    """The store file cannot be used (another schema version, not a database, unreadable)."""


def store_path(profile_path: str | os.PathLike[str], cluster_id: str = "") -> Path:
    """Where the controller of *cluster_id* keeps its store (beside its connection file)."""
    suffix = f"-{cluster_id}" if cluster_id else ""
    return Path(profile_path) / "security" / f"ipcluster{suffix}-tasks.db"


def unpack_frames(blob: bytes) -> list[bytes]:
    """The frames :func:`pack_frames` packed.  Raises :class:`StoreError` for a malformed blob."""
    try:
        return frameblob.unpack_frames(blob)
    except frameblob.MalformedBlob as e:
        raise StoreError(str(e)) from None


@dataclass
class StoredEngine:
    id: int
    uuid: str
    hostname: str = ""
    pid: int | None = None
    registered: bool = True  # registered when the store was last written


@dataclass
class Restored:
    """What a store held: records in submission order, kept replies, engines by id."""

    records: list[TaskRecord] = field(default_factory=list)
    replies: dict[str, list[bytes]] = field(default_factory=dict)
    engines: dict[int, StoredEngine] = field(default_factory=dict)

    @property
    def next_engine_id(self) -> int:
        return max(self.engines, default=-1) + 1


class TaskStore:
    """The SQLite file; every method runs in the controller's loop thread (the writes themselves
    in the writer thread: see :meth:`flush_soon`).

    Parameters
    ----------
    path:
        The database file; created (0600) if missing, and its directory (0700).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._dirty: dict[str, TaskRecord] = {}  # msg_id -> record, final state written at flush
        self._deleted: set[int] = set()  # seq (the row id) of culled records
        self._engines: dict[int, StoredEngine] = {}  # changed since the last flush
        # TaskRecords.kept_reply (a kept reply: its frames, or already packed), set by attach()
        self._replies: Any = None
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self.writes = 0  # rows written so far (tests and logs)
        self._changes = 0
        self._flushed_at = time.monotonic()
        self.db = self._open()
        self._writer = StoreWriter(self.db, on_written=self._written)

    # --- opening -----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        # 0600 from the first byte: create the file ourselves, before SQLite opens it
        old = os.umask(0o077)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)  # the directory of key and task files: ours alone
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
            except FileExistsError:
                os.chmod(self.path, 0o600)
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
                db.execute("PRAGMA synchronous=NORMAL")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    db.close()
                    raise StoreError(f"{self.path} has schema version {version}; this controller reads "
                                     f"version {SCHEMA_VERSION}: move the file away to start afresh")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cannot use {self.path} as the task store: {e}") from None
        finally:
            os.umask(old)
        return db

    def close(self) -> None:
        """Write what is pending and close the file."""
        try:
            self.flush()
        finally:
            self._writer.stop()
            self.db.close()

    def remove(self) -> None:
        """Close and delete the file (a controller that stops cleanly: nothing to restore after)."""
        self._writer.stop()
        self.db.close()
        remove_files(self.path)

    def clear(self) -> None:
        """Forget everything stored."""
        self._writer.wait()
        self.db.execute("DELETE FROM tasks")
        self.db.execute("DELETE FROM engines")

    # --- events (cheap: called on the task path) -----------------------------------------------

    def attach(self, replies: Any) -> None:
        """*replies(msg_id)* gives the kept reply of a completed record: its frames, or the blob
        :func:`pack_frames` makes of them (``TaskRecords.kept_reply``; ``TaskRecords.reply`` will do)."""
        self._replies = replies

    def changed(self, rec: TaskRecord) -> None:
        """*rec* was created or changed: write it at the next flush."""
        msg_id = rec.msg_id
        dirty = self._dirty
        if dirty.get(msg_id) is rec:
            return  # written at the next flush anyway, as it is then
        if msg_id not in self._seq:
            self._seq[msg_id] = self._next_seq
            self._next_seq += 1
        dirty[msg_id] = rec
        self._changes += 1
        if self._changes >= CHECK_EVERY:
            self._changes = 0
            if time.monotonic() - self._flushed_at >= FLUSH_INTERVAL:
                self.flush_soon()  # the loop is too busy for the timer (see the module docstring)

    def dropped(self, msg_id: str) -> None:
        """The record of *msg_id* was culled: delete it at the next flush."""
        self._dirty.pop(msg_id, None)
        seq = self._seq.pop(msg_id, None)
        if seq is not None:
            self._deleted.add(seq)

    def engine(self, engine_id: int, uuid: str, hostname: str = "", pid: int | None = None,
               registered: bool = True) -> None:
        """An engine registered (or, ``registered=False``, left): its id stays bound to its uuid."""
        self._engines[engine_id] = StoredEngine(engine_id, uuid, hostname, pid, registered)

    @property
    def pending_writes(self) -> int:
        return len(self._dirty) + len(self._deleted) + len(self._engines)

    # --- flushing ----------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every change since the last flush in one transaction and wait for its commit;
        returns the rows written.  Raises the error of a write that failed since the last look."""
        self._writer.wait()
        n = self.flush_soon()
        self._writer.wait()
        err = self._writer.take_error()
        if err is not None:
            raise err
        return n

    def flush_soon(self) -> int:
        """Hand every change since the last flush to the writer thread as one transaction;
        returns the rows handed over (0, and the changes stay dirty, while a write is in flight)."""
        if self._writer.busy:
            return 0
        self._flushed_at = time.monotonic()
        if not (self._dirty or self._deleted or self._engines):
            return 0
        dirty, self._dirty = self._dirty, {}
        deleted, self._deleted = self._deleted, set()
        engines, self._engines = self._engines, {}
        write: list[tuple[str, list[tuple[Any, ...]]]] = []
        if deleted:
            write.append(("DELETE FROM tasks WHERE seq = ?", [(q,) for q in deleted]))
        if dirty:  # rows are taken here, where the records change: the writer sees a snapshot
            write.append((_UPSERT, [self._row(rec) for rec in dirty.values()]))
        if engines:
            write.append(("INSERT OR REPLACE INTO engines (id, uuid, hostname, pid, registered) "
                          "VALUES (?, ?, ?, ?, ?)",
                          [(e.id, e.uuid, e.hostname, e.pid, int(e.registered)) for e in engines.values()]))
        n = len(dirty) + len(deleted) + len(engines)
        self._writer.submit(write, n)
        return n

    def wait_written(self, timeout: float | None = None) -> bool:
        """Until the write handed over last is committed (or failed); ``False`` on timeout."""
        return self._writer.wait(timeout)

    def take_error(self) -> BaseException | None:
        """The error of the last write that failed in the writer thread (once), or None."""
        return self._writer.take_error()

    def _written(self, rows: int) -> None:
        self.writes += rows  # (the writer thread; only it adds)

    def _row(self, rec: TaskRecord) -> tuple[Any, ...]:
        reply = None
        if rec.completed is not None and self._replies is not None:
            kept = self._replies(rec.msg_id)
            if kept is not None:
                reply = kept if kept.__class__ is bytes else pack_frames(kept)
        return (self._seq[rec.msg_id], rec.msg_id, rec.client, rec.msg_type, rec.engine_id, rec.engine_uuid,
                rec.submitted, rec.received, rec.started, rec.completed, rec.status, rec.ename, rec.request_bytes,
                rec.result_bytes, reply)

    # --- reading back ------------------------------------------------------------------------

    def load(self) -> Restored:
        """Everything stored, for a controller restarting with ``--restore``."""
        self._writer.wait()
        out = Restored()
        cur = self.db.execute(f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks ORDER BY seq")
        for row in cur:
            (seq, msg_id, client, msg_type, engine_id, engine_uuid, submitted, received, started, completed,
             status, ename, request_bytes, result_bytes, reply) = row
            out.records.append(TaskRecord(msg_id, client, msg_type, engine_id, engine_uuid, submitted, received,
                                          started, completed, status, ename, request_bytes, result_bytes))
            self._seq[msg_id] = seq
            self._next_seq = max(self._next_seq, seq + 1)
            if reply is not None:
                try:
                    out.replies[msg_id] = unpack_frames(reply)
                except StoreError:
                    pass  # the record stays; its result counts as no longer kept
        for eid, uuid, hostname, pid, registered in self.db.execute(
                "SELECT id, uuid, hostname, pid, registered FROM engines"):
            out.engines[eid] = StoredEngine(eid, uuid, hostname, pid, bool(registered))
        return out


# --- the controller's side: opening, restoring, the flush timer ------------------------------------


def remove_files(path: Path) -> None:
    """Delete a store file and its WAL companions."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)


def restore_point(connection_file: Path, curve: bool) -> Any:
    """The connection file a killed controller left behind (its key, ports, ipc directory), so
    that the restarted controller is reachable where engines and clients already connect.

    Raises :class:`StoreError` when there is nothing to restore from.
    """
    from ipcluster.errors import IPClusterError
    from ipcluster.protocol.connection import read_connection_file

    if curve:
        raise StoreError("--restore does not support enable_curve: the controller's CurveZMQ server key is "
                         "not kept, so engines and clients could not reconnect")
    if not connection_file.exists():
        raise StoreError(f"nothing to restore: no connection file {connection_file} (the controller "
                         "removes it when it stops cleanly; start without --restore)")
    try:
        return read_connection_file(connection_file)
    except IPClusterError as e:
        raise StoreError(f"cannot restore from {connection_file}: {e}") from None


def open_store(hub: Any, profile_path: str, cluster_id: str, restore: bool, log: Any) -> TaskStore:
    """Open the store of this cluster and connect it to the hub's records; with *restore*, take
    back what it holds (see :mod:`controller.restart`), else start it empty."""
    path = store_path(profile_path, cluster_id)
    if not restore:  # starting afresh: whatever an earlier controller left (any schema) goes
        remove_files(path)
    store = TaskStore(path)
    records = hub.records
    store.attach(records.kept_reply)
    records.store = store  # before restoring: what the restore fails is stored too
    hub.store = store
    if restore:
        hub.returns.restore(store.load())
        store.flush()
    log.info("task store %s (%s)", store.path, "restored" if restore else "new")
    return store


async def flush_periodically(store: TaskStore, log: Any, interval: float = FLUSH_INTERVAL) -> None:
    """Commit the store's changes every *interval* seconds (a timer in the controller's loop)."""
    import asyncio

    failures = 0
    while True:
        await asyncio.sleep(interval)  # a timer, not synchronisation
        try:
            store.flush_soon()
            err = store.take_error()  # of the write handed over before
            if err is not None:
                raise err
        except sqlite3.Error as e:  # a full disk must not stop the controller; results stay in memory
            failures += 1
            if failures == 1 or failures % 1000 == 0:
                log.error("writing the task store %s failed (%d times): %s", store.path, failures, e)
