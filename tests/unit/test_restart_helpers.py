"""Pieces of the controller-restart path that need no sockets: the engine's window of recent
replies, re-signing them, the heartbeat monitor counting pings actually sent, ids kept."""

from __future__ import annotations

from controller.heartbeat import HeartMonitor
from controller.registry import EngineRegistry
from controller.results import ResultWatches
from engines.recent import RecentReplies, signed_again
from ipcluster.protocol.session import Session, new_key


def test_recent_replies_are_bounded_by_count_and_bytes():
    r = RecentReplies(max_replies=3, max_bytes=100, max_reply_bytes=40)
    for i in range(5):
        r.keep([b"x%d" % i])
    assert [f[0] for f in r] == [b"x2", b"x3", b"x4"]
    r.keep([b"y" * 41])  # larger than one reply may be: not kept
    assert len(r) == 3
    for i in range(3):
        r.keep([b"z" * 40])
    assert r.nbytes <= 100 and len(r) == 2


def test_recent_replies_copy_buffers_that_may_change():
    buf = bytearray(b"abc")
    r = RecentReplies()
    r.keep([b"head", memoryview(buf)])
    buf[:] = b"XYZ"  # the next task changes the result in place
    assert list(r) == [[b"head", b"abc"]]


def test_signed_again_is_a_new_valid_message_with_the_same_reply():
    key = new_key()
    engine, controller = Session(key), Session(key)
    frames = engine.serialize("apply_reply", {"status": "ok"}, parent={"msg_id": "req-1"},
                              metadata={"engine_id": 3}, buffers=[b"result"], idents=[b"client"])
    first = controller.deserialize(frames)
    again = signed_again(engine, [bytes(f) for f in frames])
    assert again is not None
    second = controller.deserialize(again)  # not refused as a replay
    assert second.msg_id != first.msg_id and second.parent_id == "req-1"
    assert (second.content, second.metadata, second.idents) == (first.content, first.metadata, [b"client"])
    assert [bytes(b) for b in second.buffers] == [b"result"]
    assert signed_again(engine, [b"no delimiter"]) is None


def test_heartbeat_counts_only_pings_sent():
    m = HeartMonitor(period=1.0, misses=3)
    m.add(b"e", now=0.0)
    for t in (1.0, 2.0):
        m.ping(t)
    assert m.expired(now=100.0) == []  # only two pings went out (a busy loop): not dead yet
    m.ping(100.0)
    assert m.expired(now=100.5) == [b"e"]  # missed three pings sent


def test_heartbeat_answer_to_a_recent_ping_keeps_an_engine():
    m = HeartMonitor(period=1.0, misses=3)
    m.add(b"e", now=0.0)
    for t in (1.0, 2.0, 3.0):
        m.ping(t)
    m.beat(b"e", now=3.01)
    m.ping(4.0)
    assert m.expired(now=4.5) == []


def test_an_engine_remembered_from_the_store_gets_its_id_back():
    reg = EngineRegistry()
    reg.remember(b"u7", 7)
    assert reg.add(b"new").id == 8  # ids below a remembered one are not handed out again
    assert reg.add(b"u7").id == 7


def test_watches_of_a_gone_client_are_dropped():
    w = ResultWatches()
    w.add("m1", b"a", {})
    w.add("m1", b"b", {})
    w.add("m2", b"a", {})
    assert w.drop_client(b"a") == 2
    assert len(w) == 1 and "m2" not in w and [c for c, _ in w.pop("m1")] == [b"b"]



def test_only_replies_of_the_last_window_are_sent_again():
    r = RecentReplies()
    r.keep([b"old"], sent=100.0)
    r.keep([b"new"], sent=200.0)
    assert list(r.since(150.0)) == [[b"new"]] and len(list(r.since(0.0))) == 2
