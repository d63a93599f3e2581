"""Coalescer and split_parts, without sockets."""

from __future__ import annotations

import pytest

from controller.coalesce import Coalescer
from ipcluster.protocol.frames import split_parts
from ipcluster.protocol.messages import BROADCAST, BROADCAST_REPLY
from ipcluster.protocol.session import Session

pytestmark = pytest.mark.timeout(10)

KEY = b"k" * 32


def _coalescer():
    sent = []
    return Coalescer(Session(KEY), sent.append), sent


def test_sends_once_every_engine_answered_in_arrival_order():
    c, sent = _coalescer()
    c.start("m", b"client", {"msg_id": "m", "msg_type": "apply_request"})
    c.expect("m", b"e1")
    c.expect("m", b"e2")
    assert c.part("m", b"e2", [b"D", b"s", b"h2"])
    c.flush("m")  # end of fan-out: still waiting for e1
    assert sent == [] and "m" in c
    assert c.part("m", b"e1", [b"D", b"s", b"h1", b"x"])
    assert "m" not in c and len(sent) == 1
    frames = sent[0]
    assert frames[:2] == [b"client", BROADCAST]
    msg = Session(KEY).deserialize(frames[1:])
    assert msg.msg_type == BROADCAST_REPLY and msg.parent_id == "m"
    assert split_parts(msg.content["parts"], msg.buffers) == [[b"D", b"s", b"h2"], [b"D", b"s", b"h1", b"x"]]


def test_parts_before_the_end_of_fan_out_do_not_send_early():
    c, sent = _coalescer()
    c.start("m", b"client", {"msg_id": "m"})
    assert c.part("m", b"", [b"error for a missing engine"])  # answered by the controller itself
    assert sent == []
    c.expect("m", b"e1")
    c.flush("m")
    assert sent == []
    c.part("m", b"e1", [b"reply"])
    assert len(sent) == 1


def test_flush_with_nothing_expected_sends_what_was_gathered():
    c, sent = _coalescer()
    c.start("m", b"client", {"msg_id": "m"})
    c.part("m", b"", [b"a"])
    c.flush("m")
    assert len(sent) == 1


def test_other_msg_ids_are_not_taken():
    c, _ = _coalescer()
    assert not c.part("other", b"e1", [b"x"])
    assert not c


@pytest.mark.parametrize("counts, n", [(None, 0), ([0], 0), ([1, "2"], 3), ([2, 2], 3), ([True], 1)])
def test_split_parts_rejects_inconsistent_counts(counts, n):
    with pytest.raises(ValueError):
        split_parts(counts, [b"x"] * n)
