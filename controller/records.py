"""Task records: what the controller saw of each request, in bounded memory.  Pure, no sockets.

One :class:`TaskRecord` per request that passed through the controller on the mux route (direct
requests to named engines and load-balanced tasks).  Requests a client sent straight to an engine
on its host (the direct route) never reach the controller and have no record.

Two bounds keep a long run from growing the controller:

* at most ``max_records`` records; past that the oldest *completed* record is dropped first (by
  completion order), and only if none is completed the oldest pending one;
* the reply frames kept for ``get_result`` add up to at most ``max_result_bytes``; the oldest kept
  reply is dropped first, and a reply bigger than the whole budget is not kept.  Frames are the
  zmq frames the router received: referenced, never copied, never unpickled.

:func:`query` matches records with Mongo-style operators (see :data:`OPERATORS`).
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Container, Iterable, Sequence

from controller.frameblob import pack_frames, unpack_frames
from ipcluster.protocol.session import json_loads

MAX_RECORDS = 100_000
MAX_RESULT_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class TaskRecord:
    """One request, as far as the controller knows it (JSON-safe fields only).

    Times are float Unix times: ``submitted`` from the request's header (the client's clock),
    ``received`` / ``started`` / ``completed`` from the reply's metadata (the engine's clock; for an
    error the controller answered itself, the controller's).
    """

    msg_id: str
    client: str = ""  # the submitting client's session id
    msg_type: str = ""
    engine_id: int | None = None
    engine_uuid: str | None = None
    submitted: float | None = None
    received: float | None = None
    started: float | None = None
    completed: float | None = None
    status: str = "pending"  # pending, then the reply's status: ok, error, aborted ...
    ename: str | None = None
    request_bytes: int = 0  # total size of the request's buffers
    result_bytes: int = 0  # total size of the reply's buffers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = frozenset(f.name for f in fields(TaskRecord))


class TaskRecords:
    """Records by msg_id, in submission order, with the reply frames of recent results."""

    def __init__(self, max_records: int = MAX_RECORDS, max_result_bytes: int = MAX_RESULT_BYTES) -> None:
        self.max_records = max_records
        self.max_result_bytes = max_result_bytes
        self._records: OrderedDict[str, TaskRecord] = OrderedDict()  # submission order
        self._done: OrderedDict[str, None] = OrderedDict()  # completed, in completion order
        self._replies: OrderedDict[str, list[Any] | bytes] = OrderedDict()  # kept replies (see keep), oldest first
        self._reply_bytes: dict[str, int] = {}
        self.result_bytes = 0  # total size of the kept reply frames' buffers
        # msg_ids someone waits for, and whom to tell when one finishes or its record is dropped
        self._watched: Container[str] = ()
        self._on_watched: Callable[[str], None] = lambda msg_id: None
        # the persistent store (controller/store.py), told of every change; None: memory only
        self.store: Any = None

    def watch(self, watched: Container[str], on_watched: Callable[[str], None]) -> None:
        """Call ``on_watched(msg_id)`` once a msg_id in *watched* (a live container) finished or was
        dropped; checked with one ``in`` per event, so an empty container costs nothing."""
        self._watched, self._on_watched = watched, on_watched

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._records

    def get(self, msg_id: str) -> TaskRecord | None:
        return self._records.get(msg_id)

    # --- events -------------------------------------------------------------------------------

    def submitted(self, msg_id: str, client: str, msg_type: str, submitted: float | None,
                  request_bytes: int = 0, engine_id: int | None = None, engine_uuid: str | None = None) -> None:
        """A request arrived (for a named engine, or for the scheduler: no engine yet)."""
        if not msg_id or msg_id in self._records:
            return  # a duplicate msg_id is refused elsewhere; the first record stands
        rec = self._records[msg_id] = TaskRecord(msg_id, client, msg_type, engine_id, engine_uuid, submitted,
                                                 None, None, None, "pending", None, request_bytes)
        if self.store is not None:
            self.store.changed(rec)
        if len(self._records) > self.max_records:
            self._cull()

    def assigned(self, msg_id: str, engine_id: int, engine_uuid: str) -> None:
        """The scheduler sent a task to an engine (again, on a retry)."""
        rec = self._records.get(msg_id)
        if rec is not None and rec.completed is None:
            rec.engine_id, rec.engine_uuid = engine_id, engine_uuid
            if self.store is not None:
                self.store.changed(rec)

    def finished(self, msg_id: str, status: str, completed: float, *, ename: str | None = None,
                 received: float | None = None, started: float | None = None,
                 engine_id: int | None = None, engine_uuid: str | None = None,
                 reply: list[Any] | None = None, buffers: Sequence[Any] = ()) -> None:
        """The reply went to the client.  *reply* is its frames from the delimiter on (kept within
        the byte budget); *buffers* are the ones among them that count as the result's size."""
        rec = self._records.get(msg_id)
        if rec is None or rec.completed is not None:
            return
        self.finish(rec, status, completed, ename, received, started, engine_id, engine_uuid, reply, buffers)

    def finish(self, rec: TaskRecord, status: str, completed: float, ename: str | None, received: float | None,
               started: float | None, engine_id: int | None, engine_uuid: str | None, reply: list[Any] | None,
               buffers: Sequence[Any]) -> None:
        """:meth:`finished` for a record the caller looked up (and found not completed yet)."""
        try:
            self._finish(rec, status, completed, ename, received, started, engine_id, engine_uuid, reply, buffers)
        finally:
            if rec.msg_id in self._watched:
                self._on_watched(rec.msg_id)

    def _finish(self, rec: TaskRecord, status: str, completed: float, ename: str | None, received: float | None,
                started: float | None, engine_id: int | None, engine_uuid: str | None, reply: list[Any] | None,
                buffers: Sequence[Any]) -> None:
        msg_id = rec.msg_id
        rec.status, rec.completed, rec.ename = status, completed, ename
        rec.received, rec.started = received, started
        if engine_id is not None:
            rec.engine_id = engine_id
        if engine_uuid is not None:
            rec.engine_uuid = engine_uuid
        rec.result_bytes = size = total_bytes(buffers)
        self._done[msg_id] = None
        if reply is not None and size <= self.max_result_bytes:
            self._replies[msg_id] = keep(reply)
            self._reply_bytes[msg_id] = size
            self.result_bytes += size
            while self.result_bytes > self.max_result_bytes:
                self._drop_reply(next(iter(self._replies)))
        if self.store is not None:
            self.store.changed(rec)

    def restore(self, records: Sequence[TaskRecord], replies: dict[str, list[Any]]) -> None:
        """Load what a persistent store held (records in submission order), within the bounds."""
        done = sorted((r for r in records if r.completed is not None), key=lambda r: r.completed or 0.0)
        for rec in records:
            self._records[rec.msg_id] = rec
        for rec in done:
            self._done[rec.msg_id] = None
            frames = replies.get(rec.msg_id)
            if frames is not None and rec.result_bytes <= self.max_result_bytes:
                self._replies[rec.msg_id] = frames
                self._reply_bytes[rec.msg_id] = rec.result_bytes
                self.result_bytes += rec.result_bytes
                while self.result_bytes > self.max_result_bytes:
                    self._drop_reply(next(iter(self._replies)))
        self._cull()

    def pending(self) -> list[TaskRecord]:
        """Records of requests not answered yet, in submission order."""
        return [r for r in self._records.values() if r.completed is None]

    # --- lookups ------------------------------------------------------------------------------

    def history(self) -> list[str]:
        """msg_ids of the records, in the order the controller received the requests."""
        return list(self._records)

    def reply(self, msg_id: str) -> list[Any] | None:
        """The kept reply frames (from the delimiter on) of a completed request, if still kept."""
        kept = self._replies.get(msg_id)
        if isinstance(kept, bytes):
            return unpack_frames(kept)
        return kept

    def kept_reply(self, msg_id: str) -> list[Any] | bytes | None:
        """The kept reply as it is kept: its frames, or the blob :func:`keep` packed them into."""
        return self._replies.get(msg_id)

    def query(self, spec: dict[str, Any], keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Records matching *spec* (see :func:`query`), in submission order, as dicts."""
        return query((r.to_dict() for r in self._records.values()), spec, keys)

    # --- bounds -------------------------------------------------------------------------------

    def _drop_reply(self, msg_id: str) -> None:
        if self._replies.pop(msg_id, None) is not None:
            self.result_bytes -= self._reply_bytes.pop(msg_id, 0)

    def _cull(self) -> None:
        while len(self._records) > self.max_records:
            if self._done:
                old, _ = self._done.popitem(last=False)
            else:
                old = next(iter(self._records))
            del self._records[old]
            self._drop_reply(old)
            if self.store is not None:
                self.store.dropped(old)
            if old in self._watched:  # a pending record dropped: its waiters learn it is unknown now
                self._on_watched(old)


#: Kept reply frames shorter than this are copied (see :func:`compact`).
COMPACT_BELOW = 64 * 1024


def keep(frames: list[Any]) -> list[Any] | bytes:
    """How a reply is kept: a small one (every frame together below :data:`COMPACT_BELOW`) as one
    blob (:func:`~controller.frameblob.pack_frames`: one object, copied from the receive buffers
    as :func:`compact` would, and what the store writes), a larger one as :func:`compact` keeps it."""
    n = sum(map(len, frames))
    if n < COMPACT_BELOW:
        blob = pack_frames(frames)
        if len(blob) == 4 + 8 * len(frames) + n:  # (else a frame's len() did not count its bytes)
            return blob
    return compact(frames)


def compact(frames: list[Any]) -> list[Any]:
    """*frames* with the small received ones replaced by copies of their bytes.

    A frame received without copying shares libzmq's receive buffer: keeping it keeps about 10 KB
    alive whatever its length, so 100,000 kept replies of no-op tasks held a gigabyte.  Copying the
    small frames costs about a microsecond per reply; large ones (allocated on their own) are kept
    as received.
    """
    return [f if f.__class__ is bytes or nbytes(f) >= COMPACT_BELOW else bytes(f) for f in frames]


def total_bytes(buffers: Sequence[Any]) -> int:
    """Bytes of all *buffers* (see :func:`nbytes`); received frames are mostly ``bytes``."""
    n = 0
    for b in buffers:
        n += len(b) if b.__class__ is bytes else nbytes(b)
    return n


def nbytes(buf: Any) -> int:
    """Size of a buffer (bytes, memoryview, zmq.Frame), without copying it."""
    try:
        return memoryview(buf).nbytes
    except TypeError:
        return 0


# --- queries ----------------------------------------------------------------------------------


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def test(value: Any, arg: Any) -> bool:
        if value is None or arg is None:
            return False  # a missing time is neither before nor after anything
        try:
            return bool(op(value, arg))
        except TypeError:
            return False

    return test


def _member(value: Any, arg: Any) -> bool:
    if not isinstance(arg, (list, tuple, set, frozenset)):
        raise ValueError(f"$in / $nin need a list, not {type(arg).__name__}")
    return value in arg


#: ``{"completed": {"$gt": t}}`` means ``record["completed"] > t``.
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda value, arg: value == arg,
    "$ne": lambda value, arg: value != arg,
    "$lt": _compare(operator.lt),
    "$lte": _compare(operator.le),
    "$gt": _compare(operator.gt),
    "$gte": _compare(operator.ge),
    "$in": _member,
    "$nin": lambda value, arg: not _member(value, arg),
}


def matches(record: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether *record* satisfies every condition of *spec*.

    A condition is a plain value (equality) or a dict of operators, all of which must hold:
    ``{"completed": {"$gte": t0, "$lt": t1}, "engine_id": {"$in": [0, 1]}, "status": "ok"}``.
    Raises ``ValueError`` for an unknown operator or a malformed argument.
    """
    for key, cond in spec.items():
        value = record.get(key)
        if isinstance(cond, dict) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
            for op, arg in cond.items():
                test = OPERATORS.get(op)
                if test is None:
                    raise ValueError(f"unknown query operator {op!r}; known: {', '.join(OPERATORS)}")
                if not test(value, arg):
                    return False
        elif value != cond:
            return False
    return True


def query(records: Iterable[dict[str, Any]], spec: dict[str, Any],
          keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The records matching *spec*, each reduced to *keys* (plus ``msg_id``) when given.

    The whole spec is checked before any record is read, so a bad one fails even on no records.
    """
    if not isinstance(spec, dict):
        raise ValueError("a query is a dict of {field: value or {operator: argument}}")
    for cond in spec.values():
        if isinstance(cond, dict):
            for op, arg in cond.items():
                if isinstance(op, str) and op.startswith("$"):
                    if op not in OPERATORS:
                        raise ValueError(f"unknown query operator {op!r}; known: {', '.join(OPERATORS)}")
                    if op in ("$in", "$nin"):
                        _member(None, arg)
    if keys is not None:
        unknown = [k for k in keys if k not in FIELDS]
        if unknown:
            raise ValueError(f"unknown record field(s) {unknown}; known: {', '.join(sorted(FIELDS))}")
    out = []
    for r in records:
        if matches(r, spec):
            out.append(r if keys is None else {k: r.get(k) for k in keys} | {"msg_id": r.get("msg_id")})
    return out


# --- what the router hands over (header and JSON parts it already decoded; frames as received) ---


def request_seen(records: TaskRecords, header: dict[str, Any], buffers: Sequence[Any],
                 engine_id: int | None = None, engine_uuid: bytes | None = None) -> None:
    """Record a request from its header; *buffers* are its payload frames (only measured)."""
    get = header.get
    msg_id, session, msg_type, date = get("msg_id", ""), get("session", ""), get("msg_type", ""), get("date")
    records.submitted(msg_id if msg_id.__class__ is str else str(msg_id),
                      session if session.__class__ is str else str(session),
                      msg_type if msg_type.__class__ is str else str(msg_type),
                      date if date.__class__ is float else float(date) if isinstance(date, (int, float)) else None,
                      total_bytes(buffers), engine_id,
                      engine_uuid.decode("ascii", "replace") if engine_uuid else None)


def reply_seen(records: TaskRecords, parent_id: str, metadata_part: bytes, content_part: Any,
               reply: list[Any], engine_id: int | None, engine_uuid: bytes | None, now: float) -> bool:
    """Record a reply on its way to the client.  *reply* is its frames from the delimiter on:
    ``[DELIM, signature, header, parent, metadata, content, *buffers]``; *content_part* is its
    content frame, or that frame already decoded.

    Returns False for a second reply to a request already answered (a late reply from an engine
    that was presumed dead and came back, after the controller failed the request): it must not
    reach the client, so that each msg_id has exactly one result.
    """
    rec = records.get(parent_id)
    if rec is None:
        return True
    if rec.completed is not None:
        return False
    try:
        md = json_loads(metadata_part)
        content = json_loads(content_part) if isinstance(content_part, bytes) else content_part
    except ValueError:
        md, content = {}, {}
    md = md if md.__class__ is dict else {}
    content = content if content.__class__ is dict else {}
    status = content.get("status") or md.get("status") or "unknown"
    if status.__class__ is not str:
        status = str(status)
    ename = content.get("ename") if status == "error" else None
    records.finish(rec, status, _time_of(md, "completed") or now, str(ename) if ename else None,
                   _time_of(md, "received"), _time_of(md, "started"), engine_id,
                   engine_uuid.decode("ascii", "replace") if engine_uuid else None, reply, reply[6:])
    return True


def _time_of(md: dict[str, Any], key: str) -> float | None:
    """A time from a reply's metadata, as a float (``None`` if absent or not a number)."""
    t = md.get(key)
    cls = t.__class__
    if cls is float:
        return t
    return float(t) if isinstance(t, (int, float)) else None
