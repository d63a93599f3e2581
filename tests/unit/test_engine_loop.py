"""The engine's main loop: it waits on the zmq sockets' descriptors and asks a socket for its
events only when its descriptor fired or the engine used it since it last asked (engines/engine.py,
``Engine._serve``).  A socket that is not asked again after being used can hold a message without
its descriptor signalling: these tests would then wait for the poll timeout, which they set far
beyond their deadlines, so a missed request fails them instead of being served late."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any

import pytest
import zmq

import engines.engine as engine_mod
from engines.engine import Engine
from ipcluster.protocol import messages as M
from ipcluster.protocol import rawlink
from ipcluster.protocol.connection import ConnectionInfo
from ipcluster.protocol.serialize import deserialize_object, pack_apply_message
from ipcluster.protocol.session import Message, Session, new_key

#: Seconds a test waits for one reply: far below the patched poll timeout.
DEADLINE = 10.0


def add(a: int, b: int) -> int:
    return a + b


def shout(text: str) -> str:
    print(text)
    return text


class Rig:
    """An engine with in-process peers: a "controller" ROUTER on its mux socket, a client DEALER
    on its direct socket, the control thread's end of its wake pipe, and a raw link."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setattr(engine_mod, "POLL_INTERVAL", 60.0)  # a missed wake-up cannot hide
        key = new_key()
        self.client_session = Session(key)
        self.controller_session = Session(key)  # (its own replay guard: it may see copies)
        self.engine = eng = Engine(ConnectionInfo(key=key.decode()))
        eng.id = eng.executor.engine_id = 0
        self.ctx = ctx = zmq.Context()
        tag = eng.uuid
        self.controller = ctx.socket(zmq.ROUTER)
        self.controller.bind(f"inproc://mux-{tag}")
        eng.mux = ctx.socket(zmq.DEALER)
        eng.mux.setsockopt(zmq.IDENTITY, eng.identity)
        eng.mux.connect(f"inproc://mux-{tag}")
        eng._route = eng.mux
        eng.direct = ctx.socket(zmq.ROUTER)
        eng.direct.bind(f"inproc://direct-{tag}")
        self.client = ctx.socket(zmq.DEALER)
        self.client.setsockopt(zmq.IDENTITY, b"client-1")
        self.client.connect(f"inproc://direct-{tag}")
        eng.wake = ctx.socket(zmq.PAIR)
        eng.wake.bind(f"inproc://wake-{tag}")
        self.wake_peer = ctx.socket(zmq.PAIR)
        self.wake_peer.connect(f"inproc://wake-{tag}")
        self.saved = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        eng._install_signal_handlers()
        self.error: BaseException | None = None

    def request(self, f: Any, *args: Any) -> list[Any]:
        return self.client_session.serialize(M.APPLY_REQUEST, {}, buffers=pack_apply_message(f, args, {}))

    @staticmethod
    def reply_value(msg: Message) -> Any:
        assert msg.msg_type == M.APPLY_REPLY, msg.msg_type
        assert msg.metadata["status"] == "ok", msg.content
        return deserialize_object(msg.buffers)

    def recv(self, sock: zmq.Socket, want: str = M.APPLY_REPLY) -> Message:
        """The next message of type *want* on *sock* (others skipped), within DEADLINE."""
        deadline = time.monotonic() + DEADLINE
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                raise AssertionError(f"no {want} within {DEADLINE} s: the engine missed a request")
            session = self.controller_session if sock is self.controller else self.client_session
            msg = session.deserialize(sock.recv_multipart())
            if msg.msg_type == want:
                return msg

    def serve(self, drive: Any) -> None:
        """Run the engine's loop here (the main thread: signal handlers) while *drive* runs in a
        thread; the engine stops when *drive* returns or fails."""

        def driver() -> None:
            try:
                drive()
            except BaseException as e:  # noqa: B036 - reported by the test
                self.error = e
            finally:
                self.engine.state.stop_reason = "shutdown"
                self.wake_peer.send(b"stop")

        thread = threading.Thread(target=driver, daemon=True)
        thread.start()
        self.engine._serve()
        thread.join(DEADLINE)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        eng = self.engine
        for link in list(eng._links.values()):
            link.close()
        for sock in (self.controller, self.client, self.wake_peer, eng.mux, eng.direct, eng.wake):
            sock.close(linger=0)
        self.ctx.term()
        signal.signal(signal.SIGINT, self.saved[0])
        signal.signal(signal.SIGTERM, self.saved[1])
        if eng._signal_fds is not None:
            signal.set_wakeup_fd(-1)
            for fd in eng._signal_fds:
                os.close(fd)
            eng._signal_fds = None


@pytest.fixture
def rig(monkeypatch):
    r = Rig(monkeypatch)
    try:
        yield r
    finally:
        r.close()


def test_requests_on_mux_and_direct_one_at_a_time_are_each_served(rig):
    def drive():
        for i in range(50):  # the engine goes back to waiting between requests
            rig.controller.send_multipart([rig.engine.identity, b"client-1", *rig.request(add, i, 1)])
            assert rig.reply_value(rig.recv(rig.controller)) == i + 1
            rig.client.send_multipart(rig.request(add, i, 2))
            assert rig.reply_value(rig.recv(rig.client)) == i + 2

    rig.serve(drive)


