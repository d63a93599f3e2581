"""Waiting for the replies of a blocking call on many more same-host engines than CPUs.

A call on 32 engines sharing 2 CPUs gets its replies one by one over a few milliseconds.  Woken for
each, the caller would spend a scheduler round trip per reply and run its reply handling 32
times, each time on a CPU whose caches the engine that ran just before had filled: measured on 2
CPUs, 47 µs of the caller's CPU per reply, and the caller evicts the next engine in turn.  Here the
caller instead

* waits on one link only: the one whose engine got its request last among those that still owe a
  reply (it usually answers last), for :data:`FIRST_WAIT_MS`, doubling while nothing comes up to
  the caller's poll slice; then it takes whatever every link has;
* keeps the messages it reads, in arrival order, and handles them together once every link has
  sent its reply, or when an output message comes (output stays live), or when a wait brought
  nothing new.

Messages read are never lost: :meth:`ReplyCollector.handle` runs them before the caller gives its
links away.  Links also answer buffer-grant requests while they are read (inside
``RawLink.recv``), so a large reply waits at most one wait for its grant.
"""

from __future__ import annotations

import select
from typing import Any, Callable, Sequence

from ipcluster.protocol import rawlink
from ipcluster.protocol.session import DELIM

#: First wait (ms) on the link expected to answer last, before looking at every link.
FIRST_WAIT_MS = 2


def looks_like_reply(frames: Sequence[Any]) -> bool:
    """Whether a message from an engine is a request's reply (its header's ``msg_type`` ends in
    ``_reply``) rather than output sent before it.

    Only a hint for when to handle what was read: the message is checked in full (signature,
    header) when it is handled, and the caller goes on waiting while a request has no outcome.
    """
    for i, frame in enumerate(frames):
        if len(frame) == len(DELIM) and frame == DELIM:
            return len(frames) > i + 2 and b'_reply"' in frames[i + 2]
    return False


class ReplyCollector:
    """One blocking call's wait on raw links (see the module docstring); one thread only."""

    def __init__(self, links: Sequence[rawlink.RawLink], poller: Any, slice_ms: int) -> None:
        #: links in the order their requests went out (a link twice if it got two requests)
        self._order = [link.fileno() for link in links]
        self._owed: dict[int, int] = {}
        for fd in self._order:
            self._owed[fd] = self._owed.get(fd, 0) + 1
        self._poller = poller
        self._slice_ms = slice_ms
        self._wait_ms = FIRST_WAIT_MS
        self.stash: list[list[Any]] = []
        self._due = False  # handle the stash now (output came, or every link answered)

    def straggler(self) -> int | None:
        """The descriptor of the last link (in send order) still owing a reply, if any."""
        owed = self._owed
        for fd in reversed(self._order):
            if owed[fd] > 0:
                return fd
        return None

    def wait(self) -> list[tuple[int, int]]:
        """Wait as the module docstring says; returns the links ready now (may be none)."""
        fd = self.straggler()
        if fd is None:  # every link answered, yet a request has no outcome: wait on them all
            return self._poller.poll(self._slice_ms)
        one = select.poll()
        one.register(fd, select.POLLIN)
        if one.poll(self._wait_ms):
            self._wait_ms = FIRST_WAIT_MS
        elif self._wait_ms < self._slice_ms:
            self._wait_ms = min(self._wait_ms * 2, self._slice_ms)
        events: list[tuple[int, int]] = self._poller.poll(0)
        if not events:
            self._due = True  # nothing new: handle what is kept
        return events

    def keep(self, fd: int, frames: list[Any]) -> None:
        """A message read from the link *fd*: kept for :meth:`handle`."""
        self.stash.append(frames)
        if looks_like_reply(frames):
            if self._owed.get(fd, 0) > 0:
                self._owed[fd] -= 1
                if self.straggler() is None:
                    self._due = True
        else:
            self._due = True  # output: handled at once, so it shows while the call runs

    def forget(self, fd: int) -> None:
        """The link *fd* broke (its engine died): no reply will come on it."""
        self._owed[fd] = 0
        self._order = [f for f in self._order if f != fd]
        self._due = True

    def due(self) -> bool:
        return self._due and bool(self.stash)

    def handle(self, run: Callable[[list[Any]], None]) -> None:
        """Run every kept message through *run*, oldest first; the ones not run yet stay kept if
        *run* raises (KeyboardInterrupt)."""
        self._due = False
        stash = self.stash
        done = 0
        try:
            while done < len(stash):
                frames = stash[done]
                done += 1
                run(frames)
        finally:
            del stash[:done]
