"""The batch wire format (``ipcluster.protocol.batch``) and the controller's outboxes."""

from __future__ import annotations

from typing import Any

import pytest
import zmq

from controller.outbox import ClientOutbox, EngineOutbox
from ipcluster.errors import InvalidSignature, MalformedMessage, ReplayedMessage
from ipcluster.protocol import batch as batching
from ipcluster.protocol.session import DELIM, Session

KEY = b"k" * 32


def _msg(session: Session, i: int, size: int = 10, ident: bytes = b"scheduler") -> list[Any]:
    return session.serialize("apply_request", {"i": i}, metadata={"n": i}, buffers=[b"x" * size], idents=[ident])


def test_pack_unpack_round_trip_keeps_every_frame_and_order():
    s = Session(KEY)
    msgs = [_msg(s, i, size=i * 3) for i in range(5)]
    frames = batching.pack(s, msgs, [batching.BATCH_TARGET])
    assert frames[0] == batching.BATCH_TARGET and len(frames) == 8  # ident, delimiter, 5 signed frames, blob
    receiver = Session(KEY)
    outer = receiver.deserialize(frames)
    parts = batching.unpack(outer)
    assert parts == [[bytes(f) for f in m] for m in msgs]
    for i, part in enumerate(parts):
        inner = receiver.deserialize(part, presigned=True)
        assert inner.content == {"i": i} and inner.buffers == [b"x" * (i * 3)] and inner.idents == [b"scheduler"]


def test_zmq_frames_and_memoryviews_can_be_packed():
    s = Session(KEY)
    m = _msg(s, 1)
    mixed = [m[0], zmq.Frame(m[1]), m[2], memoryview(m[3]), *m[4:]]
    parts = batching.unpack(Session(KEY).deserialize(batching.pack(s, [mixed, m])))
    assert parts == [[bytes(f) for f in m]] * 2


def test_a_part_is_still_replay_guarded():
    """A part's signature is not recomputed, but it enters the replay guard: the same message sent
    alone later (or in another batch) is refused."""
    s = Session(KEY)
    m = _msg(s, 1)
    receiver = Session(KEY)
    part = batching.unpack(receiver.deserialize(batching.pack(s, [m, _msg(s, 2)])))[0]
    receiver.deserialize(part, presigned=True)
    with pytest.raises(ReplayedMessage):
        receiver.deserialize(m)
    again = receiver.deserialize(batching.pack(s, [m, _msg(s, 3)]))  # a new batch, but a part seen before
    with pytest.raises(ReplayedMessage):
        receiver.deserialize(batching.unpack(again)[0], presigned=True)


def test_presigned_parts_of_a_freshness_checking_receiver_are_checked_for_staleness():
    s = Session(KEY)
    old = s.serialize("apply_request", {}, header=dict(s.header("apply_request"), date=1.0))
    receiver = Session(KEY)
    receiver.check_freshness(max_age=60)
    from ipcluster.errors import StaleMessage

    with pytest.raises(StaleMessage):
        receiver.deserialize(old, presigned=True, route="mux")


def test_altered_blob_or_descriptor_fails_the_batch_signature():
    s = Session(KEY)
    frames = batching.pack(s, [_msg(s, 1), _msg(s, 2)])
    tampered = list(frames)
    tampered[-1] = tampered[-1][:-1] + b"y"
    with pytest.raises(InvalidSignature):
        Session(KEY).deserialize(tampered)
    with pytest.raises(InvalidSignature):
        Session(b"other" * 8).deserialize(frames)


@pytest.mark.parametrize("parts", [
    None, [], "x", [[1, 2, 3]], [[9, 1, 1, 1, 1, 1, 1]], [[1, 1, 1, 1, 1, 1, -1]], [[1, 1, 1, 1, 1, 1, "1"]],
    [[1, 1, 1, 1, 1, 1.5, 1]], [[1, 1, 1, 1, 1, 1, None]], [[1.0, 1, 1, 1, 1, 1, 1]], ["1234567"],
    [[1, 10**9, 1, 1, 1, 1, 1]], [[0] * 7] * (batching.MAX_PARTS + 1),
])
def test_descriptors_that_do_not_fit_the_blob_are_malformed(parts):
    s = Session(KEY)
    blob = batching.pack(s, [_msg(s, 1), _msg(s, 2)])[-1]
    frames = s.serialize(batching.BATCH, {"parts": parts}, buffers=[blob])
    with pytest.raises(MalformedMessage):
        batching.unpack(Session(KEY).deserialize(frames))


