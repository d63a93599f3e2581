"""Message framing and authentication: bytes in, bytes out, no sockets.

Wire layout of one message (a zmq multipart message)::

    [ident, ..., b"<IDS|MSG>", signature, header, parent_header, metadata, content, buffer, ...]

``header``/``parent_header``/``metadata``/``content`` are compact JSON objects.  ``signature`` is the
hex HMAC-SHA256, keyed by the cluster's key, over the four JSON frames, a descriptor of the buffers
(their count and each length), so a buffer cannot be added, dropped or resized without breaking the
signature, and the *contents* of the first buffer and of every buffer smaller than
:data:`SIGNED_BUFFER_LIMIT`.  The first buffer of a message is the pickle stream (the only bytes
unpickling interprets as instructions); larger later buffers are pickle-5 out-of-band data (array
and bytes contents, read as plain bytes), covered by length only: hashing a 1 GiB array would cost
more than sending it, and the per-message ``msg_id`` plus the replay guard stop re-use of a valid
signature.

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

from ipcluster.errors import InvalidSignature, MalformedMessage, ReplayedMessage, StaleMessage

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "1.0"

#: Buffers after the first are hashed whole below this size (the out-of-band threshold of
#: :mod:`ipcluster.protocol.serialize`: a smaller buffer is never out-of-band data).
SIGNED_BUFFER_LIMIT = 64 * 1024
#: How many recent signatures are remembered to reject replays (per receiving Session).
DIGEST_HISTORY = 1 << 16
#: The digest history of a checking-freshness receiver: a client's requests on two connections (its
#: own socket and a blocking call's) may be reordered by at most this many messages.
FRESHNESS_DIGEST_HISTORY = 1 << 17
#: A checking-freshness receiver (the controller) refuses messages dated more than this many seconds
#: before its own clock when it knows nothing newer of the sender (see :class:`Session`).
MAX_MESSAGE_AGE = 600.0
#: Senders (per route) whose horizon a checking-freshness receiver keeps; the oldest is forgotten first.
MAX_SENDERS = 10_000

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


def _hmac_sha256(key: bytes) -> Any:
    """An HMAC-SHA256 object keyed with *key*: OpenSSL's own when there is one (its ``copy``,
    ``update`` and ``hexdigest`` are C calls; the :mod:`hmac` wrapper adds a Python call to each,
    about a third of signing a small message), else :func:`hmac.new`'s."""
    try:
        import _hashlib

        return _hashlib.hmac_new(key, digestmod="sha256")
    except (ImportError, AttributeError, ValueError):  # pragma: no cover - Python built without OpenSSL
        return hmac.new(key, digestmod=hashlib.sha256)


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
    digest_history:
        How many signatures the replay guard remembers.
    freshness:
        Also refuse *stale* messages (:class:`~ipcluster.errors.StaleMessage`), which makes the
        replay guard hold beyond its remembered signatures and across a restart.  For receivers
        that get messages straight from their senders (the controller); not for engines, which
        get load-balanced tasks long after they were signed.

    Freshness: each message's header ``date`` is the sender's clock.  Per ``(route, sender
    session)``, messages arrive in the order they were sent, so a message dated at or before the
    newest one whose signature the guard had to forget is either a replay or was reordered across
    more than ``digest_history`` messages: it is refused.  So is one dated more than ``max_age``
    seconds before this process's clock (senders' clocks must agree with ours that well).
    :meth:`guard_state` / :meth:`restore_guard` carry the per-sender horizons across a restart:
    the restarted receiver refuses everything dated at or before the newest message it had
    accepted of each sender, while messages sent later (even while it was down) pass.
    """

    def __init__(
        self,
        key: bytes,
        session_id: str | None = None,
        username: str | None = None,
        digest_history: int = DIGEST_HISTORY,
        freshness: bool = False,
        max_age: float = MAX_MESSAGE_AGE,
    ):
        self.key = key
        self.session_id = session_id or new_id()
        self.username = username or os.environ.get("USER", "user")
        self._auth = _hmac_sha256(key) if key else None
        # hash(signature) of recent messages: 8 bytes of a keyed hash of an HMAC (a false match is
        # as unlikely as guessing a 64-bit key) in a quarter of the memory of the signatures
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._digest_history = digest_history
        # several threads of one client may check messages (IO thread, a caller waiting on a reply)
        self._seen_lock = threading.Lock()
        # counters of rejected messages, by reason; read by the controller's stats
        self.rejected: dict[str, int] = {"signature": 0, "replay": 0, "stale": 0, "malformed": 0}
        self.freshness = freshness
        self.max_age = max_age
        # freshness only: (route, sender session) -> date at or before which its messages are
        # refused, and -> date of the newest message accepted; both at most MAX_SENDERS long
        self._horizon: dict[tuple[str, str], float] = {}
        self._latest: dict[tuple[str, str], float] = {}
        self._dated: deque[tuple[str, str, float]] = deque()  # (route, sender, date) beside _seen_order

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
        h.update(b"".join(parts))  # (one C call: the same digest as an update per part)
        if len(buffers) == 1:  # the common case (a pickle stream alone), without the lists
            b = buffers[0]
            h.update(b"1:%d" % (len(b) if b.__class__ is bytes else _nbytes(b)))
            h.update(b)
            return h.hexdigest().encode("ascii")
        lengths = [_nbytes(b) for b in buffers]
        h.update(b"%d:" % len(lengths) + b",".join(b"%d" % n for n in lengths))
        for i, n in enumerate(lengths):
            if i == 0 or n < SIGNED_BUFFER_LIMIT:
                h.update(buffers[i])
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

    def verify(self, msg_frames: Sequence[Any], route: str = "", presigned: bool = False) -> list[bytes]:
        """Check signature and replay guard of the frames after the delimiter.

        Returns the four JSON parts as bytes.  Raises before anything is decoded (with
        ``freshness``, before anything but the header).  *presigned*: the frames are a part of a
        batch whose own signature, already checked, covers their bytes (``ipcluster.protocol.batch``):
        their signature is not recomputed, but it still enters the replay guard.
        """
        if self.freshness:
            return self.verify_header(msg_frames, route, presigned)[0]
        signature, parts = self._signed_parts(msg_frames, presigned)
        if self._auth is not None:
            self._check_replay(signature)
        return parts

    def _check_replay(self, signature: bytes) -> None:
        """Refuse a signature seen before; remember this one."""
        with self._seen_lock:
            digest = hash(signature)
            if digest in self._seen:
                self.rejected["replay"] += 1
                raise ReplayedMessage("message signature seen before (replay)")
            self._remember(digest)

    def _signed_parts(self, msg_frames: Sequence[Any], presigned: bool = False) -> tuple[bytes, list[bytes]]:
        """The signature and the four JSON parts, once the signature checks out (with a key;
        *presigned*: see :meth:`verify`)."""
        if len(msg_frames) < 5:
            self.rejected["malformed"] += 1
            raise MalformedMessage(f"message has {len(msg_frames)} frames after the delimiter, need >= 5")
        signature = _frame_bytes(msg_frames[0])
        parts = [_frame_bytes(f) for f in msg_frames[1:5]]
        if self._auth is not None and not presigned and \
                not hmac.compare_digest(signature, self.sign(parts, msg_frames[5:])):
            self.rejected["signature"] += 1
            raise InvalidSignature("message signature does not match (wrong key or altered frames)")
        return signature, parts

    def verify_header(self, msg_frames: Sequence[Any], route: str = "",
                      presigned: bool = False) -> tuple[list[bytes], dict[str, Any]]:
        """:meth:`verify`, and the decoded header (decoded once, after the signature check).

        *route* names where the message came from (e.g. ``"mux"``): freshness is judged per route
        and sender, since messages keep their order only within one connection.
        """
        signature, parts = self._signed_parts(msg_frames, presigned)
        try:
            header = json_loads(parts[0])
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            self.rejected["malformed"] += 1
            raise MalformedMessage(f"message header does not decode: {type(e).__name__}") from None
        if not isinstance(header, dict):
            self.rejected["malformed"] += 1
            raise MalformedMessage("message header is not a JSON object")
        if self._auth is None:
            return parts, header
        if not self.freshness:
            self._check_replay(signature)
            return parts, header
        date = header.get("date")
        if date.__class__ is not float and (date.__class__ is not int or date is True or date is False):
            self.rejected["malformed"] += 1
            raise MalformedMessage("message header has no numeric date")
        sender = (route, str(header.get("session", "")))
        with self._seen_lock:
            horizon = self._horizon.get(sender)
            if (horizon is not None and date <= horizon) or date < time.time() - self.max_age:
                self.rejected["stale"] += 1
                raise StaleMessage("message is dated before what the replay guard can check (stale)")
            digest = hash(signature)
            if digest in self._seen:
                self.rejected["replay"] += 1
                raise ReplayedMessage("message signature seen before (replay)")
            latest = self._latest
            if date > latest.get(sender, 0.0):
                if sender not in latest and len(latest) >= MAX_SENDERS:
                    del latest[next(iter(latest))]
                latest[sender] = date
            self._dated.append((route, sender[1], date))
            self._remember(digest)
        return parts, header

    # --- the replay guard across restarts ---------------------------------------------------

    def guard_state(self) -> list[list[Any]]:
        """``[[route, sender session, date], ...]``: with freshness, the date at or before which each
        sender's messages must be refused by a successor of this receiver (see :meth:`restore_guard`)."""
        with self._seen_lock:
            merged = dict(self._horizon)
            for sender, date in self._latest.items():
                if date > merged.get(sender, 0.0):
                    merged[sender] = date
        return [[route, session, date] for (route, session), date in merged.items()]

    def restore_guard(self, state: Iterable[Sequence[Any]]) -> int:
        """Adopt a predecessor's :meth:`guard_state` (entries that are not ``[str, str, number]`` are
        skipped); returns how many senders were restored."""
        n = 0
        with self._seen_lock:
            for entry in state:
                if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                    continue
                route, session, date = entry
                if not (isinstance(route, str) and isinstance(session, str) and isinstance(date, (int, float))):
                    continue
                self._raise_horizon((route, session), float(date))
                n += 1
        return n

    def guard_sizes(self) -> dict[str, int]:
        """How much the replay guard holds (all bounded: see ``digest_history`` and MAX_SENDERS)."""
        return {"digests": len(self._seen), "horizons": len(self._horizon), "senders": len(self._latest)}

    def deserialize(self, frames: Sequence[Any], has_idents: bool = True, route: str = "",
                    presigned: bool = False) -> Message:
        """Authenticate and decode *frames* (as received) into a :class:`Message` (*presigned*: see
        :meth:`verify`)."""
        if has_idents:
            idents, rest = self.split(frames)
        else:
            if not frames or _frame_bytes(frames[0]) != DELIM:
                self.rejected["malformed"] += 1
                raise MalformedMessage("message does not start with the <IDS|MSG> delimiter")
            idents, rest = [], list(frames[1:])
        if self.freshness:
            parts, header = self.verify_header(rest, route, presigned)
            first = 1
        else:
            parts, first = self.verify(rest, presigned=presigned), 0
        try:
            decoded = [json_loads(p) for p in parts[first:]]
            if first:
                parent, metadata, content = decoded
            else:
                header, parent, metadata, content = decoded
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

    def check_freshness(self, max_age: float = MAX_MESSAGE_AGE, digest_history: int = FRESHNESS_DIGEST_HISTORY) -> None:
        """Turn on the freshness checks (see the class docstring); call before receiving anything."""
        self.freshness, self.max_age, self._digest_history = True, max_age, digest_history

    def _remember(self, digest: int) -> None:
        self._seen.add(digest)
        self._seen_order.append(digest)
        if len(self._seen_order) > self._digest_history:
            self._seen.discard(self._seen_order.popleft())
            if self._dated:  # freshness: the forgotten signature's sender may not go below its date again
                route, session, date = self._dated.popleft()
                self._raise_horizon((route, session), date)

    def _raise_horizon(self, sender: tuple[str, str], date: float) -> None:
        horizons = self._horizon
        old = horizons.get(sender)
        if old is None:
            if len(horizons) >= MAX_SENDERS:
                del horizons[next(iter(horizons))]  # its messages now fall back to max_age
            horizons[sender] = date
        elif date > old:
            horizons[sender] = date


def _is_small(frame: Any) -> bool:
    try:
        return len(frame) == len(DELIM)
    except TypeError:
        return False


def extract_header(frames_after_delim: Sequence[Any]) -> dict[str, Any]:
    """Decode only the header of already-verified frames (used by forwarding code)."""
    return json_loads(_frame_bytes(frames_after_delim[1]))
