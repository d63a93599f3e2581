"""A lost controller: the grace timer, the control thread's reaction, the supervisor's exit (no sockets)."""

from __future__ import annotations

import struct
import textwrap

import pytest
import zmq

from ipcluster.protocol.connection import SOCKET_ROLES, ConnectionInfo

from engines.__main__ import parse_args, resolve_settings
from engines.control import ControlThread, SharedState
from engines.controller_watch import (CONTROLLER_GONE, CONTROLLER_TIMEOUT, EXIT_CONTROLLER_GONE,
                                      MONITORED_EVENTS, ControllerWatch)
from engines.supervisor import Child, Supervisor


# --- the grace timer ----------------------------------------------------------------------------


def test_connected_watch_waits_for_nothing():
    w = ControllerWatch(10.0)
    assert w.remaining(0.0) is None and not w.expired(1e9) and w.lost_for(5.0) == 0.0


def test_disconnect_starts_the_timer_and_expiry_stops_once():
    w = ControllerWatch(10.0)
    assert w.on_event(zmq.EVENT_DISCONNECTED, 100.0) == "lost"
    assert w.remaining(104.0) == pytest.approx(6.0)
    assert not w.expired(109.9)
    assert w.expired(110.0)
    assert w.gone and w.lost_for(110.5) == pytest.approx(10.5)
    assert not w.expired(111.0), "the controller is declared gone once"
    assert w.remaining(111.0) is None
    assert w.on_event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 112.0) is None, "too late to come back"


def test_reconnection_within_the_grace_period_cancels_the_timer():
    w = ControllerWatch(10.0)
    w.on_event(zmq.EVENT_DISCONNECTED, 100.0)
    assert w.on_event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 105.0) == "back"
    assert w.remaining(200.0) is None and not w.expired(200.0)
    # a second loss gets a full grace period of its own
    w.on_event(zmq.EVENT_DISCONNECTED, 300.0)
    assert not w.expired(309.0) and w.expired(310.0)


def test_repeated_loss_events_do_not_extend_the_grace_period():
    w = ControllerWatch(10.0)
    assert w.on_event(zmq.EVENT_DISCONNECTED, 100.0) == "lost"
    # zmq's reconnection attempts keep failing while the controller is down
    for t in (100.1, 100.3, 105.0, 109.0):
        assert w.on_event(zmq.EVENT_CONNECT_RETRIED, t) is None
    assert w.expired(110.0)


def test_a_failed_reconnection_attempt_alone_starts_the_timer():
    """A disconnection before the monitor was attached shows up as zmq's retries."""
    w = ControllerWatch(2.0)
    assert w.on_event(zmq.EVENT_CONNECT_RETRIED, 50.0) == "lost"
    assert w.expired(52.0)


def test_tcp_connect_without_a_handshake_is_not_a_reconnection():
    w = ControllerWatch(10.0)
    w.on_event(zmq.EVENT_DISCONNECTED, 100.0)
    assert w.on_event(zmq.EVENT_CONNECTED, 101.0) is None
    assert w.on_event(zmq.EVENT_DISCONNECTED, 101.1) is None  # e.g. the peer does not speak ZMTP
    assert w.expired(110.0)


def test_reconnection_events_while_connected_change_nothing():
    w = ControllerWatch(10.0)
    assert w.on_event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 1.0) is None
    assert w.remaining(2.0) is None


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_non_positive_timeout_disables_the_watch(timeout):
    w = ControllerWatch(timeout)
    assert not w.enabled
    assert w.on_event(zmq.EVENT_DISCONNECTED, 0.0) is None
    assert w.remaining(1e9) is None and not w.expired(1e9)


def test_monitored_events_cover_loss_and_return():
    assert MONITORED_EVENTS & zmq.EVENT_DISCONNECTED and MONITORED_EVENTS & zmq.EVENT_CONNECT_RETRIED
    assert MONITORED_EVENTS & (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECTED)


# --- the control thread ---------------------------------------------------------------------------


class FakePipe:
    def __init__(self):
        self.sent = []

    def send(self, data):
        self.sent.append(data)


def control_thread(timeout=1.0):
    state = SharedState()
    t = ControlThread(None, None, "inproc://x", None, state, "uuid", 0, interrupt=lambda signum: None,
                      controller_url="tcp://127.0.0.1:5555", controller_timeout=timeout)
    t._pipe = FakePipe()
    return t, state


def monitor_frames(event: int) -> list[bytes]:
    return [struct.pack("=hi", event, 0), b"tcp://127.0.0.1:5555"]