def test_a_descriptor_covering_less_than_the_blob_is_malformed():
    s = Session(KEY)
    frames = batching.pack(s, [_msg(s, 1), _msg(s, 2)])
    msg = Session(KEY).deserialize(frames)
    msg.content["parts"] = msg.content["parts"][:1]
    with pytest.raises(MalformedMessage, match="cover"):
        batching.unpack(msg)
    msg.content["parts"] = []
    with pytest.raises(MalformedMessage):
        batching.unpack(msg)


def test_other_message_types_are_not_batches():
    s = Session(KEY)
    with pytest.raises(MalformedMessage, match="batch"):
        batching.unpack(Session(KEY).deserialize(_msg(s, 1)))


def test_packer_batches_runs_of_small_messages_and_leaves_the_rest_alone():
    s = Session(KEY)
    small = [_msg(s, i) for i in range(5)]
    big = _msg(s, 99, size=batching.PART_LIMIT)
    out = batching.pack_queue(s, [small[0], small[1], big, small[2], small[3], small[4]], [b"b"])
    assert len(out) == 3
    assert out[1] is big
    r = Session(KEY)
    assert batching.unpack(r.deserialize(out[0])) == [[bytes(f) for f in m] for m in small[:2]]
    assert batching.unpack(r.deserialize(out[2])) == [[bytes(f) for f in m] for m in small[2:]]
    # one message alone is sent unchanged; a run of one between large ones too
    assert batching.pack_queue(s, [small[0]]) == [small[0]]
    assert batching.pack_queue(s, [big, small[0], big]) == [big, small[0], big]


def test_packer_respects_the_part_and_byte_limits():
    s = Session(KEY)
    many = [_msg(s, i) for i in range(40)]
    out = batching.pack_queue(s, many, max_parts=16)
    assert [len(batching.unpack(Session(KEY).deserialize(o))) for o in out] == [16, 16, 8]
    sized = [_msg(s, i, size=8000) for i in range(20)]
    out = batching.pack_queue(s, sized)
    lengths = [len(o[-1]) for o in out]
    assert all(n <= batching.MAX_BYTES for n in lengths) and len(out) > 1
    assert sum(len(batching.unpack(Session(KEY).deserialize(o))) for o in out) == 20


class _Sock:
    """Stands in for a ROUTER_MANDATORY socket: records sends; unreachable peers raise."""

    def __init__(self, unreachable: set[bytes] = set()):
        self.sent: list[list[Any]] = []
        self.unreachable = unreachable

    def send(self, frames: list[Any]) -> None:
        if bytes(frames[0]) in self.unreachable:
            raise zmq.ZMQError(zmq.EHOSTUNREACH)
        self.sent.append(list(frames))


def _to_engine(s: Session, engine: bytes, i: int) -> list[Any]:
    return [engine, *_msg(s, i, ident=b"client")]


def test_engine_outbox_sends_at_once_outside_a_block_and_per_engine_batches_inside():
    s = Session(KEY)
    sock = _Sock()
    box = EngineOutbox(s, sock.send)
    box.send(_to_engine(s, b"e1", 0))
    assert len(sock.sent) == 1  # nothing waits outside a block
    with box:
        for i in range(1, 6):
            box.send(_to_engine(s, b"e1" if i % 2 else b"e2", i))
        assert len(sock.sent) == 1
    assert len(sock.sent) == 3 and box.batches_sent == 2
    r = Session(KEY)
    by_engine = {f[0]: [r.deserialize(p, presigned=True).content["i"] for p in batching.unpack(r.deserialize(f[1:]))]
                 for f in sock.sent[1:]}
    assert by_engine == {b"e1": [1, 3, 5], b"e2": [2, 4]}
    r = Session(KEY)
    assert all(p[0] == b"client" for f in sock.sent[1:] for p in batching.unpack(r.deserialize(f[1:])))


