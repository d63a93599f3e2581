"""Control-thread state: the abort set and the request handlers (no sockets)."""

from __future__ import annotations

import signal
import threading

from ipcluster.protocol.session import Message

from engines.control import AbortSet, ControlThread, SharedState


def msg(msg_type, content=None):
    return Message({"msg_id": "c1", "msg_type": msg_type}, {}, {}, content or {}, [], [b"client"])


class FakePipe:
    def __init__(self):
        self.sent = []

    def send(self, data):
        self.sent.append(data)


def control_thread(interrupted=None):
    state = SharedState()
    t = ControlThread(None, None, "inproc://x", None, state, "uuid", 0,
                      interrupt=(interrupted.append if interrupted is not None else None))
    t._pipe = FakePipe()
    return t, state


def test_abort_set_consumes_once():
    s = AbortSet()
    s.add(["a", "b"])
    assert "a" in s and len(s) == 2
    assert s.consume("a")
    assert not s.consume("a")
    assert not s.consume("zzz")
    assert len(s) == 1


def test_abort_set_is_bounded_oldest_first():
    s = AbortSet(limit=3)
    s.add(["1", "2", "3", "4"])
    assert "1" not in s and all(x in s for x in "234")


def test_abort_set_threads():
    s = AbortSet()
    ids = [f"id{i}" for i in range(2000)]
    threads = [threading.Thread(target=s.add, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s.consume(i) for i in ids) == 2000


def test_abort_request_marks_ids():
    t, state = control_thread()
    assert t.on_abort(msg("abort_request", {"msg_ids": ["m1", "m2"]})) == {"status": "ok"}
    assert state.aborted.consume("m2")


def test_clear_request_sets_flag_and_wakes_main():
    t, state = control_thread()
    assert t.on_clear(msg("clear_request"))["status"] == "ok"
    assert state.clear.is_set() and t._pipe.sent == [b"wake"]


def test_signal_request_is_delivered_after_the_reply():
    interrupted = []
    t, _ = control_thread(interrupted)
    assert t.on_signal(msg("signal_request", {"signum": int(signal.SIGINT)}))["status"] == "ok"
    assert interrupted == []  # not before the reply is sent
    t._after_reply()
    assert interrupted == [signal.SIGINT]
