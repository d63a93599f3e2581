"""How task records keep replies: small ones as one blob (the store's frame format), large ones as
received frames; what ``reply()`` and the store give back is the same either way."""

from __future__ import annotations

import pytest
import zmq

from controller.frameblob import MalformedBlob, pack_frames, unpack_frames
from controller.records import COMPACT_BELOW, TaskRecords, keep
from controller.store import TaskStore

pytestmark = pytest.mark.timeout(20)


def _reply(payload: bytes) -> list[bytes]:
    return [b"<IDS|MSG>", b"sig", b'{"msg_type": "apply_reply"}', b"{}", b"{}", b'{"status": "ok"}', payload]


def test_a_small_reply_is_kept_as_one_blob_and_read_back_as_its_frames():
    recs = TaskRecords()
    recs.submitted("m", "c", "apply_request", 0.0)
    frames = [zmq.Frame(f) for f in _reply(b"R" * 100)]  # as received: zmq frames
    recs.finished("m", "ok", 1.0, reply=frames, buffers=frames[6:])
    kept = recs.kept_reply("m")
    assert isinstance(kept, bytes) and kept == pack_frames(_reply(b"R" * 100))
    assert recs.reply("m") == _reply(b"R" * 100)
    assert recs.get("m").result_bytes == 100 and recs.result_bytes == 100


def test_a_reply_with_a_large_frame_keeps_that_frame_as_received():
    big = zmq.Frame(b"x" * COMPACT_BELOW)
    frames = [*_reply(b"")[:6], big]
    kept = keep(frames)
    assert isinstance(kept, list) and kept[6] is big and kept[:6] == _reply(b"")[:6]


def test_frames_whose_length_is_not_their_byte_count_are_not_packed():
    odd = memoryview(b"abcdefgh").cast("I")  # len() 2, 8 bytes
    kept = keep([b"<IDS|MSG>", odd])
    assert isinstance(kept, list) and kept[1] == b"abcdefgh"


def test_the_store_writes_a_kept_blob_and_restores_the_frames(tmp_path):
    db = tmp_path / "t.db"
    recs = TaskRecords()
    store = TaskStore(db)
    store.attach(recs.kept_reply)
    recs.store = store
    recs.submitted("small", "c", "apply_request", 0.0)
    recs.submitted("large", "c", "apply_request", 0.0)
    recs.finished("small", "ok", 1.0, reply=_reply(b"s"), buffers=[b"s"])
    large = _reply(b"L" * COMPACT_BELOW)
    recs.finished("large", "ok", 2.0, reply=large, buffers=large[6:])
    assert isinstance(recs.kept_reply("small"), bytes) and isinstance(recs.kept_reply("large"), list)
    store.close()
    loaded = TaskStore(db).load()
    assert loaded.replies == {"small": _reply(b"s"), "large": large}


def test_a_malformed_blob_is_refused():
    with pytest.raises(MalformedBlob):
        unpack_frames(pack_frames([b"abc"])[:-1])
