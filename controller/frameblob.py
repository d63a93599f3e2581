"""A message's frames as one ``bytes`` blob: ``<count:u32><len:u64 * count><frame bytes...>``.

The task store writes kept replies in this form, and the task records keep small replies in it
too: one object instead of a list of small ones, written to the store as it is.
"""

from __future__ import annotations

import struct
from typing import Any, Sequence


class MalformedBlob(ValueError):
    """A blob whose header does not describe its bytes exactly."""


_HEADS: dict[int, struct.Struct] = {}


def _head(n: int) -> struct.Struct:
    st = _HEADS.get(n)
    if st is None:
        st = struct.Struct(f"<I{n}Q")
        if len(_HEADS) < 64:  # (replies have a few frames: a handful of sizes in practice)
            _HEADS[n] = st
    return st


def pack_frames(frames: Sequence[Any]) -> bytes:
    """One blob from a message's frames (bytes, or zmq.Frame; nothing is decoded)."""
    n = len(frames)
    return b"".join([_head(n).pack(n, *map(len, frames)), *frames])


def unpack_frames(blob: bytes) -> list[bytes]:
    """The frames :func:`pack_frames` packed.  Raises :class:`MalformedBlob` for a malformed blob."""
    try:
        (n,) = struct.unpack_from("<I", blob, 0)
        lens = struct.unpack_from(f"<{n}Q", blob, 4)
    except struct.error as e:
        raise MalformedBlob(f"malformed reply blob: {e}") from None
    pos = 4 + 8 * n
    if pos + sum(lens) != len(blob):
        raise MalformedBlob("malformed reply blob: frame lengths do not add up")
    out = []
    for length in lens:
        out.append(bytes(blob[pos:pos + length]))
        pos += length
    return out
