"""Which route each engine's requests take, so requests to one engine run in the order sent.

Routes: ``"direct"`` (the client's shared socket to same-host engines), ``"mux"`` (through the
controller), or ``"adopted-N"`` (a blocking caller's socket handed to the IO thread).  While any
request to an engine is outstanding, that engine has one *active route* and new requests take it;
once everything is answered, the next request may choose the best route again.  Pure bookkeeping:
no sockets, safe to call from any thread.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable, Sequence


class RouteTable:
    def __init__(self, on_released: Callable[[str], None]):
        """*on_released(route)* is called when an adopted route has nothing outstanding any more."""
        self._active: dict[bytes, list[Any]] = {}  # uuid -> [route, outstanding count]
        self._lock = threading.Lock()
        self._adopted = 0
        self._on_released = on_released

    def __bool__(self) -> bool:
        return bool(self._active)

    def active(self, uuid: bytes) -> str | None:
        with self._lock:
            entry = self._active.get(uuid)
            return entry[0] if entry else None

    def any_active(self, uuids: Sequence[bytes]) -> bool:
        with self._lock:
            return any(u in self._active for u in uuids)

    def new_adopted_name(self) -> str:
        with self._lock:
            self._adopted += 1
            return f"adopted-{self._adopted}"

    @property
    def adopted_count(self) -> int:
        return self._adopted

    def pending(self, uuid: bytes, route: str, futures: Sequence[concurrent.futures.Future[Any]]) -> None:
        """*futures* went out to *uuid* on *route*; it stays active until they are all done."""
        with self._lock:
            entry = self._active.get(uuid)
            if entry is None or entry[0] != route:
                # a new route takes over (requests still out on an older one came first)
                entry = self._active[uuid] = [route, entry[1] if entry else 0]
            entry[1] += len(futures)
        for fut in futures:
            fut.add_done_callback(lambda _: self._done(uuid))

    def _done(self, uuid: bytes) -> None:
        released = None
        with self._lock:
            entry = self._active.get(uuid)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._active[uuid]
                if entry[0].startswith("adopted-"):
                    released = entry[0]
        if released is not None:
            self._on_released(released)
