"""The controller's replay guard across restarts: a small 0600 file beside the connection file.

A restarted controller starts with an empty memory of signatures, so a message recorded on the wire
before the restart would look new.  Every :data:`SAVE_INTERVAL` seconds (never per message) the
controller writes its session's :meth:`~ipcluster.protocol.session.Session.guard_state` — per route
and sender, the date of the newest message accepted — together with a fingerprint of the cluster
key.  A controller that starts with the same key adopts it: anything a sender dated at or before
that point is refused as stale, while what senders sent later (also while the controller was down)
passes.  Replays of messages accepted in the last interval before a crash are the remaining window.
A file written under another key is ignored (its dates mean nothing for this cluster's messages).
A clean stop removes the file, as it removes the task store: nothing is restored after one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from ipcluster.protocol.connection import write_json_atomic
from ipcluster.protocol.session import Session

#: Seconds between two saves of the guard state (the window left open by a crash).
SAVE_INTERVAL = 1.0


def guard_file_path(connection_file: str | Path) -> Path:
    """``…-connection.json`` -> ``…-replay-guard.json`` in the same (0700) directory."""
    p = Path(connection_file)
    stem = p.name[: -len("-connection.json")] if p.name.endswith("-connection.json") else p.stem
    return p.with_name(f"{stem}-replay-guard.json")


def fingerprint(key: bytes) -> str:
    """Names the key without revealing it (a hash of a 256-bit random key)."""
    return hashlib.sha256(b"ipcluster replay guard\0" + key).hexdigest()[:32]


class ReplayGuardFile:
    """Loads a predecessor's guard state into *session* and saves the current one periodically."""

    def __init__(self, path: Path, session: Session, log: logging.Logger):
        self.path = path
        self.session = session
        self.log = log
        self._saved: list[list[object]] | None = None
        self._key_id = fingerprint(session.key)
        self._lock = threading.Lock()  # a write (worker thread) and the removal at a clean stop
        self._removed = False

    def load(self) -> int:
        """Adopt the state a controller with the same key left; returns how many senders."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as e:
            self.log.warning("ignoring unreadable replay-guard file %s: %s", self.path, str(e)[:200])
            return 0
        if not isinstance(data, dict) or data.get("key") != fingerprint(self.session.key):
            return 0
        senders = data.get("senders")
        n = self.session.restore_guard(senders if isinstance(senders, list) else [])
        if n:
            self.log.info("replay guard: refusing messages older than the last ones seen of %d senders "
                          "before the restart", n)
        return n

    def save(self) -> None:
        """Write the current state if it changed (atomically, mode 0600)."""
        state = self.changed_state()
        if state is not None:
            self.write(state)

    def changed_state(self) -> list[list[object]] | None:
        """The session's guard state if it differs from the one saved last, else None."""
        state = self.session.guard_state()
        return None if state == self._saved else state

    def write(self, state: list[list[object]]) -> None:
        """Write *state* (from :meth:`changed_state`); may run in another thread than the session's.
        Nothing is written once :meth:`remove` has run."""
        with self._lock:
            if self._removed:
                return
            try:
                write_json_atomic(self.path, {"key": self._key_id, "saved": time.time(), "senders": state})
            except OSError as e:
                self.log.warning("cannot save the replay guard to %s: %s", self.path, e)
                return
            self._saved = state

    def remove(self) -> None:
        """A clean stop: no successor will restore from this state (a write still running in
        another thread finishes first; none follows)."""
        with self._lock:
            self._removed = True
            try:
                self.path.unlink()
            except OSError:
                pass


async def save_periodically(guard: ReplayGuardFile, interval: float = SAVE_INTERVAL) -> None:
    """Save *guard* every *interval* seconds until cancelled.  The file is written in a worker
    thread: a slow file system holds up the writes, never the controller's loop."""
    while True:
        await asyncio.sleep(interval)  # a timer, not synchronisation
        state = guard.changed_state()
        if state is not None:
            await asyncio.to_thread(guard.write, state)


__all__ = ["ReplayGuardFile", "SAVE_INTERVAL", "fingerprint", "guard_file_path", "save_periodically"]