def test_requests_arriving_while_the_engine_replies_on_the_same_socket_are_served(rig):
    # A reply sent on mux processes the socket's pending commands, the signal of a request that
    # arrived meanwhile included: only asking the socket again finds that request.
    def drive():
        for burst in range(1, 40):
            for i in range(burst % 5 + 1):
                rig.controller.send_multipart([rig.engine.identity, b"client-1", *rig.request(add, burst, i)])
                if i % 2:
                    time.sleep(0.0005 * (burst % 3))  # vary where the next one lands
            got = sorted(rig.reply_value(rig.recv(rig.controller)) for _ in range(burst % 5 + 1))
            assert got == [burst + i for i in range(burst % 5 + 1)]

    rig.serve(drive)


def test_a_wake_up_from_the_control_thread_is_seen_between_requests(rig):
    def drive():
        rig.controller.send_multipart([rig.engine.identity, b"client-1", *rig.request(add, 1, 1)])
        rig.recv(rig.controller)
        rig.engine.state.clear.set()  # as the control thread does for a clear_request
        rig.wake_peer.send(b"clear")
        deadline = time.monotonic() + DEADLINE
        while rig.engine.state.clear.is_set():
            assert time.monotonic() < deadline, "the engine did not wake up for the clear"
            time.sleep(0.001)

    rig.serve(drive)


def test_raw_link_requests_leave_the_zmq_sockets_alone_unless_output_goes_to_the_controller(rig):
    eng = rig.engine
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    link, peer = rawlink.RawLink(a), rawlink.RawLink(b)
    eng._poller = _NoPoller()
    eng._links[link.fileno()] = link
    try:
        eng._dirty.clear()
        peer.send(rig.request(add, 2, 3))
        eng._serve_link(link)
        assert rig.reply_value(rig.client_session.deserialize(peer.recv())) == 5
        assert eng._dirty == set()  # nothing to ask zmq about: the poll waits on descriptors only
        peer.send(rig.request(shout, "hello"))
        eng.output.install()  # the task's print is captured, as in a serving engine
        try:
            eng._serve_link(link)
        finally:
            eng.output.uninstall()
        assert rig.client_session.deserialize(peer.recv()).msg_type == "stream"  # output, then the reply
        assert rig.reply_value(rig.client_session.deserialize(peer.recv())) == "hello"
        # the controller got a copy of the output on mux: that socket is asked before the next wait
        assert eng._dirty == {eng.mux}
        assert rig.recv(rig.controller, "stream").content["text"] == "hello\n"
    finally:
        peer.close()


def test_a_socket_used_after_it_was_asked_is_asked_again(rig):
    eng = rig.engine
    eng._dirty.update((eng.mux, eng.direct, eng.wake))
    assert eng._zmq_ready() == []
    assert eng._dirty == set()
    assert eng._zmq_ready() == []  # nothing used since: nothing asked
    rig.controller.send_multipart([eng.identity, b"client-1", *rig.request(add, 1, 2)])
    eng._send_zmq(eng.mux, rig.request(add, 0, 0))  # e.g. output or a reply: the socket was used
    assert eng._dirty == {eng.mux}
    deadline = time.monotonic() + DEADLINE
    ready = eng._zmq_ready()
    while not ready and time.monotonic() < deadline:  # (the message crosses to the socket's queue)
        eng._dirty.add(eng.mux)
        time.sleep(0.001)
        ready = eng._zmq_ready()
    assert ready == [eng.mux]


class _NoPoller:
    def register(self, fd: int, events: int) -> None:
        pass

    def unregister(self, fd: int) -> None:
        pass


def test_signal_handlers_are_put_back_only_when_a_task_replaced_them(rig, caplog):
    eng = rig.engine
    eng.state.interrupts._seqs.append(7)  # a record of a targeted SIGINT
    eng._restore_signal_handlers()  # the installed objects are still there: nothing to do
    signal.signal(signal.SIGINT, eng._on_sigint)  # an equal handler, a new bound-method object
    eng._restore_signal_handlers()
    assert len(eng.state.interrupts) == 1
    assert "replaced" not in caplog.text
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a task's own handler
    with caplog.at_level("INFO", logger="engines.engine"):
        eng._restore_signal_handlers()
    assert "replaced the engine's signal handlers" in caplog.text
    assert signal.getsignal(signal.SIGINT) == eng._on_sigint
    assert len(eng.state.interrupts) == 0  # its records went to the task's handler
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    eng._restore_signal_handlers()
    assert signal.getsignal(signal.SIGTERM) == eng._on_sigterm


def test_direct_request_counts_go_to_the_controller_seldom_while_busy(rig):
    """A count report wakes the controller: while requests keep coming, at most every
    STATUS_INTERVAL_BUSY; once the engine's poll timed out, after STATUS_INTERVAL."""
    eng = rig.engine
    eng._direct_completed = 5
    eng._report_status(engine_mod.STATUS_INTERVAL_BUSY)  # the first one goes at once
    assert rig.recv(rig.controller, M.ENGINE_STATUS_NOTIFICATION).content == {"direct_completed": 5}
    eng._direct_completed = 6
    eng._status_sent_at = time.monotonic() - 2 * engine_mod.STATUS_INTERVAL
    assert engine_mod.STATUS_INTERVAL_BUSY > 2 * engine_mod.STATUS_INTERVAL
    eng._report_status(engine_mod.STATUS_INTERVAL_BUSY)  # after a request: too soon
    assert not rig.controller.poll(0)
    eng._report_status(engine_mod.STATUS_INTERVAL)  # idle: due
    assert rig.recv(rig.controller, M.ENGINE_STATUS_NOTIFICATION).content == {"direct_completed": 6}
    eng._report_status(engine_mod.STATUS_INTERVAL)  # nothing new: nothing sent
    assert not rig.controller.poll(0)
