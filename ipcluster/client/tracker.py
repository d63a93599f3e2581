"""What a client is waiting for: one future and one :class:`Metadata` per request.

Pure bookkeeping, no sockets: the client registers a request before sending it, and the IO thread
feeds outputs and replies in.  Called from two threads (register from the user's, the rest from the
IO thread); each operation touches a handful of dict entries, guarded by one lock.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, Callable

from ipcluster.client.metadata import Metadata, reply_value
from ipcluster.protocol.session import Message

Future = concurrent.futures.Future


class RequestTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.futures: dict[str, Future[Any]] = {}
        self.metadata: dict[str, Metadata] = {}
        self.results: dict[str, Any] = {}
        self.history: list[str] = []
        self.outstanding: set[str] = set()
        self._by_engine: dict[bytes, set[str]] = {}
        self._engine_of: dict[str, bytes] = {}
        self._recorded: set[str] = set()  # msg_ids that go into results/history (tasks)

    def register(self, msg_id: str, engine_uuid: bytes, engine_id: int | None, record: bool = True) -> Future[Any]:
        fut: Future[Any] = Future()
        md = Metadata(msg_id=msg_id, engine_id=engine_id,
                      engine_uuid=engine_uuid.decode("ascii", "replace"), submitted=time.time())
        with self._lock:
            self.futures[msg_id] = fut
            self.metadata[msg_id] = md
            self.outstanding.add(msg_id)
            self._by_engine.setdefault(engine_uuid, set()).add(msg_id)
            self._engine_of[msg_id] = engine_uuid
            if record:
                self.history.append(msg_id)
                self._recorded.add(msg_id)
        return fut

    def on_output(self, msg: Message) -> None:
        md = self.metadata.get(msg.parent_id)
        if md is None:
            return
        c = msg.content
        t = msg.msg_type
        if t == "stream":
            name = "stderr" if c.get("name") == "stderr" else "stdout"
            md[name] = md[name] + str(c.get("text", ""))
        elif t == "display_data":
            md["outputs"] = md["outputs"] + [c]
        elif t == "execute_result":
            md["execute_result"] = c
        elif t == "error":
            md["error"] = c

    def on_reply(self, msg: Message) -> None:
        msg_id = msg.parent_id
        md = self.metadata.get(msg_id)
        fut = self.futures.get(msg_id)
        if md is None or fut is None or fut.done():
            return  # not ours, or already failed (e.g. engine died and a late reply arrived)
        rmd = msg.metadata
        for key in ("engine_id", "received", "started", "completed", "status"):
            if rmd.get(key) is not None:
                md[key] = rmd[key]
        md["status"] = md["status"] or msg.content.get("status")
        try:
            ok, value = reply_value(msg)
        except Exception as e:  # the result did not unpickle here
            ok, value = False, e
        self._complete(msg_id, fut, ok, value)

    def fail(self, msg_id: str, exc: BaseException) -> None:
        fut = self.futures.get(msg_id)
        if fut is not None and not fut.done():
            md = self.metadata.get(msg_id)
            if md is not None:
                md["status"] = "error"
                md["completed"] = time.time()
            self._complete(msg_id, fut, False, exc)

    def fail_engine(self, engine_uuid: bytes, make_exc: Callable[[str], BaseException]) -> int:
        with self._lock:
            ids = list(self._by_engine.get(engine_uuid, ()))
        for msg_id in ids:
            self.fail(msg_id, make_exc(msg_id))
        return len(ids)

    def fail_all(self, make_exc: Callable[[str], BaseException]) -> int:
        with self._lock:
            ids = list(self.outstanding)
        for msg_id in ids:
            self.fail(msg_id, make_exc(msg_id))
        return len(ids)

    def outstanding_on(self, engine_uuid: bytes) -> list[str]:
        with self._lock:
            return list(self._by_engine.get(engine_uuid, ()))

    def _complete(self, msg_id: str, fut: Future[Any], ok: bool, value: Any) -> None:
        with self._lock:
            self.outstanding.discard(msg_id)
            engine = self._engine_of.pop(msg_id, None)
            if engine is not None:
                s = self._by_engine.get(engine)
                if s is not None:
                    s.discard(msg_id)
                    if not s:
                        del self._by_engine[engine]
            self.futures.pop(msg_id, None)  # whoever waits holds the future itself
            if msg_id in self._recorded:
                self.results[msg_id] = value
            else:
                self.metadata.pop(msg_id, None)
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
