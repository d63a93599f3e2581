"""Control-thread state: the abort set and the request handlers (no sockets)."""

from __future__ import annotations

import signal
import threading

import pytest

from ipcluster.protocol.session import Message

from engines.control import AbortSet, ControlThread, SharedState
from engines.interrupts import TargetedInterrupts
from engines.taskslot import SLOT_SIZE, TaskSlot


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


# --- signals for one request (engines/interrupts.py) ---------------------------------------------

def slotted_control_thread(interrupted):
    """A control thread that sees the engine's task slot, as a real engine's does."""
    state = SharedState()
    slot = TaskSlot(bytearray(SLOT_SIZE))
    t = ControlThread(None, None, "inproc://x", None, state, "uuid", 0, interrupt=interrupted.append,
                      slot=slot, enforce_limits=False)
    return t, state, slot


def sigint_for(*ids):
    return msg("signal_request", {"signum": int(signal.SIGINT), "msg_ids": list(ids)})


def test_sigint_for_a_request_that_is_not_running_is_not_sent():
    interrupted = []
    t, state, slot = slotted_control_thread(interrupted)
    assert t.on_signal(sigint_for("a")) == {"status": "ok", "interrupting": False}  # idle
    slot.start("b", None)
    assert t.on_signal(sigint_for("a")) == {"status": "ok", "interrupting": False}  # another one runs
    assert t._after_reply is None and interrupted == [] and len(state.interrupts) == 0


def test_sigint_for_the_running_request_is_sent_for_it_only():
    interrupted = []
    t, state, slot = slotted_control_thread(interrupted)
    slot.start("a", None)
    assert t.on_signal(sigint_for("x", "a")) == {"status": "ok", "interrupting": True}
    assert interrupted == []  # after the reply
    t._after_reply()
    assert interrupted == [signal.SIGINT]
    assert state.interrupts.wanted(slot.seq())  # the handler interrupts "a"


def test_sigint_arriving_after_its_request_ended_spares_the_next_one():
    interrupted = []
    t, state, slot = slotted_control_thread(interrupted)
    slot.start("a", None)
    assert t.on_signal(sigint_for("a"))["interrupting"]
    slot.end()  # "a" ends (aborted, failed, done) while the signal is on its way ...
    slot.start("b", None)  # ... and the engine runs its next request
    t._after_reply()
    assert interrupted == [signal.SIGINT]
    assert not state.interrupts.wanted(slot.seq())  # the handler drops it
    assert state.interrupts.wanted(slot.seq())  # records are taken once: a later SIGINT from elsewhere interrupts


def test_signal_request_msg_ids_are_checked():
    t, _, _ = slotted_control_thread([])
    with pytest.raises(TypeError, match="must be a list"):
        t.on_signal(msg("signal_request", {"signum": int(signal.SIGINT), "msg_ids": "a"}))
    with pytest.raises(ValueError, match="only SIGINT"):
        t.on_signal(msg("signal_request", {"signum": int(signal.SIGTERM), "msg_ids": ["a"]}))


def test_long_and_non_ascii_msg_ids_match_as_the_slot_holds_them():
    interrupted = []
    t, _, slot = slotted_control_thread(interrupted)
    long_id = "é" + "x" * 400
    slot.start(long_id, None)
    assert t.on_signal(sigint_for(long_id))["interrupting"]


def test_targeted_interrupts_coalesced_records_are_taken_together():
    ti = TargetedInterrupts()
    sent = []
    ti.send(3, sent.append)
    ti.send(5, sent.append)
    assert sent == [signal.SIGINT, signal.SIGINT]
    assert ti.wanted(5) and len(ti) == 0  # one handler call for both: the running one is among them
    ti.send(3, sent.append)
    assert not ti.wanted(5)
    assert ti.wanted(7)  # no records: not the control thread's, interrupts whatever runs


def test_time_limit_interrupts_of_an_engine_without_supervisor_are_for_their_request():
    interrupted = []
    state = SharedState()
    slot = TaskSlot(bytearray(SLOT_SIZE))
    t = ControlThread(None, None, "inproc://x", None, state, "uuid", 0, interrupt=interrupted.append, slot=slot)
    slot.start("a", 0.001)
    t._check_slot(slot.running().deadline + 1)
    assert interrupted == [signal.SIGINT]
    slot.end()
    slot.start("b", None)
    assert not state.interrupts.wanted(slot.seq())


def test_targeted_interrupts_can_be_forgotten():
    ti = TargetedInterrupts()
    ti.send(3, lambda signum: None)  # went to a task's own handler: no call of ours took it
    ti.clear()
    assert ti.wanted(5)  # a later SIGINT from elsewhere still interrupts
