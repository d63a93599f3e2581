"""Liveness by heartbeat: a pure monitor plus the tick that drives it.

Every ``period`` seconds the controller publishes a ping; each engine echoes it from a libzmq proxy
thread (no GIL involved, so a busy engine still answers).  An engine whose last echo is older than
``misses`` periods at a tick, and who answered none of the last ``misses`` pings sent, is declared
dead (a controller too busy to send pings on time does not blame its engines).  Time is passed in, so the monitor is tested without
sockets or clocks.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable


class HeartMonitor:
    def __init__(self, period: float, misses: int):
        if period <= 0:
            raise ValueError(f"heartbeat period must be > 0, got {period}")
        if misses < 1:
            raise ValueError(f"heartbeat misses must be >= 1, got {misses}")
        self.period = period
        self.misses = misses
        self._last_seen: dict[bytes, float] = {}
        # send times of the last `misses` pings (once ping() is used): an engine is dead only if it
        # answered none of them, so a controller whose loop was too busy to send pings (a burst
        # of messages) does not declare its engines dead for its own delay
        self._sent: deque[float] | None = None

    def ping(self, now: float) -> None:
        """A ping was sent at *now*."""
        if self._sent is None:
            self._sent = deque(maxlen=self.misses)
        self._sent.append(now)

    def add(self, uuid: bytes, now: float) -> None:
        self._last_seen[uuid] = now

    def discard(self, uuid: bytes) -> None:
        self._last_seen.pop(uuid, None)

    def beat(self, uuid: bytes, now: float) -> None:
        """An echo arrived from *uuid* (ignored for engines not being watched)."""
        if uuid in self._last_seen:
            self._last_seen[uuid] = now

    def expired(self, now: float) -> list[bytes]:
        """Engines that missed ``misses`` consecutive pings; they are no longer watched."""
        limit = now - self.period * self.misses
        if self._sent is not None:
            if len(self._sent) < self.misses:
                return []
            limit = min(limit, self._sent[0])
        dead = [u for u, t in self._last_seen.items() if t < limit]
        for u in dead:
            del self._last_seen[u]
        return dead

    @property
    def watched(self) -> Iterable[bytes]:
        return self._last_seen.keys()