def test_monitor_events_drive_the_watch(engine_log):
    t, _ = control_thread()
    t._on_monitor(monitor_frames(zmq.EVENT_DISCONNECTED))
    assert t.watch.lost_since is not None
    t._on_monitor(monitor_frames(zmq.EVENT_HANDSHAKE_SUCCEEDED))
    assert t.watch.lost_since is None
    messages = [r.getMessage() for r in engine_log]
    assert any("lost the connection to the controller at tcp://127.0.0.1:5555" in m for m in messages)
    assert any("is back" in m for m in messages)


def test_controller_gone_stops_the_engine_without_saying_goodbye(engine_log):
    t, state = control_thread()
    state.main_done.set()  # the main thread "has already left": the watchdog ends at once
    t.watch.on_event(zmq.EVENT_DISCONNECTED, 0.0)
    assert t.watch.expired(1.0)
    t._controller_gone()
    assert state.stop_reason == CONTROLLER_GONE
    assert t._pipe.sent == [b"wake"]
    assert t.unregistered, "no unregistration is sent to a controller that is gone"
    messages = [r.getMessage() for r in engine_log]
    gone = [m for m in messages if "controller at tcp://127.0.0.1:5555 gone for" in m]
    assert len(gone) == 1 and gone[0].endswith("; exiting")


def test_controller_gone_keeps_an_earlier_stop_reason():
    t, state = control_thread()
    state.main_done.set()
    state.stop_reason = "terminated"
    t._controller_gone()
    assert state.stop_reason == "terminated"


# --- the supervisor -------------------------------------------------------------------------------


def supervisor(*codes: int) -> Supervisor:
    info = ConnectionInfo(key="k", ports={role: 1000 + i for i, role in enumerate(SOCKET_ROLES)})
    s = Supervisor(info, max(1, len(codes)))
    s.finished = [Child(i, f"u{i}", 100 + i, None, exit_code=code) for i, code in enumerate(codes)]
    return s


def test_supervisor_exits_4_when_its_engines_lost_the_controller(engine_log):
    s = supervisor(EXIT_CONTROLLER_GONE, EXIT_CONTROLLER_GONE)
    assert s._controller_gone() and s._exit_code() == EXIT_CONTROLLER_GONE
    messages = [r.getMessage() for r in engine_log]
    assert any("is gone: 2 of 2 engines exited after losing it; exiting" in m for m in messages)


def test_engines_shut_down_earlier_do_not_hide_the_reason():
    assert supervisor(0, EXIT_CONTROLLER_GONE)._exit_code() == EXIT_CONTROLLER_GONE


@pytest.mark.parametrize("codes, expected", [((0, 0), 0), ((1, EXIT_CONTROLLER_GONE), 1), ((-9, 0), 1)])
def test_supervisor_exit_codes_otherwise_unchanged(codes, expected):
    assert supervisor(*codes)._exit_code() == expected


class RecordingHub:
    def __init__(self, error: Exception | None = None):
        self.calls: list[int] = []
        self.error = error

    def send_multipart(self, frames, flags=0):
        self.calls.append(flags)
        if self.error is not None:
            raise self.error


def test_death_reports_never_block(engine_log):
    s = supervisor()
    s.hub = RecordingHub(zmq.Again())
    s._report(Child(0, "u0", 123, None, exit_code=EXIT_CONTROLLER_GONE))
    assert s.hub.calls == [zmq.NOBLOCK]
    assert any("could not report the death of engine pid 123" in r.getMessage() for r in engine_log)


# --- configuration ------------------------------------------------------------------------------


def test_controller_timeout_defaults_and_command_line(tmp_path):
    conn = str(tmp_path / "c.json")
    def timeout(*args: str) -> float:
        return resolve_settings(parse_args(["--file", conn, *args])).controller_timeout

    assert timeout() == CONTROLLER_TIMEOUT
    assert timeout("--controller-timeout", "2.5") == 2.5


def test_controller_timeout_from_the_profile_config_and_the_command_line_wins(tmp_path):
    pdir = tmp_path / "profile_x"
    (pdir / "security").mkdir(parents=True)
    (pdir / "ipengine_config.py").write_text(textwrap.dedent("""
        c.IPEngine.controller_timeout = 1.5
    """))
    conn = str(pdir / "security" / "ipcluster-connection.json")
    def timeout(*args: str) -> float:
        return resolve_settings(parse_args(["--file", conn, *args])).controller_timeout

    assert timeout() == 1.5
    assert timeout("--controller-timeout", "0") == 0.0

