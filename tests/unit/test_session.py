"""Message framing and authentication (``ipcluster.protocol.session``): bytes in, bytes out."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import zmq

from ipcluster.errors import (
    InvalidSignature,
    MalformedMessage,
    ProtocolError,
    ReplayedMessage,
)
from ipcluster.protocol import messages
from ipcluster.protocol.serialize import deserialize_object, serialize_object
from ipcluster.protocol.session import (
    DELIM,
    PROTOCOL_VERSION,
    Message,
    Session,
    extract_header,
    new_id,
    new_key,
    new_msg_id,
)

pytestmark = pytest.mark.timeout(10)

KEY = b"0123456789abcdef-test-key"

# Index of each part in frames produced without idents: [DELIM, sig, header, parent, metadata, content, *buffers]
SIG, HEADER, PARENT, METADATA, CONTENT, FIRST_BUFFER = 1, 2, 3, 4, 5, 6


@pytest.fixture
def sender() -> Session:
    return Session(KEY, username="alice")


@pytest.fixture
def receiver() -> Session:
    return Session(KEY)


def as_received(frames: list) -> list[bytes]:
    """What a peer gets off the wire with ``copy=True``: every frame as bytes."""
    return [bytes(f) if not isinstance(f, bytes) else f for f in frames]


def as_zmq_frames(frames: list) -> list[zmq.Frame]:
    """What a peer gets off the wire with ``copy=False`` (no socket involved)."""
    return [zmq.Frame(bytes(f)) for f in frames]


def signed_parts(session: Session, parts: list[bytes], buffers: list = ()) -> list:
    """Frames of a message whose JSON parts are arbitrary bytes but correctly signed."""
    return [DELIM, session.sign(parts, buffers), *parts, *buffers]


def rejected(session: Session) -> dict[str, int]:
    return dict(session.rejected)


# --- ids and keys -------------------------------------------------------------------------------


def test_new_id_and_new_key_are_fresh_hex():
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    k1, k2 = new_key(), new_key()
    assert k1 != k2
    assert isinstance(k1, bytes) and re.fullmatch(rb"[0-9a-f]{64}", k1)


def test_msg_ids_are_unique_per_process_and_after_fork():
    ids = [new_msg_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    prefix = ids[0].split("-")[0]
    assert all(i.startswith(prefix + "-") for i in ids)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its next id and exits without running pytest's teardown
        os.write(w, new_msg_id().encode())
        os._exit(0)
    os.close(w)
    child_id = os.read(r, 100).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert child_id.split("-")[0] != prefix  # not the parent's sequence continued twice


# --- round trip ---------------------------------------------------------------------------------


def test_header_fields(sender):
    h = sender.header("apply_request")
    assert set(h) == {"msg_id", "msg_type", "session", "username", "date", "version"}
    assert h["msg_type"] == "apply_request"
    assert h["session"] == sender.session_id
    assert h["username"] == "alice"
    assert isinstance(h["date"], float)
    assert h["version"] == PROTOCOL_VERSION
    assert sender.header("x", msg_id="fixed")["msg_id"] == "fixed"
    assert sender.header("x")["msg_id"] != sender.header("x")["msg_id"]


def test_round_trip_all_parts(sender, receiver):
    parent = sender.header("execute_request")
    content = {"code": "print('héllo ✓')", "silent": False, "nested": {"a": [1, 2.5, None, True]}}
    metadata = {"engine_id": 3, "started": 1.5}
    buffers = [b"first buffer", b"", bytes(range(256)) * 10]
    frames = sender.serialize(
        "execute_reply", content=content, parent=parent, metadata=metadata, buffers=buffers,
        idents=[b"client-1", b"engine-uuid"],
    )
    assert frames[:3] == [b"client-1", b"engine-uuid", DELIM]

    msg = receiver.deserialize(as_received(frames))

    assert isinstance(msg, Message)
    assert msg.idents == [b"client-1", b"engine-uuid"]
    assert msg.header["msg_type"] == "execute_reply"
    assert msg.header["session"] == sender.session_id
    assert msg.parent_header == parent
    assert msg.metadata == metadata
    assert msg.content == content
    assert [bytes(b) for b in msg.buffers] == buffers


def test_round_trip_with_zmq_frames_and_no_idents(sender, receiver):
    frames = sender.serialize("stream", content={"name": "stdout", "text": "hi"}, buffers=[b"x" * 100])
    assert frames[0] == DELIM
    msg = receiver.deserialize(as_zmq_frames(frames), has_idents=False)
    assert msg.idents == []
    assert msg.content == {"name": "stdout", "text": "hi"}
    assert isinstance(msg.buffers[0], zmq.Frame)  # left as received: zero-copy
    assert msg.buffers[0].bytes == b"x" * 100


def test_has_idents_false_requires_leading_delimiter(sender, receiver):
    frames = sender.serialize("x", idents=[b"someone"])
    with pytest.raises(MalformedMessage):
        receiver.deserialize(frames, has_idents=False)
    assert receiver.rejected["malformed"] == 1


def test_defaults_are_empty_objects(sender, receiver):
    msg = receiver.deserialize(sender.serialize("connection_request"))
    assert msg.parent_header == {}
    assert msg.metadata == {}
    assert msg.content == {}
    assert msg.buffers == []
    assert msg.idents == []


def test_parent_may_be_a_message(sender, receiver):
    request = receiver.deserialize(sender.serialize("apply_request"))
    reply_frames = receiver.serialize("apply_reply", content={"status": "ok"}, parent=request)
    reply = Session(KEY).deserialize(reply_frames)
    assert reply.parent_header == request.header
    assert reply.parent_id == request.msg_id


def test_explicit_header_is_used(sender, receiver):
    header = sender.header("apply_request", msg_id="my-id")
    msg = receiver.deserialize(sender.serialize("ignored", header=header))
    assert msg.header == header
    assert msg.msg_type == "apply_request"


def test_message_properties(sender, receiver):
    parent = sender.header("apply_request")
    msg = receiver.deserialize(sender.serialize("apply_reply", parent=parent))
    assert msg.msg_type == "apply_reply"
    assert msg.msg_id == msg.header["msg_id"]
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", msg.msg_id)
    assert msg.parent_id == parent["msg_id"]
    assert msg.parent_id != msg.msg_id

    bare = Message(header={}, parent_header={}, metadata={}, content={})
    assert (bare.msg_type, bare.msg_id, bare.parent_id) == ("", "", "")
    assert bare.buffers == [] and bare.idents == []
    # the defaults are not shared between instances
    bare.buffers.append(b"x")
    assert Message({}, {}, {}, {}).buffers == []


def test_json_frames_are_compact_utf8(sender):
    frames = sender.serialize("x", content={"a": [1, 2], "t": "é"})
    assert frames[CONTENT] == '{"a":[1,2],"t":"é"}'.encode("utf8")


def test_extract_header_reads_only_the_header(sender):
    frames = sender.serialize("queue_status_request", content={"targets": None})
    header = extract_header(as_zmq_frames(frames[1:]))
    assert header["msg_type"] == "queue_status_request"
    assert header == json.loads(frames[HEADER])


def test_numpy_buffers_signed_by_byte_length(sender, receiver):
    # The sender passes typed buffers (itemsize 8); the receiver gets raw bytes.  The buffer
    # descriptor must count bytes on both sides or every such message would be rejected.
    arr = np.arange(1000, dtype=np.float64)
    frames = sender.serialize("x", buffers=[arr, memoryview(arr)])
    msg = receiver.deserialize(as_received(frames))
    assert [len(b) for b in msg.buffers] == [arr.nbytes, arr.nbytes]
    np.testing.assert_array_equal(np.frombuffer(msg.buffers[0], dtype=np.float64), arr)


def test_full_path_object_to_frames_and_back(sender, receiver):
    arr = np.arange(100_000, dtype=np.int64).reshape(1000, 100)
    obj = {"array": arr, "f": lambda x: x * 2}
    frames = sender.serialize("apply_reply", content={"status": "ok"}, buffers=serialize_object(obj))
    assert len(frames) > FIRST_BUFFER + 1  # the array went out-of-band

    msg = receiver.deserialize(as_zmq_frames(frames), has_idents=False)
    out = deserialize_object(msg.buffers)

    np.testing.assert_array_equal(out["array"], arr)
    assert out["array"].flags.writeable
    assert out["f"](21) == 42


# --- signature ----------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [HEADER, PARENT, METADATA, CONTENT], ids=["header", "parent", "metadata", "content"])
def test_altering_any_json_frame_breaks_the_signature(sender, receiver, index):
    frames = sender.serialize(
        "apply_request", content={"a": 1}, parent=sender.header("p"), metadata={"m": 2}, buffers=[b"buf"]
    )
    doc = json.loads(frames[index])
    doc["injected"] = True  # still valid JSON, so only the signature can catch it
    frames[index] = json.dumps(doc).encode()
    with pytest.raises(InvalidSignature):
        receiver.deserialize(frames)
    assert rejected(receiver) == {"signature": 1, "replay": 0, "stale": 0, "malformed": 0}


def test_swapping_json_frames_breaks_the_signature(sender, receiver):
    frames = sender.serialize("x", content={"a": 1}, metadata={"b": 2})
    frames[METADATA], frames[CONTENT] = frames[CONTENT], frames[METADATA]
    with pytest.raises(InvalidSignature):
        receiver.deserialize(frames)


def test_altered_signature_is_rejected(sender, receiver):
    frames = sender.serialize("x")
    sig = frames[SIG]
    frames[SIG] = (b"0" if sig[:1] != b"0" else b"1") + sig[1:]
    with pytest.raises(InvalidSignature):
        receiver.deserialize(frames)
    frames[SIG] = b""
    with pytest.raises(InvalidSignature):
        receiver.deserialize(frames)
    assert receiver.rejected["signature"] == 2


def _buffer_tamperings():
    return {
        "add": lambda bufs: bufs + [b"extra"],
        "add-empty": lambda bufs: bufs + [b""],
        "drop-last": lambda bufs: bufs[:-1],
        "drop-first": lambda bufs: bufs[1:],
        "drop-all": lambda bufs: [],
        "grow": lambda bufs: [bufs[0] + b"!", *bufs[1:]],
        "shrink": lambda bufs: [bufs[0], bufs[1][:-1], bufs[2]],
        "reorder": lambda bufs: [bufs[1], bufs[0], bufs[2]],
        "move-bytes-between": lambda bufs: [bufs[0] + bufs[1][:1], bufs[1][1:], bufs[2]],
        "merge": lambda bufs: [bufs[0] + bufs[1], bufs[2]],
        "split": lambda bufs: [bufs[0][:2], bufs[0][2:], bufs[1], bufs[2]],
    }


@pytest.mark.parametrize("how", list(_buffer_tamperings()))
def test_buffer_count_and_lengths_are_signed(sender, receiver, how):
    buffers = [b"abcdef", b"0123456789", b"xyz" * 1000]
    frames = sender.serialize("apply_request", buffers=buffers)
    head, bufs = frames[:FIRST_BUFFER], frames[FIRST_BUFFER:]
    tampered = _buffer_tamperings()[how](list(bufs))
    assert [len(b) for b in tampered] != [len(b) for b in bufs]
    with pytest.raises(InvalidSignature):
        receiver.deserialize(head + tampered)
    assert rejected(receiver) == {"signature": 1, "replay": 0, "stale": 0, "malformed": 0}


def test_untampered_buffers_are_accepted(sender, receiver):
    # control for the tampering tests above
    buffers = [b"abcdef", b"0123456789", b"xyz" * 1000]
    msg = receiver.deserialize(sender.serialize("apply_request", buffers=buffers))
    assert [bytes(b) for b in msg.buffers] == buffers


def test_wrong_key_is_rejected(sender):
    frames = sender.serialize("x", content={"a": 1})
    other = Session(b"another key")
    with pytest.raises(InvalidSignature):
        other.deserialize(frames)
    assert other.rejected["signature"] == 1
    # and the right key accepts the very same frames
    assert Session(KEY).deserialize(frames).content == {"a": 1}


def test_unsigned_message_is_rejected_by_a_keyed_session(receiver):
    frames = Session(b"").serialize("x")
    assert frames[SIG] == b""
    with pytest.raises(InvalidSignature):
        receiver.deserialize(frames)


def test_signature_checked_before_json_is_decoded(receiver):
    # bad signature AND garbage JSON: it must be the signature that rejects it
    frames = [DELIM, b"00" * 32, b"\xff not json", b"{", b"[", b"}"]
    with pytest.raises(InvalidSignature):
        receiver.deserialize(frames)
    assert rejected(receiver) == {"signature": 1, "replay": 0, "stale": 0, "malformed": 0}


def test_idents_are_not_signed(sender, receiver):
    # routers rewrite idents; that must not invalidate the message
    frames = sender.serialize("x", idents=[b"client"])
    frames[0] = b"engine"
    assert receiver.deserialize(frames).idents == [b"engine"]


def test_rejection_does_not_poison_the_session(sender, receiver):
    bad = sender.serialize("x", content={"a": 1})
    bad[CONTENT] = b'{"a":2}'
    with pytest.raises(InvalidSignature):
        receiver.deserialize(bad)
    good = sender.serialize("x", content={"a": 1})
    assert receiver.deserialize(good).content == {"a": 1}


# --- replay -------------------------------------------------------------------------------------


def test_replay_is_rejected(sender, receiver):
    frames = sender.serialize("apply_request", content={"a": 1})
    receiver.deserialize(list(frames))
    with pytest.raises(ReplayedMessage):
        receiver.deserialize(list(frames))
    assert rejected(receiver) == {"signature": 0, "replay": 1, "stale": 0, "malformed": 0}


def test_replay_with_different_route_is_rejected(sender, receiver):
    frames = sender.serialize("apply_request", idents=[b"client-a"])
    receiver.deserialize(frames)
    with pytest.raises(ReplayedMessage):
        receiver.deserialize([b"attacker", *frames[1:]])


def test_substituted_same_length_pickle_buffer_breaks_the_signature(sender, receiver):
    # the first buffer (the pickle stream) and small buffers are hashed whole
    frames = sender.serialize("apply_request", buffers=[b"A" * 64, b"C" * 100])
    for forged in (frames[:FIRST_BUFFER] + [b"B" * 64, b"C" * 100], frames[:FIRST_BUFFER] + [b"A" * 64, b"D" * 100]):
        with pytest.raises(InvalidSignature):
            receiver.deserialize(forged)
    receiver.deserialize(frames)


def test_replay_with_substituted_same_length_large_buffer_is_rejected(sender, receiver):
    # large later buffers (out-of-band data) are covered by length only; the replay guard stops
    # re-use of a seen signature
    big = 64 * 1024
    frames = sender.serialize("apply_request", buffers=[b"A" * 64, b"X" * big])
    receiver.deserialize(frames)
    forged = frames[:FIRST_BUFFER] + [b"A" * 64, b"Y" * big]
    with pytest.raises(ReplayedMessage):
        receiver.deserialize(forged)


def test_replay_guard_is_per_receiver(sender):
    frames = sender.serialize("x")
    Session(KEY).deserialize(frames)
    Session(KEY).deserialize(frames)  # a different process has not seen it


def test_identical_content_is_not_a_replay(sender, receiver):
    # two distinct messages with the same content differ by msg_id, so both are accepted
    for _ in range(3):
        receiver.deserialize(sender.serialize("x", content={"same": True}))
    assert receiver.rejected["replay"] == 0


def test_rejected_signature_is_not_remembered(sender, receiver):
    frames = sender.serialize("x", content={"a": 1})
    forged = list(frames)
    forged[CONTENT] = b'{"a":2}'
    with pytest.raises(InvalidSignature):
        receiver.deserialize(forged)
    # the genuine message, carrying the same signature, is still accepted once
    assert receiver.deserialize(frames).content == {"a": 1}


def test_digest_history_forgets_old_signatures(sender):
    receiver = Session(KEY, digest_history=3)
    msgs = [sender.serialize("x", content={"i": i}) for i in range(4)]
    for m in msgs:
        receiver.deserialize(m)
    # msgs[0] was pushed out by three newer ones: its replay is no longer detected
    assert receiver.deserialize(msgs[0]).content == {"i": 0}
    # the three most recent are still remembered (msgs[0] just became one of them)
    for m in (msgs[2], msgs[3], msgs[0]):
        with pytest.raises(ReplayedMessage):
            receiver.deserialize(m)


def test_digest_history_memory_is_bounded(sender):
    receiver = Session(KEY, digest_history=8)
    for i in range(500):
        receiver.deserialize(sender.serialize("x", content={"i": i}))
    assert len(receiver._seen) == 8
    assert len(receiver._seen_order) == 8
    assert set(receiver._seen_order) == receiver._seen


# --- malformed ----------------------------------------------------------------------------------


def test_missing_delimiter(sender, receiver):
    frames = sender.serialize("x", idents=[b"id"])
    frames.remove(DELIM)
    with pytest.raises(MalformedMessage, match="delimiter"):
        receiver.deserialize(frames)
    with pytest.raises(MalformedMessage):
        receiver.deserialize([])
    assert rejected(receiver) == {"signature": 0, "replay": 0, "stale": 0, "malformed": 2}


@pytest.mark.parametrize("n_after_delim", [0, 1, 2, 3, 4])
def test_too_few_frames(sender, receiver, n_after_delim):
    frames = sender.serialize("x")
    with pytest.raises(MalformedMessage, match="frames"):
        receiver.deserialize(frames[: 1 + n_after_delim])
    assert rejected(receiver) == {"signature": 0, "replay": 0, "stale": 0, "malformed": 1}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"{not json", id="syntax"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
    ],
)
@pytest.mark.parametrize("index", [0, 1, 2, 3], ids=["header", "parent", "metadata", "content"])
def test_bad_json_is_malformed(receiver, sender, bad, index):
    parts = [b'{"msg_type":"x"}', b"{}", b"{}", b"{}"]
    parts[index] = bad
    with pytest.raises(MalformedMessage):
        receiver.deserialize(signed_parts(sender, parts))
    assert rejected(receiver) == {"signature": 0, "replay": 0, "stale": 0, "malformed": 1}


@pytest.mark.parametrize("header", [b"[]", b"{}", b'"apply_request"', b'{"msg_id":"x"}'])
def test_header_must_be_an_object_with_msg_type(receiver, sender, header):
    with pytest.raises(MalformedMessage, match="header"):
        receiver.deserialize(signed_parts(sender, [header, b"{}", b"{}", b"{}"]))
    assert receiver.rejected["malformed"] == 1


@pytest.mark.parametrize("index", [1, 2, 3], ids=["parent", "metadata", "content"])
@pytest.mark.parametrize("value", [b"[]", b"null", b"1", b'"s"'])
def test_other_json_frames_must_be_objects(receiver, sender, index, value):
    # handlers rely on dicts (msg.parent_id, msg.content.get(...)); a list here is malformed
    parts = [b'{"msg_type":"x"}', b"{}", b"{}", b"{}"]
    parts[index] = value
    with pytest.raises(MalformedMessage):
        receiver.deserialize(signed_parts(sender, parts))
    assert receiver.rejected["malformed"] == 1


def test_protocol_errors_share_one_base_and_are_not_value_errors():
    for cls in (InvalidSignature, ReplayedMessage, MalformedMessage):
        assert issubclass(cls, ProtocolError)
        assert not issubclass(cls, ValueError)


def test_rejection_counters_count_each_reason(sender, receiver):
    assert rejected(receiver) == {"signature": 0, "replay": 0, "stale": 0, "malformed": 0}

    good = sender.serialize("x")
    receiver.deserialize(good)
    assert rejected(receiver) == {"signature": 0, "replay": 0, "stale": 0, "malformed": 0}

    for _ in range(2):
        with pytest.raises(ReplayedMessage):
            receiver.deserialize(good)
    assert rejected(receiver) == {"signature": 0, "replay": 2, "stale": 0, "malformed": 0}

    for _ in range(3):
        with pytest.raises(InvalidSignature):
            Session(b"x").deserialize(good)  # not counted here: another session
        bad = sender.serialize("x")
        bad[HEADER] = bad[HEADER].replace(b'"x"', b'"y"')
        with pytest.raises(InvalidSignature):
            receiver.deserialize(bad)
    assert rejected(receiver) == {"signature": 3, "replay": 2, "stale": 0, "malformed": 0}

    with pytest.raises(MalformedMessage):
        receiver.deserialize([b"no delimiter"])
    with pytest.raises(MalformedMessage):
        receiver.deserialize([DELIM, b"sig"])
    with pytest.raises(MalformedMessage):
        receiver.deserialize(signed_parts(sender, [b"{", b"{}", b"{}", b"{}"]))
    assert rejected(receiver) == {"signature": 3, "replay": 2, "stale": 0, "malformed": 3}


# --- the canary: a forged message must never reach the unpickler -------------------------------


class _Canary:
    """Unpickling this creates a directory: visible proof that the pickle ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def receive_object(session: Session, frames: list):
    """What a receiver does: authenticate, and only then unpickle the buffers."""
    msg = session.deserialize(frames)
    return deserialize_object(msg.buffers)


