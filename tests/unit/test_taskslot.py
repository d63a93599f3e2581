"""The task slot an engine shares with its supervisor, and the supervisor's restart budget (no processes)."""

from __future__ import annotations

import os
import time
from collections import deque

import pytest

from engines import supervisor as sv
from engines.taskslot import MAX_ID, STOP_CANCEL, STOP_NONE, STOP_TIME_LIMIT, TaskSlot, TaskSlots


def test_idle_slot_shows_nothing_running():
    slot = TaskSlots(1)[0]
    assert slot.running() is None
    slot.start("m1", None)
    slot.end()
    assert slot.running() is None


def test_running_request_with_and_without_a_time_limit():
    slot = TaskSlots(2)[1]
    before = time.monotonic()
    slot.start("abc-1", 2.5)
    run = slot.running()
    assert run is not None and run.msg_id == "abc-1" and run.limit == 2.5
    assert before + 2.5 <= run.deadline <= time.monotonic() + 2.5
    assert slot.end() == STOP_NONE
    slot.start("abc-2", None)  # the previous deadline must not leak into this request
    run = slot.running()
    assert run is not None and run.msg_id == "abc-2" and run.deadline == 0.0 and run.limit == 0.0


def test_slots_of_one_mapping_are_independent():
    slots = TaskSlots(3)
    slots[0].start("a", None)
    slots[2].start("c", 1.0)
    assert slots[1].running() is None
    assert slots[0].running().msg_id == "a" and slots[2].running().msg_id == "c"


def test_mark_tells_the_engine_why_it_was_stopped():
    slot = TaskSlots(1)[0]
    slot.start("m", 1.0)
    seq = slot.running().seq
    assert slot.mark(seq, STOP_TIME_LIMIT) is True
    assert slot.end() == STOP_TIME_LIMIT
    slot.start("n", None)  # a new request starts unmarked
    assert slot.end() == STOP_NONE


def test_mark_of_a_request_that_ended_is_refused():
    slot = TaskSlots(1)[0]
    slot.start("m", None)
    seq = slot.running().seq
    slot.end()
    slot.start("n", None)
    assert slot.mark(seq, STOP_CANCEL) is False


def test_long_and_non_ascii_msg_ids_are_cut_not_fatal():
    slot = TaskSlot(bytearray(256))
    slot.start("x" * 1000, None)
    assert slot.running().msg_id == "x" * MAX_ID
    slot.end()
    slot.start("é-1", None)
    assert slot.running().msg_id == "?-1"


def test_a_forked_child_writes_what_the_parent_reads():
    slots = TaskSlots(1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: one request started, then wait to be killed
        os.close(r)
        slots[0].start("from-child", 9.0)
        os.write(w, b"x")
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    os.waitpid(pid, 0)
    run = slots[0].running()
    assert run is not None and run.msg_id == "from-child" and run.limit == 9.0
    slots[0].reset()
    assert slots[0].running() is None


# --- the supervisor's restart budget ---------------------------------------------------------------


def _supervisor(restart: bool = True) -> sv.Supervisor:
    from ipcluster.protocol.connection import ConnectionInfo

    info = ConnectionInfo(key="k", location="127.0.0.1", ports={})
    return sv.Supervisor(info, 1, restart_engines=restart)


def _dead(code: int = -9, killed: dict | None = None) -> sv.Child:
    return sv.Child(0, "u", 1, None, exit_code=code, killed=killed)


def test_restart_budget_backs_off_then_gives_up():
    s = _supervisor()
    delays = [s._restart_delay(_dead()) for _ in range(sv.MAX_RESTARTS + 1)]
    assert delays[:sv.MAX_RESTARTS] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert delays[-1] is None


def test_back_off_is_capped(monkeypatch):
    monkeypatch.setattr(sv, "MAX_RESTARTS", 100)
    s = _supervisor()
    s._deaths[0] = deque([time.monotonic()] * 10)
    assert s._restart_delay(_dead()) == sv.RESTART_BACKOFF_MAX


def test_old_deaths_leave_the_window():
    s = _supervisor()
    s._deaths[0] = deque([time.monotonic() - sv.RESTART_WINDOW - 1] * 10)
    assert s._restart_delay(_dead()) == 0.0


@pytest.mark.parametrize("code", [0, sv.EXIT_CONTROLLER_GONE])
def test_clean_exits_and_a_lost_controller_are_not_restarted(code):
    assert _supervisor()._restart_delay(_dead(code)) is None


def test_without_restart_engines_only_deliberate_kills_are_restarted():
    s = _supervisor(restart=False)
    assert s._restart_delay(_dead()) is None
    killed = {"msg_id": "m", "ename": "TaskTimeout", "evalue": "..."}
    for _ in range(20):  # never budgeted
        assert s._restart_delay(_dead(killed=killed)) == 0.0


def test_nothing_is_restarted_while_stopping():
    s = _supervisor()
    s._stop_signals = 1
    assert s._restart_delay(_dead(killed={"msg_id": "m"})) is None


def test_bad_interrupt_grace_is_refused():
    from ipcluster.protocol.connection import ConnectionInfo

    with pytest.raises(ValueError, match="interrupt_grace"):
        sv.Supervisor(ConnectionInfo(key="k", location="127.0.0.1", ports={}), 1, interrupt_grace=-1)
