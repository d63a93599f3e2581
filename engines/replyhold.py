"""Replies of a batch's requests held back briefly, to go to the controller together.

While an engine runs the requests of a batch the controller sent (``ipcluster.protocol.batch``), the
small reply of each request but the last is *held* instead of sent: when the batch is done, the
held replies leave as one batch (one signature, one send, one message for the controller to read).
A held reply never waits long: the main thread sends what it holds before it sends anything else on
the route (an output, a reply it does not hold: the order on the route is kept), at the end of the
batch, and between requests once the first held reply is :data:`HOLD` seconds old; and while a
request runs, a small thread sends the held replies once they are that old (a long request never
holds back the results of the quick ones before it, and an engine that dies loses at most the
replies of that last moment, as it could lose replies libzmq had not written out yet).

The mux socket is used by two threads only while replies are held, always under :attr:`lock`:
the main thread takes it for every send on the route while it runs a batch, and does not poll or
receive on the socket until the batch's held replies are out.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ipcluster.protocol import batch as batching
from ipcluster.protocol.session import Session

#: Seconds a reply may be held at most (give or take the flushing thread's wake-up).
HOLD = 0.002


class HeldReplies:
    """Held reply frames (``[client, <IDS|MSG>, ...]``) and the thread that sends them when due."""

    def __init__(self, session: Session, send: Callable[[list[Any]], None], hold: float = HOLD):
        self.session = session
        self.send = send  # sends one message on the mux socket (called under the lock)
        self.hold_for = hold
        self.lock = threading.Lock()
        self.replies: list[list[Any]] = []
        self.since = 0.0  # time.monotonic() when the oldest held reply was held
        self.batches_sent = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, frames: list[Any]) -> bool:
        """Hold *frames* (a small reply); ``False`` (not held: send it yourself) if it is large."""
        if batching.part_size(frames) < 0:
            return False
        with self.lock:
            if not self.replies:
                self.since = time.monotonic()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="engine-held-replies", daemon=True)
                    self._thread.start()
                self._wake.set()
            self.replies.append(frames)
        return True

    def due(self) -> bool:
        return bool(self.replies) and time.monotonic() - self.since >= self.hold_for

    def flush(self) -> None:
        with self.lock:
            self.flush_locked()

    def flush_locked(self) -> None:
        """Send what is held, one batch (or the one reply); the caller holds :attr:`lock`."""
        replies = self.replies
        if not replies:
            return
        self.replies = []
        if len(replies) == 1:
            self.send(replies[0])
        else:
            # addressed to the controller itself (no routing id); each part keeps its client's
            packer = batching.Packer(self.session)
            for reply in replies:
                packer.add(reply)
            for frames, count in packer.counted():
                self.send(list(frames))
                if count > 1:
                    self.batches_sent += 1

    def _run(self) -> None:
        """Send held replies that are due while the main thread runs a request."""
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self.lock:
                    if not self.replies:
                        break
                    wait = self.since + self.hold_for - time.monotonic()
                    if wait <= 0:
                        try:
                            self.flush_locked()
                        except Exception:  # the socket is closed: the engine is stopping
                            self.replies = []
                        break
                time.sleep(wait)  # a held reply is due then (not synchronisation: a deadline)
