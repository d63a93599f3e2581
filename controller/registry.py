"""Engine and task bookkeeping: pure state, no sockets.

The registry knows every engine (id, uuid, host, pid), what each one has been sent and not yet
answered (msg_id -> client identity, request type, time), and how many requests each completed.  It
never holds payloads: the router tells it about a request or reply from the header alone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(slots=True)
class Pending:
    """A request forwarded to an engine and not yet answered."""

    client: bytes
    msg_type: str
    header: dict[str, Any]
    submitted: float


@dataclass
class EngineRecord:
    id: int
    uuid: bytes
    hostname: str = ""
    pid: int | None = None
    supervisor_pid: int | None = None
    registered: float = field(default_factory=time.time)
    ready: bool = False
    pending: dict[str, Pending] = field(default_factory=dict)
    completed: int = 0
    # where same-host clients may reach the engine directly, and what "same host" means
    direct_url: str = ""
    raw_url: str = ""  # its Unix stream socket for same-host blocking calls (ipcluster.protocol.rawlink)
    host_key: str = ""
    # the engine takes several requests as one message (ipcluster.protocol.batch); said at registration
    batches: bool = False
    # requests served on the direct route, as last reported by the engine
    direct_completed: int = 0
    # routing id of the engine-host supervisor's hub socket ("" without a supervisor): where
    # requests to interrupt or kill this engine's running task go
    supervisor_id: bytes = b""
    # the uuid as text, as task records name it (decoded once, not per task)
    uuid_text: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.uuid_text = self.uuid.decode("ascii", "replace")

    def info(self) -> dict[str, Any]:
        return {"uuid": self.uuid.decode("ascii", "replace"), "hostname": self.hostname, "pid": self.pid,
                "direct_url": self.direct_url, "raw_url": self.raw_url, "host_key": self.host_key}


#: Engines that left whose ids are remembered (for a restarted engine to get its id back).
MAX_GONE = 10_000


class EngineRegistry:
    """Engines by id and by uuid.

    An id is given to one engine only, except that an engine that comes back keeps its id: one
    registering again with the same uuid (it lost its connection), or a new process its supervisor
    started in place of a dead one (``restart_of``: the dead engine's uuid), provided no other
    engine holds that id.  Otherwise ids are never reused within one controller's life.
    """

    def __init__(self) -> None:
        self._by_id: dict[int, EngineRecord] = {}
        self._by_uuid: dict[bytes, EngineRecord] = {}
        self._gone: OrderedDict[bytes, int] = OrderedDict()  # uuid of an engine that left -> its id
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[EngineRecord]:
        return iter(list(self._by_id.values()))

    def add(self, uuid: bytes, hostname: str = "", pid: int | None = None,
            supervisor_pid: int | None = None, restart_of: bytes | None = None) -> EngineRecord:
        """Register *uuid* (a registered uuid gets its record back); see the class docstring."""
        existing = self._by_uuid.get(uuid)
        if existing is not None:
            return existing
        eid = self._reusable_id(uuid)  # itself, back (a partition, a restored controller)
        if eid is None and restart_of is not None:  # a new process in place of a dead engine
            eid = self._reusable_id(restart_of)
        if eid is None:
            eid = self._next_id
            self._next_id += 1
        rec = EngineRecord(eid, uuid, hostname, pid, supervisor_pid)
        self._by_id[rec.id] = rec
        self._by_uuid[uuid] = rec
        return rec

    def _reusable_id(self, uuid: bytes) -> int | None:
        eid = self._gone.get(uuid)
        if eid is None or eid in self._by_id:
            return None
        del self._gone[uuid]
        return eid

    def remove(self, rec: EngineRecord) -> None:
        if self._by_id.get(rec.id) is rec:
            del self._by_id[rec.id]
        if self._by_uuid.get(rec.uuid) is rec:
            del self._by_uuid[rec.uuid]
            self._gone[rec.uuid] = rec.id
            if len(self._gone) > MAX_GONE:
                self._gone.popitem(last=False)

    def remember(self, uuid: bytes, engine_id: int) -> None:
        """Know *uuid* as an engine that left with id *engine_id* (a controller restored from its
        store): it gets that id back when it registers, and no new engine gets it."""
        if uuid not in self._by_uuid:
            self._gone[uuid] = engine_id
        self._next_id = max(self._next_id, engine_id + 1)

    def id_of(self, uuid: bytes) -> int | None:
        """The id of *uuid*, registered or (remembered as) gone; ``None`` if never seen."""
        rec = self._by_uuid.get(uuid)
        return rec.id if rec is not None else self._gone.get(uuid)

    def by_uuid(self, uuid: bytes) -> EngineRecord | None:
        return self._by_uuid.get(uuid)

    def by_id(self, engine_id: int) -> EngineRecord | None:
        return self._by_id.get(engine_id)

    def ready_engines(self) -> list[EngineRecord]:
        return [e for e in self._by_id.values() if e.ready]

    # --- task bookkeeping (called by the router with header fields only) ----------------------

    @staticmethod
    def submitted(rec: EngineRecord, client: bytes, header: dict[str, Any]) -> None:
        rec.pending[header.get("msg_id", "")] = Pending(client, header.get("msg_type", ""), header, time.time())

    @staticmethod
    def finished(rec: EngineRecord, parent_msg_id: str) -> None:
        if rec.pending.pop(parent_msg_id, None) is not None:
            rec.completed += 1

    def queue_status(self, targets: list[int] | None = None, verbose: bool = False) -> dict[str, Any]:
        engines = {}
        for rec in self._by_id.values():
            if not rec.ready or (targets is not None and rec.id not in targets):
                continue
            queue: Any = sorted(rec.pending) if verbose else len(rec.pending)
            engines[str(rec.id)] = {"queue": queue, "completed": rec.completed + rec.direct_completed}
        return engines