def test_canary_payload_works(tmp_path, sender, receiver):
    # control: a correctly signed message carrying the canary does run it, so the test below
    # would notice if a forged one got through
    flag = tmp_path / "ran"
    frames = sender.serialize("apply_request", buffers=serialize_object(_Canary(str(flag))))
    receive_object(receiver, as_zmq_frames(frames))
    assert flag.exists()


def _forgeries(sender: Session, payload: list) -> dict:
    honest = sender.serialize("apply_request", buffers=[b"harmless"])
    # an honest message whose buffer has exactly the payload's length, delivered before the forgery
    same_len = sender.serialize("apply_request", buffers=[b"\0" * len(bytes(payload[0]))])
    return {
        "wrong-key": (None, Session(b"attacker's guess").serialize("apply_request", buffers=payload)),
        "no-signature": (None, Session(b"").serialize("apply_request", buffers=payload)),
        "garbage-signature": (None, [DELIM, b"f" * 64, *honest[HEADER:FIRST_BUFFER], *payload]),
        "honest-signature-other-buffer": (None, honest[:FIRST_BUFFER] + payload),
        "honest-signature-extra-buffer": (None, honest + payload),
        "replayed-signature-same-length": (same_len, same_len[:FIRST_BUFFER] + payload),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "wrong-key",
        "no-signature",
        "garbage-signature",
        "honest-signature-other-buffer",
        "honest-signature-extra-buffer",
        "replayed-signature-same-length",
    ],
)
def test_forged_message_never_unpickles(tmp_path, sender, receiver, kind):
    flag = tmp_path / "ran"
    payload = serialize_object(_Canary(str(flag)))
    assert len(payload) == 1
    payload = [bytes(payload[0])]
    delivered_first, forged = _forgeries(sender, payload)[kind]
    if delivered_first is not None:
        receiver.deserialize(delivered_first)

    with pytest.raises(ProtocolError):
        receive_object(receiver, as_zmq_frames(forged))
    assert not flag.exists(), "the forged message's pickle was executed"

    # the payload is live: the exact bytes we forged do run when unpickled directly
    deserialize_object(payload)
    assert flag.exists()


