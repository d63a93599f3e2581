"""Message framing and authentication: bytes in, bytes out, no sockets.

Wire layout of one message (a zmq multipart message)::

    [ident, ..., b"<IDS|MSG>", signature, header, parent_header, metadata, content, buffer, ...]

``header``/``parent_header``/``metadata``/``content`` are compact JSON objects.  ``signature`` is the
hex HMAC-SHA256, keyed by the cluster's key, over the four JSON frames **and** a descriptor of the
buffers (their count and each length), so a buffer cannot be added, dropped or resized without
breaking the signature.  Buffer *contents* are not hashed: hashing a 1 GiB array would cost more than
sending it, and the per-message ``msg_id`` plus the replay guard stop re-use of a valid signature.

:meth:`Session.deserialize` checks the delimiter, the signature and the replay guard *before*
decoding any JSON and long before any pickle is touched: a message that fails is rejected with a
:class:`~ipcluster.errors.ProtocolError` subclass and its payload is never interpreted.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from ipcluster.errors import InvalidSignature, MalformedMessage, ReplayedMessage

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "1.0"

#: How many recent signatures are remembered to reject replays (per receiving Session).
DIGEST_HISTORY = 1 << 16

try:  # orjson: ~10x faster to encode and ~4x to decode than the json module (4 + 4 calls per message)
    import orjson

    _ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

    def json_dumps(obj: Any) -> bytes:
        """Compact UTF-8 JSON of *obj*; values JSON cannot hold are written as ``str(value)``."""
        return orjson.dumps(obj, default=str, option=_ORJSON_OPTIONS)

    json_loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps odd platforms working
    _encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
    _decode = json.JSONDecoder().decode

    def json_dumps(obj: Any) -> bytes:
        """Compact UTF-8 JSON of *obj*; values JSON cannot hold are written as ``str(value)``."""
        return _encode(obj).encode("utf8")

    def json_loads(data: bytes) -> Any:
        return _decode(bytes(data).decode("utf8"))


def new_id() -> str:
    """A fresh random id (32 hex digits): sessions, engines."""
    return uuid.uuid4().hex


def _new_msg_id_source() -> tuple[str, Iterator[int]]:
    return os.urandom(8).hex() + "-", itertools.count(1)


# Message ids: a random per-process prefix and a counter, unique across processes like a uuid4
# without a system call per message.  A forked child gets its own prefix.
_msg_prefix, _msg_counter = _new_msg_id_source()


def _reset_msg_ids() -> None:
    global _msg_prefix, _msg_counter
    _msg_prefix, _msg_counter = _new_msg_id_source()


os.register_at_fork(after_in_child=_reset_msg_ids)


def new_msg_id() -> str:
    """A fresh message id (thread-safe: ``next`` on a count is atomic under the GIL)."""
    return _msg_prefix + "%x" % next(_msg_counter)


def new_key() -> bytes:
    """A fresh random cluster key (hex text as bytes, so it survives JSON)."""
    return os.urandom(32).hex().encode("ascii")


def _frame_bytes(frame: Any) -> bytes:
    """bytes of a small frame, whatever object zmq handed us."""
    if isinstance(frame, bytes):
        return frame
    b = getattr(frame, "bytes", None)  # zmq.Frame
    if b is not None:
        return b
    return bytes(frame)


def _nbytes(buf: Any) -> int:
    if isinstance(buf, (bytes, bytearray)):
        return len(buf)
    if isinstance(buf, memoryview):
        return buf.nbytes
    return memoryview(buf).nbytes


@dataclass(slots=True)
class Message:
    """A decoded, authenticated message.  ``buffers`` are left as received (zero-copy)."""

    header: dict[str, Any]
    parent_header: dict[str, Any]
    metadata: dict[str, Any]
    content: dict[str, Any]
    buffers: list[Any] = field(default_factory=list)
    idents: list[bytes] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        return self.header.get("msg_type", "")

    @property
    def msg_id(self) -> str:
        return self.header.get("msg_id", "")

    @property
    def parent_id(self) -> str:
        return self.parent_header.get("msg_id", "")


class Session:
    """Builds and checks messages for one process.

    Parameters
    ----------
    key:
        The cluster's shared HMAC key.  An empty key disables signing (only for tests of the
        protocol itself; every launcher passes a key).
    session_id:
        Identifies this process's messages (``header["session"]``).
    username:
        Recorded in headers for diagnostics.
    """

    def __init__(
        self,
        key: bytes,
        session_id: str | None = None,
        username: str | None = None,
        digest_history: int = DIGEST_HISTORY,
    ):
        self.key = key
        self.session_id = session_id or new_id()
        self.username = username or os.environ.get("USER", "user")
        self._auth = hmac.new(key, digestmod=hashlib.sha256) if key else None
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()
        self._digest_history = digest_history
        # several threads of one client may check messages (IO thread, a caller waiting on a reply)
        self._seen_lock = threading.Lock()
        # counters of rejected messages, by reason; read by the controller's stats
        self.rejected: dict[str, int] = {"signature": 0, "replay": 0, "malformed": 0}

    # --- building ---------------------------------------------------------------------------

    def header(self, msg_type: str, msg_id: str | None = None) -> dict[str, Any]:
        return {
            "msg_id": msg_id or new_msg_id(),
            "msg_type": msg_type,
            "session": self.session_id,
            "username": self.username,
            "date": time.time(),
            "version": PROTOCOL_VERSION,
        }

    def sign(self, parts: Sequence[bytes], buffers: Sequence[Any] = ()) -> bytes:
        if self._auth is None:
            return b""
        h = self._auth.copy()
        for p in parts:
            h.update(p)
        h.update(_buffer_descriptor(buffers))
        return h.hexdigest().encode("ascii")

    def serialize(
        self,
        msg_type: str,
        content: dict[str, Any] | None = None,
        parent: dict[str, Any] | Message | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: Sequence[Any] = (),
        idents: Sequence[bytes] = (),
        header: dict[str, Any] | None = None,
    ) -> list[Any]:
        """Frames of a new message, ready for ``send_multipart``.

        *parent* may be a header dict or a :class:`Message` (its header is used).
        """
        if header is None:
            header = self.header(msg_type)
        if isinstance(parent, Message):
            parent = parent.header
        parts = [
            json_dumps(header),
            json_dumps(parent or {}),
            json_dumps(metadata or {}),
            json_dumps(content or {}),
        ]
        frames: list[Any] = list(idents)
        frames.append(DELIM)
        frames.append(self.sign(parts, buffers))
        frames.extend(parts)
        frames.extend(buffers)
        return frames

    # --- checking ---------------------------------------------------------------------------

    def split(self, frames: Sequence[Any]) -> tuple[list[bytes], list[Any]]:
        """Split routing identities from the message proper (delimiter dropped)."""
        for i, f in enumerate(frames):
            if _is_small(f) and _frame_bytes(f) == DELIM:
                return [_frame_bytes(x) for x in frames[:i]], list(frames[i + 1 :])
        self.rejected["malformed"] += 1
        raise MalformedMessage("no <IDS|MSG> delimiter in message")

    def verify(self, msg_frames: Sequence[Any]) -> list[bytes]:
        """Check signature and replay guard of the frames after the delimiter.

        Returns the four JSON parts as bytes.  Raises before anything is decoded.
        """
        if len(msg_frames) < 5:
            self.rejected["malformed"] += 1
            raise MalformedMessage(f"message has {len(msg_frames)} frames after the delimiter, need >= 5")
        signature = _frame_bytes(msg_frames[0])
        parts = [_frame_bytes(f) for f in msg_frames[1:5]]
        if self._auth is not None:
            expected = self.sign(parts, msg_frames[5:])
            if not hmac.compare_digest(signature, expected):
                self.rejected["signature"] += 1
                raise InvalidSignature("message signature does not match (wrong key or altered frames)")
            with self._seen_lock:
                if signature in self._seen:
                    self.rejected["replay"] += 1
                    raise ReplayedMessage("message signature seen before (replay)")
                self._remember(signature)
        return parts

    def deserialize(self, frames: Sequence[Any], has_idents: bool = True) -> Message:
        """Authenticate and decode *frames* (as received) into a :class:`Message`."""
        if has_idents:
            idents, rest = self.split(frames)
        else:
            if not frames or _frame_bytes(frames[0]) != DELIM:
                self.rejected["malformed"] += 1
                raise MalformedMessage("message does not start with the <IDS|MSG> delimiter")
            idents, rest = [], list(frames[1:])
        parts = self.verify(rest)
        try:
            header, parent, metadata, content = (json_loads(p) for p in parts)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            self.rejected["malformed"] += 1
            raise MalformedMessage(f"message JSON does not decode: {type(e).__name__}") from None
        if not isinstance(header, dict) or "msg_type" not in header:
            self.rejected["malformed"] += 1
            raise MalformedMessage("message header is not an object with a msg_type")
        if not all(isinstance(p, dict) for p in (parent, metadata, content)):
            self.rejected["malformed"] += 1
            raise MalformedMessage("message parent_header, metadata and content must be JSON objects")
        return Message(header, parent, metadata, content, list(rest[5:]), idents)

    def _remember(self, signature: bytes) -> None:
        self._seen.add(signature)
        self._seen_order.append(signature)
        if len(self._seen_order) > self._digest_history:
            self._seen.discard(self._seen_order.popleft())


def _is_small(frame: Any) -> bool:
    try:
        return len(frame) == len(DELIM)
    except TypeError:
        return False


def _buffer_descriptor(buffers: Iterable[Any]) -> bytes:
    lengths = [_nbytes(b) for b in buffers]
    return b"%d:" % len(lengths) + b",".join(b"%d" % n for n in lengths)


def extract_header(frames_after_delim: Sequence[Any]) -> dict[str, Any]:
    """Decode only the header of already-verified frames (used by forwarding code)."""
    return json_loads(_frame_bytes(frames_after_delim[1]))
