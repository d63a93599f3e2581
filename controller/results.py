"""Answers about results the controller kept, and clients waiting for results still pending.

``result_request`` asks about msg_ids (often another client's); each gets an entry: ``unknown``,
``pending`` or ``completed`` (with the reply's header, metadata, content and buffers while the
controller still keeps them).  With ``"wait": true`` the asking client is also put on a watch list
for each pending msg_id, atomically with the answer, and gets a ``result_notification`` with the
completed entry as soon as the reply passes through the controller — so ``get_result`` of a
running task waits instead of failing.
"""

from __future__ import annotations

from typing import Any

from controller.records import TaskRecords
from ipcluster.protocol.session import json_loads

#: Watches kept at most (a client that left without its results leaves watches behind until the
#: tasks finish); beyond this the oldest are dropped and those clients' waits end in an error.
MAX_WATCHES = 100_000


def result_entry(records: TaskRecords, msg_id: str, status_only: bool, buffers: list[Any]) -> dict[str, Any]:
    """The answer about *msg_id*; a kept reply's buffers are appended to *buffers*
    (the entry's ``"buffers": [start, stop]`` says where)."""
    rec = records.get(msg_id)
    if rec is None:
        return {"status": "unknown"}
    if rec.completed is None:
        return {"status": "pending", "record": rec.to_dict()}
    frames = records.reply(msg_id)
    if status_only or frames is None:
        return {"status": "completed", "kept": status_only and frames is not None, "record": rec.to_dict()}
    # [DELIM, signature, header, parent, metadata, content, *buffers]: JSON read, buffers not
    part = [json_loads(f.bytes if hasattr(f, "bytes") else f) for f in frames[2:6]]
    entry = {"status": "completed", "kept": True, "record": rec.to_dict(), "header": part[0],
             "metadata": part[2], "content": part[3], "buffers": [len(buffers), len(buffers) + len(frames) - 6]}
    buffers.extend(frames[6:])
    return entry


class ResultWatches:
    """Who waits for which pending msg_id: ``msg_id -> [(client identity, request header)]``."""

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        self.max_watches = max_watches
        self.by_msg_id: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        self._count = 0

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self.by_msg_id

    def __len__(self) -> int:
        return self._count

    def add(self, msg_id: str, client: bytes, request: dict[str, Any]) -> list[tuple[str, bytes, dict[str, Any]]]:
        """Watch *msg_id* for *client*; returns the watches dropped to stay within the cap."""
        self.by_msg_id.setdefault(msg_id, []).append((client, request))
        self._count += 1
        dropped = []
        while self._count > self.max_watches:
            oldest = next(iter(self.by_msg_id))
            for client_, request_ in self.by_msg_id.pop(oldest):
                dropped.append((oldest, client_, request_))
                self._count -= 1
        return dropped

    def drop_client(self, client: bytes) -> int:
        """Forget every watch of *client* (it is gone); returns how many."""
        dropped = 0
        for msg_id in list(self.by_msg_id):
            watchers = self.by_msg_id[msg_id]
            kept = [w for w in watchers if w[0] != client]
            if len(kept) != len(watchers):
                dropped += len(watchers) - len(kept)
                if kept:
                    self.by_msg_id[msg_id] = kept
                else:
                    del self.by_msg_id[msg_id]
        self._count -= dropped
        return dropped

    def pop(self, msg_id: str) -> list[tuple[bytes, dict[str, Any]]]:
        watchers = self.by_msg_id.pop(msg_id, [])
        self._count -= len(watchers)
        return watchers