# --- empty key ----------------------------------------------------------------------------------


def test_empty_key_disables_signing():
    s = Session(b"")
    assert s.sign([b"{}"] * 4, [b"buf"]) == b""
    frames = s.serialize("x", content={"a": 1}, buffers=[b"buf"])
    assert frames[SIG] == b""

    receiver = Session(b"")
    # no signature check: anything goes, including altered frames and keyed messages
    frames[CONTENT] = b'{"a":2}'
    assert receiver.deserialize(frames).content == {"a": 2}
    assert receiver.deserialize(Session(KEY).serialize("y")).msg_type == "y"
    # and no replay guard either (replays are only detectable by signature)
    receiver.deserialize(frames)
    assert rejected(receiver) == {"signature": 0, "replay": 0, "stale": 0, "malformed": 0}


def test_empty_key_still_checks_framing():
    receiver = Session(b"")
    with pytest.raises(MalformedMessage):
        receiver.deserialize([b"no delimiter"])
    with pytest.raises(MalformedMessage):
        receiver.deserialize([DELIM, b"", b"{", b"{}", b"{}", b"{}"])


def test_signature_is_hmac_sha256_hex(sender):
    import hashlib
    import hmac

    frames = sender.serialize("x", content={"a": 1}, buffers=[b"12", b"345"])
    expected = hmac.new(KEY, digestmod=hashlib.sha256)
    for part in frames[HEADER:FIRST_BUFFER]:
        expected.update(part)
    expected.update(b"2:2,3")  # the buffer descriptor of docs/protocol.md
    expected.update(b"12")  # then the first buffer's contents and every small buffer's
    expected.update(b"345")
    assert frames[SIG] == expected.hexdigest().encode()


# --- message names ------------------------------------------------------------------------------


def test_message_names_follow_the_convention():
    names = {v for k, v in vars(messages).items() if k.isupper() and isinstance(v, str)}
    assert names, "no message names found"
    for name in names - messages.OUTPUT_TYPES:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*_(request|reply|notification)", name), name
    for request, reply in messages.REPLY_FOR.items():
        assert request.endswith("_request") and reply == request[: -len("request")] + "reply"
        assert reply in names
