"""Coalesced broadcast replies: the controller answers a broadcast with one message.

A client may ask (``"coalesce": true`` in a broadcast's metadata) to receive the replies of all
target engines as one ``broadcast_reply`` instead of one reply per engine.  The controller keeps
each engine's reply frames as received (from the delimiter on: still signed by the engine, never
decoded beyond the header) until every target has answered — with a result, an error, or the
controller's own error reply for a missing or dead engine — and then sends them in one message it
signs itself, its content listing how many frames each part has.  The client checks the outer
signature, then each part's, and handles the parts exactly as separate replies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ipcluster.protocol.messages import BROADCAST, BROADCAST_REPLY
from ipcluster.protocol.session import Session

Sender = Callable[[list[Any]], None]


@dataclass(slots=True)
class _Pending:
    client: bytes
    header: dict[str, Any]
    waiting: set[bytes]  # engine uuids that still owe their part
    parts: list[list[Any]] = field(default_factory=list)
    fanning_out: bool = True  # parts may arrive (error replies) before every engine is expected


class Coalescer:
    """Broadcasts whose replies are being gathered, by request msg_id."""

    def __init__(self, session: Session, send: Sender):
        self.session = session
        self.send = send
        self.pending: dict[str, _Pending] = {}  # (read-only for callers: empty when nothing is gathered)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self.pending

    def __len__(self) -> int:
        return len(self.pending)

    def start(self, msg_id: str, client: bytes, header: dict[str, Any]) -> None:
        """A coalesced broadcast is about to be fanned out (engines are added with :meth:`expect`)."""
        self.pending[msg_id] = _Pending(client, header, set())

    def expect(self, msg_id: str, engine: bytes) -> None:
        self.pending[msg_id].waiting.add(engine)

    def part(self, msg_id: str, engine: bytes, frames: list[Any]) -> bool:
        """Keep one engine's reply (*frames* from the delimiter on); ``False`` if *msg_id* is not
        a coalesced broadcast (the caller then delivers the reply itself)."""
        entry = self.pending.get(msg_id)
        if entry is None:
            return False
        entry.parts.append(frames)
        entry.waiting.discard(engine)
        if not entry.waiting and not entry.fanning_out:
            self.flush(msg_id)
        return True

    def flush(self, msg_id: str) -> None:
        """End the fan-out of *msg_id*; send what was gathered if no engine owes a part."""
        entry = self.pending.get(msg_id)
        if entry is None:
            return
        entry.fanning_out = False
        if entry.waiting:
            return
        del self.pending[msg_id]
        buffers = [f for part in entry.parts for f in part]
        self.send(self.session.serialize(BROADCAST_REPLY, {"parts": [len(p) for p in entry.parts]},
                                         parent=entry.header, buffers=buffers, idents=[entry.client, BROADCAST]))