def test_engine_outbox_sends_one_by_one_to_an_engine_that_does_not_take_batches():
    s = Session(KEY)
    sock = _Sock()
    box = EngineOutbox(s, sock.send, takes_batches=lambda engine: engine == b"new")
    msgs = [_to_engine(s, b"old" if i < 3 else b"new", i) for i in range(6)]
    with box:
        for m in msgs:
            box.send(m)
    assert sock.sent[:3] == msgs[:3]  # each alone, unchanged, in order
    assert len(sock.sent) == 4 and box.batches_sent == 1 and sock.sent[3][0] == b"new"


def test_engine_outbox_reports_each_message_an_unreachable_engine_did_not_get():
    s = Session(KEY)
    sock = _Sock({b"gone"})
    box = EngineOutbox(s, sock.send)
    failed: list[int] = []
    with box:
        for i in range(4):
            box.send(_to_engine(s, b"gone" if i != 2 else b"here", i), lambda i=i: failed.append(i))
    assert failed == [0, 1, 3]
    assert len(sock.sent) == 1 and sock.sent[0][0] == b"here"
    box.send(_to_engine(s, b"gone", 9), lambda: failed.append(9))
    assert failed[-1] == 9


def test_client_outbox_batches_only_for_clients_that_sent_batches():
    s = Session(KEY)
    sock = _Sock()
    box = ClientOutbox(s, sock)
    box.takes_batches(b"c1")
    with box:
        for i in range(3):
            box.send([b"c1", *_msg(s, i, ident=b"engine")])
            box.send([b"c2", *_msg(s, i, ident=b"engine")])
        assert [f[0] for f in sock.sent] == [b"c2"] * 3  # c2 never sent a batch: at once, unchanged
    assert len(sock.sent) == 4 and sock.sent[3][:2] == [b"c1", batching.BATCH_TARGET]
    parts = batching.unpack(Session(KEY).deserialize(sock.sent[3][1:]))
    assert [p[0] for p in parts] == [b"engine"] * 3 and all(p[1] == DELIM for p in parts)


def test_an_engine_reports_the_requests_of_a_held_batch_by_their_own_ids():
    """An engine that registers again lists the requests it holds: each part of a held batch."""
    from engines.engine import _peek_msg_ids

    s = Session(KEY)
    sock = _Sock()
    box = EngineOutbox(s, sock.send)
    msgs = [_to_engine(s, b"e1", i) for i in range(3)]
    with box:
        for m in msgs:
            box.send(list(m))
    held = [zmq.Frame(bytes(f)) for f in sock.sent[0][1:]]  # as the engine's DEALER receives it
    alone = [zmq.Frame(bytes(f)) for f in msgs[0][1:]]
    ids = [s.deserialize(m[1:]).msg_id for m in msgs]
    assert _peek_msg_ids(held) == ids
    assert _peek_msg_ids(alone) == ids[:1]
    assert _peek_msg_ids([zmq.Frame(b"junk")]) == []


def test_held_replies_go_together_and_never_wait_long():
    from engines.replyhold import HeldReplies

    s = Session(KEY)
    sent: list[list[Any]] = []
    arrived = __import__("threading").Event()

    def send(frames: list[Any]) -> None:
        sent.append(frames)
        arrived.set()

    held = HeldReplies(s, send, hold=0.05)
    replies = [_msg(s, i, ident=b"client") for i in range(3)]
    for r in replies:
        assert held.hold(r)
    assert not held.hold(_msg(s, 9, size=batching.PART_LIMIT, ident=b"client"))  # large: not held
    assert sent == []
    # nobody flushes: the holding thread sends them once they are due
    assert arrived.wait(10)
    assert len(sent) == 1 and sent[0][0] == DELIM  # one batch, addressed to the controller itself
    parts = batching.unpack(Session(KEY).deserialize(sent[0], has_idents=False))
    assert parts == [[bytes(f) for f in r] for r in replies]
    # a lone held reply goes as it is; flush() sends at once
    held.hold(replies[0])
    held.flush()
    assert sent[-1] is replies[0] and not held.replies
