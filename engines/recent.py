"""The engine's most recent replies on the controller route, kept to be sent again.

When the controller dies, replies it had not read yet die with it (in its socket buffers).  An
engine that registers again with the restarted controller first sends these recent replies again:
the controller delivers the ones it still expects (it restored them as pending from its store) and
drops the rest as duplicates (it keeps one result per msg_id).  So a reply is lost in a restart
only if it is older than this small window, or large (see :meth:`RecentReplies.keep`).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Iterator

from ipcluster.protocol.session import DELIM

#: Replies kept at most.
MAX_REPLIES = 4096
#: Replies sent longer ago than this (seconds) are not sent again: the controller read them.
WINDOW = 60.0
#: Bytes kept at most, and the largest reply kept.
MAX_BYTES = 16 * 1024 * 1024
MAX_REPLY_BYTES = 256 * 1024


class RecentReplies:
    """A bounded window of replies (frames as sent, routing id first); main thread only."""

    def __init__(self, max_replies: int = MAX_REPLIES, max_bytes: int = MAX_BYTES,
                 max_reply_bytes: int = MAX_REPLY_BYTES):
        self._replies: deque[tuple[list[Any], int, float]] = deque()  # (frames, size, sent at)
        self.max_replies = max_replies
        self.max_bytes = max_bytes
        self.max_reply_bytes = max_reply_bytes
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._replies)

    def __iter__(self) -> Iterator[list[Any]]:
        return (frames for frames, _, _ in self._replies)

    def since(self, t: float) -> Iterator[list[Any]]:
        """The replies sent at or after time *t* (``time.time()``), oldest first."""
        return (frames for frames, _, sent in self._replies if sent >= t)

    def keep(self, frames: list[Any], sent: float = 0.0) -> None:
        """Keep *frames* (sent at time *sent*) if they are small.  Frames that are not ``bytes``
        (buffers that may share the result's memory, which the next task may change) are copied."""
        size = 0
        copy = False
        for f in frames:
            if type(f) is bytes:
                size += len(f)
            else:
                size += memoryview(f).nbytes
                copy = True
        if size > self.max_reply_bytes:
            return
        if copy:
            frames = [f if type(f) is bytes else bytes(f) for f in frames]
        replies = self._replies
        replies.append((frames, size, sent))
        self.nbytes += size
        while len(replies) > self.max_replies or self.nbytes > self.max_bytes:
            self.nbytes -= replies.popleft()[1]


def signed_again(session: Any, frames: list[Any]) -> list[Any] | None:
    """*frames* (a reply we sent) as a new message: same parent, metadata, content and buffers, a
    new header (msg_id, date) and signature — a receiver's replay guard refuses the original, which
    it may have seen (or that is dated before messages it saw).  None if the frames do not parse."""
    try:
        i = frames.index(DELIM)
        header, parent, metadata, content = (json.loads(f) for f in frames[i + 2:i + 6])
    except (ValueError, TypeError):
        return None
    return list(session.serialize(header.get("msg_type", ""), content, parent=parent, metadata=metadata,
                                  buffers=frames[i + 6:], idents=frames[:i]))
