"""One engine: its sockets, registration with the controller, and the main loop.

Lifecycle (:meth:`Engine.run`)::

    connect mux, control, heartbeat  ->  registration_request (control)  ->  registration_reply
      -> start control thread  ->  startup code  ->  engine_ready_notification (mux)  ->  serve
      ->  clean exit

Startup code (``c.IPEngine.startup_command`` / ``startup_script``) runs before the ready
notification, so an engine that clients see has run it (as in IPython Parallel, where an engine
counts as registered once its startup code is done); its failure is logged, not fatal.

The main thread serves the mux socket: one request at a time, received zero-copy, checked by the
session before anything is decoded, dispatched through a table, output flushed, then the reply.
It also polls the inproc "wake" pipe through which the control thread asks it to clear the
namespace or to stop.  The poll times out every :data:`POLL_INTERVAL` so text written by
background threads is sent even when no request is running.

Signals: SIGINT raises ``KeyboardInterrupt`` only while user code runs (the task then fails with
that error and the engine keeps serving), and one the control thread sent for one request only
while that request runs (see :mod:`engines.interrupts`); SIGTERM stops the engine after the
current task (which is interrupted) with a clean unregistration and exit code 0.

A controller that is gone (its connection lost for ``controller_timeout`` seconds, see
:mod:`engines.controller_watch`) stops the engine the same way, with exit code
:data:`EXIT_CONTROLLER_GONE` (4).

Zero-copy replies: large result buffers are sent without copying, so the memory must not change
until libzmq is done with it.  A ``pull`` returns an array that stays in the namespace, and the
next task could modify it in place; so before running the next request the engine waits for the
previous reply's large frames to be released.
"""

from __future__ import annotations

import _signal  # getsignal without the enum conversion of the signal module: checked per request
import faulthandler
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from typing import Any, Callable

import zmq

import engines
from ipcluster.errors import ProtocolError
from ipcluster.gctune import relax_gc
from ipcluster.protocol import messages as M
from ipcluster.protocol.connection import ConnectionInfo, ipc_url
from ipcluster.protocol import batch as batching
from ipcluster.protocol import rawlink, segments
from ipcluster.protocol.frames import recv_frames, send_frames
from ipcluster.protocol.hostkey import host_key
from ipcluster.protocol.limits import DATA, REQUEST, set_limit
from ipcluster.protocol.session import DELIM, Message, Session, new_id
from ipcluster.protocol.versions import local_versions

from engines.control import ControlThread, SharedState
from engines.controller_watch import CONTROLLER_GONE, CONTROLLER_TIMEOUT, EXIT_CONTROLLER_GONE, REGISTRATION_TIMEOUT
from engines.error_content import aborted_content, error_content
from engines.execution import Executor, Outcome, StartupCode
from engines.heartbeat import Heartbeat
from engines.logs import LimitedLog
from engines.output import OutputRouter
from engines.recent import WINDOW as RECENT_WINDOW, RecentReplies, signed_again
from engines.replyhold import HeldReplies
from engines.taskslot import SLOT_SIZE, Supervision, TaskSlot

log = logging.getLogger("engines.engine")

#: Main-loop poll timeout (seconds): how often background-thread output is flushed when idle.
POLL_INTERVAL = 0.1
#: Requests handled from one socket before polling all of them again (fairness vs. syscalls).
DRAIN_BATCH = 32
#: Minimum seconds between two reports of direct-route completions to the controller once the
#: engine has gone idle (its poll timed out), and while requests keep coming.  A report wakes the
#: controller: on 32 engines sharing 2 CPUs, reports every 50 ms during a stream of calls took
#: 15-20 µs of controller CPU per request, as much as the controller's whole share otherwise.
STATUS_INTERVAL = 0.05
STATUS_INTERVAL_BUSY = 1.0
#: Linger (ms) for sockets closed at exit: long enough to deliver the last replies, never forever.
EXIT_LINGER = 1000

_SIGINT = int(signal.SIGINT)
_SIGTERM = int(signal.SIGTERM)
_SNDMORE = int(zmq.SNDMORE)
_COPY_THRESHOLD = zmq.COPY_THRESHOLD
# the extension type's send, without pyzmq's Python-level checks (about half a small frame's cost)
_raw_send: Any = zmq.backend.Socket.send

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_REJECTED = 3


class Engine:
    """An engine process's state and sockets.

    Parameters
    ----------
    info:
        The cluster's connection info (addresses and key).
    uuid:
        This engine's identity; a supervisor chooses it before forking so it can report a death.
    supervisor_pid:
        The pid of the engine-host supervisor, if any (reported at registration).
    startup:
        Code to run in the user namespace after registration, before serving.
    controller_timeout:
        Seconds the controller may be unreachable before the engine exits
        (:data:`EXIT_CONTROLLER_GONE`); ``<= 0``: never.
    seed_ns:
        Names put in the user namespace before the startup code, and again after each clear
        (``mpi_rank`` / ``mpi_size`` for engines under mpiexec).
    supervision:
        From the engine-host supervisor, if any: the slot where the engine shows what it runs
        (time limits and cancels are enforced from there, see :mod:`engines.taskslot`).
    """

    def __init__(self, info: ConnectionInfo, uuid: str | None = None, supervisor_pid: int | None = None,
                 registration_timeout: float = REGISTRATION_TIMEOUT, startup: StartupCode | None = None,
                 controller_timeout: float = CONTROLLER_TIMEOUT, seed_ns: dict[str, Any] | None = None,
                 supervision: Supervision | None = None):
        self.info = info
        self.supervision = supervision
        # without a supervisor the control thread enforces time limits and cancels from the slot
        self.slot = supervision.slot if supervision is not None else TaskSlot(bytearray(SLOT_SIZE))
        self.seed_ns = dict(seed_ns or {})
        self.controller_timeout = controller_timeout
        self.startup = startup or StartupCode()
        self.uuid = uuid or new_id()
        self.identity = self.uuid.encode("ascii")
        self.supervisor_pid = supervisor_pid
        self.registration_timeout = registration_timeout
        self.id: int | None = None
        self.session = Session(info.key_bytes)
        # the control thread checks its own messages: a Session's replay guard is not thread-safe
        self.control_session = Session(info.key_bytes, session_id=self.session.session_id)
        # requests on the direct socket come straight from clients, so they are checked for
        # staleness too (mux requests may have waited in the controller's queue for any time)
        self.direct_session = Session(info.key_bytes, session_id=self.session.session_id)
        self.direct_session.check_freshness(info.max_message_age, digest_history=1 << 16)
        self.state = SharedState()
        self.rejected = LimitedLog(log)
        self.output = OutputRouter(self._send_output, fallback=sys.__stderr__)
        self.executor = Executor(self.output, self.uuid)
        self.handlers: dict[str, Callable[[Message], Outcome]] = {
            M.APPLY_REQUEST: self.executor.apply,
            M.EXECUTE_REQUEST: self.executor.execute,
        }
        self.ctx: zmq.Context | None = None
        self.mux: zmq.Socket | None = None
        # same-host clients send straight here (one hop instead of two through the controller)
        self.direct: zmq.Socket | None = None
        self.direct_url = ""
        self.raw: rawlink.Listener | None = None  # same-host blocking calls (see ipcluster.protocol.rawlink)
        self._links: dict[int, rawlink.RawLink] = {}  # accepted raw links by file descriptor
        self._reply_links: dict[bytes, rawlink.RawLink] = {}  # client threads' reply ids -> their links
        self._controller_links: set[rawlink.RawLink] = set()  # links the controller sends tasks on
        # the socket the current request came in on: its output and reply go back the same way
        self._route: zmq.Socket | rawlink.RawLink | None = None
        self._direct_completed = 0
        self._direct_reported = 0
        self._status_sent_at = 0.0
        self.control: zmq.Socket | None = None
        self.wake: zmq.Socket | None = None
        self.control_thread: ControlThread | None = None
        self._registration: dict[str, Any] | None = None
        self._recent = RecentReplies()
        self._trackers: list[zmq.MessageTracker] = []
        # zmq sockets the main thread used since it last asked them for events (see _serve)
        self._dirty: set[zmq.Socket] = set()
        self._signal_fds: tuple[int, int] | None = None
        self._sending = False
        self._interrupt_pending = False
        # replies of a batch's requests, held to go to the controller together (engines/replyhold.py)
        self._held = HeldReplies(self.session, self._send_held)
        # the handlers as installed, one bound method each (see _restore_signal_handlers)
        self._sigint_handler = self._on_sigint
        self._sigterm_handler = self._on_sigterm
        self._holding = False  # running a batch from the controller: its replies may be held
        self._more_parts = False  # ... and more of its requests come after the current one

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Register and serve until shutdown; return the process exit code."""
        os.environ.setdefault("MPLBACKEND", "agg")  # non-interactive; `%matplotlib inline` still works
        if not faulthandler.is_enabled() and sys.__stderr__ is not None:
            # a crash in C code leaves the Python stack in the log (and in a supervisor's death report)
            faulthandler.enable(file=sys.__stderr__)
        self.ctx = zmq.Context()
        if self.info.curve_serverkey:  # CurveZMQ: every socket of this context is a CURVE client
            from ipcluster.protocol.curve import set_client_keys

            set_client_keys(self.ctx, self.info)
        try:
            self._connect()
            self._install_signal_handlers()
            code = self._register()
            if code is not None:
                return code
            self._start_control()
            self.executor.install_main_module()
            self.executor.user_ns.update(self.seed_ns)
            if self.startup:  # before output capture: its prints and errors go to the engine log
                self.executor.run_startup(self.startup)
            self._send(self.session.serialize(M.ENGINE_READY_NOTIFICATION, {"uuid": self.uuid}))
            self.output.install()
            log.info("engine %s (%s) serving", self.id, self.uuid)
            self._serve()
            log.info("engine %s stopping (%s)", self.id, self.state.stop_reason)
            return EXIT_CONTROLLER_GONE if self.state.stop_reason == CONTROLLER_GONE else EXIT_OK
        finally:
            self._close()

    def _connect(self) -> None:
        assert self.ctx is not None
        info = self.info
        self.mux = self.ctx.socket(zmq.DEALER)
        self.mux.setsockopt(zmq.IDENTITY, self.identity)
        self.mux.setsockopt(zmq.SNDHWM, 0)  # results and output are never dropped
        self.mux.setsockopt(zmq.RCVHWM, 0)
        set_limit(self.mux, DATA, info.max_message_size)
        self.mux.connect(info.url("mux_back"))
        self._route = self.mux
        self.direct = self.ctx.socket(zmq.ROUTER)
        self.direct.setsockopt(zmq.IDENTITY, self.identity)  # clients address us by our uuid
        self.direct.setsockopt(zmq.SNDHWM, 0)
        self.direct.setsockopt(zmq.RCVHWM, 0)
        set_limit(self.direct, DATA, info.max_message_size)
        # a client that went away must not swallow a reply silently: direct replies to load-
        # balanced tasks fall back to the controller route when the caller is not connected
        self.direct.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if info.local_ipc:  # the controller's private Unix-socket directory: faster than TCP
            self.direct.bind(ipc_url(info.ipc_dir, f"e-{self.uuid[:12]}"))
        else:
            self.direct.bind("tcp://127.0.0.1:0")
        # with CurveZMQ everything goes through the controller's encrypted, key-checked sockets
        self.direct_url = "" if info.curve_serverkey else self.direct.getsockopt_string(zmq.LAST_ENDPOINT)
        if info.local_ipc and not info.curve_serverkey:
            # same-host clients' blocking calls: a plain stream socket, no zmq thread hand-offs
            self.raw = rawlink.Listener(os.path.join(info.ipc_dir, f"r-{self.uuid[:12]}"), info.max_message_size)
        self.control = self.ctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.IDENTITY, self.identity)
        set_limit(self.control, REQUEST, info.max_message_size)
        self.control.connect(info.url("control_back"))
        self.wake = self.ctx.socket(zmq.PAIR)
        self.wake_url = f"inproc://engine-wake-{self.uuid}"
        self.wake.bind(self.wake_url)
        # heartbeat first: its subscription has time to reach the controller before we register
        Heartbeat(self.ctx, info.url("hb_ping"), info.url("hb_pong"), self.identity).start()

    def _register(self) -> int | None:
        """Send registration_request and wait for the reply; an exit code on failure, else None."""
        assert self.control is not None
        versions = local_versions() | {"controller_path": None, "engines_path": engines.__file__}
        content = {"uuid": self.uuid, "hostname": socket.gethostname(), "pid": os.getpid(),
                   "supervisor_pid": self.supervisor_pid, "versions": versions,
                   "direct_url": self.direct_url, "host_key": host_key(),
                   "raw_url": self.raw.path if self.raw is not None else "",
                   "batches": True}  # several requests in one message (ipcluster.protocol.batch)
        if self.supervision is not None:
            content["supervisor_id"] = self.supervision.supervisor_id
            content["restart_of"] = self.supervision.restart_of
            content["death"] = self.supervision.death
        self.control.send_multipart(self.control_session.serialize(M.REGISTRATION_REQUEST, content))
        self._registration = content  # sent again if the controller loses us (see _ready_again)
        url = self.info.url("control_back")
        deadline = time.monotonic() + self.registration_timeout
        while self.state.stop_reason is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"engine {self.uuid}: no registration reply from the controller at {url} "
                      f"within {self.registration_timeout:g} s; is the controller running?",
                      file=sys.stderr, flush=True)
                return EXIT_FAILURE
            if not self.control.poll(int(min(remaining, POLL_INTERVAL) * 1000) + 1):
                continue
            frames = self.control.recv_multipart()
            try:
                msg = self.control_session.deserialize(frames)
            except ProtocolError as e:
                self.rejected("control-rejected", f"dropped message while registering: {type(e).__name__}: {e}")
                continue
            if msg.msg_type != M.REGISTRATION_REPLY:
                self.rejected("control-unexpected", f"ignored {msg.msg_type!r} while registering")
                continue
            if msg.content.get("status") != "ok":
                print(f"engine {self.uuid}: registration rejected by the controller: "
                      f"{msg.content.get('evalue', 'no reason given')}", file=sys.stderr, flush=True)
                return EXIT_REJECTED
            try:
                self.id = int(msg.content["id"])
            except (KeyError, TypeError, ValueError):
                print(f"engine {self.uuid}: malformed registration_reply (no engine id): {msg.content!r:.200}",
                      file=sys.stderr, flush=True)
                return EXIT_FAILURE
            self.executor.engine_id = self.id
            log.info("registered as engine %d", self.id)
            return None
        return EXIT_OK  # terminated while registering

    def _start_control(self) -> None:
        assert self.ctx is not None and self.control is not None
        # from here on the control socket belongs to the control thread
        self.control_thread = ControlThread(self.ctx, self.control, self.wake_url, self.control_session,
                                            self.state, self.uuid, self.id,
                                            controller_url=self.info.url("control_back"),
                                            controller_timeout=self.controller_timeout,
                                            slot=self.slot, enforce_limits=self.supervision is None)
        self.control_thread.registration = self._registration
        self.control = None
        self.control_thread.start()

    def _close(self) -> None:
        self.state.main_done.set()
        self.output.uninstall()
        thread = self.control_thread
        if thread is not None and thread.is_alive() and self.wake is not None:
            self.wake.send(b"stop")
            thread.join(timeout=2 * EXIT_LINGER / 1000)
        # nothing is delivered to a controller that is gone: don't wait for it
        out_linger = 0 if self.state.stop_reason == CONTROLLER_GONE else EXIT_LINGER
        for link in list(self._links.values()):
            link.close()
        self._links.clear()
        if self.raw is not None:
            self.raw.close()
        for sock, linger in ((self.control, 0), (self.direct, out_linger), (self.mux, out_linger),
                             (self.wake, 0)):
            if sock is not None:
                sock.close(linger=linger)
        if self.ctx is None:
            return
        if thread is not None and thread.is_alive():
            log.warning("control thread did not stop; not waiting for the zmq context")
            return
        self.ctx.term()  # the heartbeat proxy sees ETERM and closes its sockets
        self.ctx = None
        if self._signal_fds is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._signal_fds:
                os.close(fd)
            self._signal_fds = None

    # --- signals ------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._sigint_handler)
        signal.signal(signal.SIGTERM, self._sigterm_handler)
        if self._signal_fds is None:
            # a signal makes the main loop's poll return at once, whichever thread received it
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self._signal_fds = (r, w)
            signal.set_wakeup_fd(w)

    def _restore_signal_handlers(self) -> None:
        """Put our handlers back if a task replaced them (it would break interrupt and shutdown)."""
        # the objects installed are usually still there: identity first (comparing bound methods
        # for equality costs more), equality for an equal bound method installed anew
        sigint, sigterm = _signal.getsignal(_SIGINT), _signal.getsignal(_SIGTERM)
        if sigint is self._sigint_handler and sigterm is self._sigterm_handler:
            return
        if sigint != self._on_sigint or sigterm != self._on_sigterm:
            log.info("a task replaced the engine's signal handlers; restoring them")
            # records of targeted SIGINTs that went to the task's handler instead: left behind,
            # they would have a later SIGINT from elsewhere dropped
            self.state.interrupts.clear()
            self._install_signal_handlers()

    # Both interrupt only user code, and never in the middle of sending a multipart message (a
    # task printing when the interrupt lands): there it is deferred to the end of the send.
    # They raise through signal.default_int_handler, a C function, so the KeyboardInterrupt's
    # traceback ends in the user's frame, not in this handler.

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # taken even when idle: a record left behind would decide about a later SIGINT
        if not self.state.interrupts.wanted(self.slot.seq()):
            return  # sent for a request that has ended: the one running now is not concerned
        self._interrupt(signum, frame)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self.state.stop_reason is None:
            self.state.stop_reason = "terminated"
        self._interrupt(signum, frame)

    def _interrupt(self, signum: int, frame: Any) -> None:
        if not self.executor.running:
            return  # idle: nothing to interrupt
        if self._sending:
            self._interrupt_pending = True
            return
        signal.default_int_handler(signum, frame)

    # --- main loop ----------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self.mux is not None and self.wake is not None and self.direct is not None
        # One poll(2) over plain descriptors: the zmq sockets' own (ZMQ_FD), the raw listener and
        # links, the signal pipe.  zmq_poll would instead ask each zmq socket for its events
        # before and after every wait (a getpid and a poll system call each), three sockets on
        # every request; here a socket is asked only when its descriptor fired or when it was
        # used since it was last asked (``_dirty``), which is what ZMQ_FD requires: it signals
        # changes, so a socket used since it was last asked may hold messages without signalling.
        poller = select.poll()
        self._poller = poller
        zmq_fds: dict[int, zmq.Socket] = {}
        for zsock in (self.mux, self.direct, self.wake):
            fd = int(zsock.getsockopt(zmq.FD))  # type: ignore[arg-type]
            zmq_fds[fd] = zsock
            poller.register(fd, select.POLLIN)
        self._dirty.update(zmq_fds.values())  # used before the loop (the ready notification)
        raw_fd = -1
        if self.raw is not None:
            raw_fd = self.raw.fileno()
            poller.register(raw_fd, select.POLLIN)
        signal_fd = -1
        if self._signal_fds is not None:
            signal_fd = self._signal_fds[0]
            poller.register(signal_fd, select.POLLIN)
        timeout_ms = int(POLL_INTERVAL * 1000)
        mux, direct, wake, links = self.mux, self.direct, self.wake, self._links
        while self.state.stop_reason is None:
            try:
                if self.state.clear.is_set():
                    self._clear()
                ready = self._zmq_ready()
                events = poller.poll(0 if ready else timeout_ms)
                fds: list[int] = []
                for fd, _ in events:
                    sock = zmq_fds.get(fd)
                    if sock is None:
                        fds.append(fd)
                    elif sock not in ready and sock.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
                        ready.append(sock)
                if not ready and not fds:  # idle: let go of large buffers unused for a while
                    if not events:
                        segments.trim()
                    self.output.flush()
                    self._report_status(STATUS_INTERVAL if not events else STATUS_INTERVAL_BUSY)
                    continue
                if wake in ready:
                    self._drain_wake()
                if signal_fd in fds:
                    drain_fd(signal_fd)
                if mux in ready:
                    self._route = mux
                    self._serve_queued(mux)
                if direct in ready:
                    self._route = direct
                    self._direct_completed += self._serve_queued(direct)
                if raw_fd in fds:
                    self._accept_links()
                if links:
                    for fd in fds:
                        link = links.get(fd)
                        if link is not None:
                            self._serve_link(link)
                self.output.flush()
                self._report_status(STATUS_INTERVAL_BUSY)
            except zmq.Again:
                continue
            except zmq.ContextTerminated:
                break
            except BaseException as e:  # noqa: B036 - the loop outlives anything a request does
                self._dirty.update(zmq_fds.values())  # whatever it did: ask every socket again
                self.rejected("loop-error", f"error in the main loop: {type(e).__name__}: {e}", logging.ERROR)

    def _zmq_ready(self) -> list[zmq.Socket]:
        """The zmq sockets used since they were last asked that have messages waiting.

        Asking (ZMQ_EVENTS) resets a socket's descriptor; a socket that has nothing waiting when
        asked signals on its descriptor when something arrives, until it is used again.
        """
        ready = []
        dirty = self._dirty
        while dirty:
            sock = dirty.pop()
            if sock.get(_EVENTS) & _POLLIN:  # type: ignore[operator]
                ready.append(sock)
        return ready

    def _serve_queued(self, sock: zmq.Socket) -> int:
        """Handle up to :data:`DRAIN_BATCH` requests already queued on *sock*; returns how many.

        Saves a poll (a system call) per request when requests arrive faster than they run.
        Aborts, clears and signals need no poll to take effect: the control thread records them
        in shared state, which every request checks before it runs.
        """
        n = 0
        try:
            while n < DRAIN_BATCH and self.state.stop_reason is None:
                if not sock.get(_EVENTS) & _POLLIN:  # type: ignore[operator]  # cheaper than a zmq.Again per wake-up
                    break
                frames = recv_frames(sock)
                n += 1
                if self.state.clear.is_set():
                    self._clear()
                self._dispatch(frames, time.time())
        finally:
            self._dirty.add(sock)
        return n

    def _accept_links(self) -> None:
        assert self.raw is not None
        while (link := self.raw.accept()) is not None:
            self._links[link.fileno()] = link
            self._poller.register(link.fileno(), select.POLLIN)

    def _serve_link(self, link: rawlink.RawLink) -> None:
        """Requests on one raw link: the one that is readable, and any already read behind it."""
        self._route = link
        try:
            while True:
                frames = link.recv()
                if frames is None:  # the client thread went away
                    self._drop_link(link)
                    return
                if not frames:  # a control message of the link (a buffer grant), answered
                    if not link.buffered():
                        return
                    continue
                if len(frames) == 1 and frames[0].startswith(rawlink.HELLO):
                    self._reply_links[bytes(frames[0][len(rawlink.HELLO):])] = link
                    link.use_segments()  # a client thread: it grants buffers for large replies
                    if not link.buffered():
                        return
                    continue
                if len(frames) == 1 and frames[0] == rawlink.CONTROLLER_HELLO:
                    self._controller_links.add(link)  # tasks from the scheduler: not direct requests
                    if not link.buffered():
                        return
                    continue
                if self.state.clear.is_set():
                    self._clear()
                if link not in self._controller_links:
                    self._direct_completed += 1
                self._dispatch(frames, time.time())  # type: ignore[arg-type]
                if link.closed or not link.buffered() or self.state.stop_reason is not None:
                    return
        except (OSError, ProtocolError) as e:
            self.rejected("raw-link", f"dropped a same-host connection: {type(e).__name__}: {e}")
            self._drop_link(link)

    def _drop_link(self, link: rawlink.RawLink) -> None:
        fd = link.fileno()
        if self._links.pop(fd, None) is not None:
            self._poller.unregister(fd)
        for ident in [i for i, lk in self._reply_links.items() if lk is link]:
            del self._reply_links[ident]
        self._controller_links.discard(link)
        link.close()
        if self._route is link:
            self._route = self.mux

    def _report_status(self, interval: float) -> None:
        """Tell the controller how many direct requests we served (it keeps queue_status).

        Sent only when nothing else is waiting and at most every *interval* seconds: after a
        request, :data:`STATUS_INTERVAL_BUSY`; when the main loop's poll timed out (the engine
        is idle), :data:`STATUS_INTERVAL`, so the last count follows soon after the last request.
        """
        if self._direct_completed == self._direct_reported or self.direct is None or self.mux is None:
            return
        now = time.monotonic()
        if now - self._status_sent_at < interval:
            return
        self._dirty.add(self.direct)
        self._dirty.add(self.mux)
        if _readable(self.direct) or _readable(self.mux):
            return
        self._status_sent_at = now
        self._direct_reported = self._direct_completed
        self.mux.send_multipart(self.session.serialize(M.ENGINE_STATUS_NOTIFICATION,
                                                       {"direct_completed": self._direct_completed}))

    def _drain_wake(self) -> None:
        assert self.wake is not None
        self._dirty.add(self.wake)
        while self.wake.poll(0):
            self.wake.recv()
        if self.state.reregistered is not None:
            self._ready_again()

    def _ready_again(self) -> None:
        """We registered again after losing the controller (it restarted, or a partition healed).

        The ready notification lists the requests we hold (received, not yet run: we are between
        requests here), so the controller can fail the ones whose replies it lost and abort the ones
        it already answered (``controller/restart.py``).  Recent replies go first, again
        (``engines/recent.py``).  Then the held requests are served.
        """
        assert self.mux is not None
        self.id = self.executor.engine_id = self.state.reregistered
        self.state.reregistered = None
        self._dirty.add(self.mux)
        held: list[list[zmq.Frame]] = []
        while True:
            try:
                held.append(recv_frames(self.mux))
            except zmq.Again:
                break
        queued = [m for frames in held for m in _peek_msg_ids(frames) if m]
        for frames in self._recent.since(time.time() - RECENT_WINDOW):  # a dead controller may not have read them
            again = signed_again(self.session, frames)
            if again is not None:
                self.mux.send_multipart(again)
        self.mux.send_multipart(self.session.serialize(M.ENGINE_READY_NOTIFICATION,
                                                       {"uuid": self.uuid, "queued": queued}))
        log.info("engine %s ready again (%d requests held)", self.id, len(held))
        self._route = self.mux
        for frames in held:
            self._dispatch(frames, time.time())

    def _clear(self) -> None:
        self.state.clear.clear()
        try:
            self.executor.clear()
        except Exception as e:
            log.error("clearing the namespace failed: %s: %s", type(e).__name__, e)
        self.executor.user_ns.update(self.seed_ns)

    def _watch_limit(self) -> None:
        """A request with a time limit starts: have whoever enforces it set its timer."""
        if self.supervision is not None:
            self.supervision.wake()
        elif self.wake is not None:
            self._dirty.add(self.wake)
            self.wake.send(b"limit")  # the control thread (see engines.control)

    def _dispatch(self, frames: list[Any], received: float, presigned: bool = False) -> None:
        try:
            route = self._route  # straight from a client (direct socket, a thread's raw link): check staleness
            fresh = route is not self.mux and route not in self._controller_links
            msg = (self.direct_session if fresh else self.session).deserialize(frames, presigned=presigned)
        except ProtocolError as e:
            self.rejected("mux-rejected", f"dropped mux message: {type(e).__name__}: {e}")
            return
        header = msg.header
        msg_type = header.get("msg_type", "")  # (msg.msg_type, looked up once)
        if msg_type == batching.BATCH:
            self._dispatch_batch(msg, received, from_controller=not fresh and not presigned)
            return
        handler = self.handlers.get(msg_type)
        if handler is None:
            self.rejected("mux-unknown", f"no handler for {msg_type!r} on mux")
            if msg_type.endswith("_request"):
                err = NotImplementedError(f"engines do not handle {msg_type!r}")
                self._reply(msg, Outcome(error_content(err, self.executor.info(_method(msg_type)))),
                            received, received, time.time())
            return
        state = self.state
        if state.clear.is_set():
            self._clear()
        if self._trackers:
            self._wait_for_sends()
        self.output.set_parent(header, msg.idents)
        started = time.time()
        msg_id = header.get("msg_id", "")
        if state.aborted.consume(msg_id):
            outcome = Outcome(aborted_content(self.executor.info(_method(msg_type))))
        else:
            slot = self.slot
            if slot is not None:  # the supervisor enforces time limits and cancels from here
                limit = time_limit(msg.metadata)
                if limit and msg_type == M.EXECUTE_REQUEST:
                    self.executor.prepare_shell()  # IPython's first import is not the task's time
                slot.start(msg_id, limit)
                if limit:
                    self._watch_limit()
            try:
                outcome = handler(msg)
            except BaseException as e:  # noqa: B036 - handlers catch user errors; this is a bug net
                log.exception("%s handler failed", msg_type)
                outcome = self.executor.error(e, _method(msg_type))
            if slot is not None:
                stop = slot.end()
                if stop and outcome.status == "error":
                    outcome = self.executor.stopped(outcome, stop, msg_id, time_limit(msg.metadata),
                                                    _method(msg_type))
        self.output.flush()
        self._reply(msg, outcome, received, started, time.time())
        self._restore_signal_handlers()

    def _dispatch_batch(self, msg: Message, received: float, from_controller: bool) -> None:
        """Requests the controller sent together (``ipcluster.protocol.batch``): each one in turn, as
        if it had arrived alone (its own abort, clear, time limit and reply); the rest are dropped
        like queued requests if the engine stops in between."""
        try:
            if not from_controller:
                raise ProtocolError("a batch from elsewhere than the controller")
            parts = batching.unpack(msg)
        except ProtocolError as e:
            self.rejected("mux-rejected", f"dropped mux batch: {type(e).__name__}: {e}")
            return
        self._holding = True
        try:
            last = len(parts) - 1
            for i, part in enumerate(parts):
                if self.state.stop_reason is not None:
                    return
                if self.state.clear.is_set():
                    self._clear()
                self._more_parts = i < last
                self._dispatch(part, received, presigned=True)
                if self._held.due():
                    self._flush_held()
        finally:
            self._holding = self._more_parts = False
            self._flush_held()

    def _flush_held(self) -> None:
        if self.mux is not None:  # (held replies go on mux, from this thread or their own)
            self._dirty.add(self.mux)
        self._sending = True  # an interrupt waits until the held replies are out
        try:
            self._held.flush()
        finally:
            self._sending = False
        self._deliver_deferred_interrupt()

    def _send_held(self, frames: list[Any]) -> None:
        """Send held replies on mux (under the held replies' lock, from either thread)."""
        assert self.mux is not None
        send_frames(self.mux, frames)

    def _reply(self, msg: Message, outcome: Outcome, received: float, started: float,
               completed: float) -> None:
        metadata = {"engine_id": self.id, "engine_uuid": self.uuid, "received": received,
                    "started": started, "completed": completed, "status": outcome.status}
        msg_type = msg.msg_type
        reply_type = _REPLY_FOR.get(msg_type) or msg_type.removesuffix("_request") + "_reply"
        to_controller = self._route is self.mux or self._route in self._controller_links
        reply_to = msg.metadata.get("reply_to") if to_controller else None
        if reply_to and outcome.status == "ok" and not self.output.sent and _all_small(outcome.buffers):
            # A blocking load-balanced call waits on a socket connected to this engine: the reply
            # goes straight there (one hop less), and a copy marked "delivered" to the controller,
            # which records it without forwarding.  Only for successes without output: failures
            # go through the controller (it may retry them) and output must arrive before the reply.
            metadata["delivered"] = True
            frames = self.session.serialize(reply_type, outcome.content, parent=msg.header,
                                            metadata=metadata, buffers=outcome.buffers, idents=msg.idents)
            if self._reply_direct(str(reply_to).encode("ascii", "replace"), frames[len(msg.idents):]):
                self._recent.keep(frames, completed)  # sent again if the controller restarts (engines/recent.py)
                self._send(frames)
                return
            del metadata["delivered"]
        frames = self.session.serialize(reply_type, outcome.content, parent=msg.header,
                                        metadata=metadata, buffers=outcome.buffers, idents=msg.idents)
        if to_controller:
            self._recent.keep(frames, completed)  # sent again if the controller restarts (engines/recent.py)
            if self._more_parts and self._route is self.mux and self._held.hold(frames):
                return  # goes with the next replies of this batch
        self._send(frames)

    def _reply_direct(self, ident: bytes, frames: list[Any]) -> bool:
        """Send *frames* to the client socket *ident*: its raw link if it has one, else on the
        direct socket; ``False`` if it is not connected."""
        link = self._reply_links.get(ident)
        if link is not None:
            try:
                link.send(frames)
                return True
            except OSError:
                self._drop_link(link)
        assert self.direct is not None
        self._dirty.add(self.direct)
        try:
            send_frames(self.direct, [ident, *frames])
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                return False
            raise
        return True

    # --- sending on mux (main thread only) ----------------------------------------------------

    def _send(self, frames: list[Any]) -> None:
        """Send one message on the current route; large frames go zero-copy and are tracked.

        See the module docstring for why they are tracked.
        """
        route = self._route
        assert route is not None
        if isinstance(route, rawlink.RawLink):
            self._send_link(route, frames)
            return
        if self._holding and route is self.mux:
            # replies may be held (and sent by their thread): they go first, and every send is locked
            with self._held.lock:
                self._sending = True
                try:
                    self._held.flush_locked()
                finally:
                    self._sending = False
                self._send_zmq(route, frames)
            return
        self._send_zmq(route, frames)

    def _send_zmq(self, route: zmq.Socket, frames: list[Any]) -> None:
        last = len(frames) - 1
        sock = route
        self._dirty.add(sock)
        self._sending = True
        try:
            for i, frame in enumerate(frames):
                flags = _SNDMORE if i < last else 0
                if i == 0 and sock is self.direct:
                    try:
                        _raw_send(sock, frame, flags, True)
                    except zmq.ZMQError as e:
                        if e.errno == zmq.EHOSTUNREACH:  # the client is gone: nobody to tell
                            return
                        raise
                    continue
                if type(frame) is bytes:  # immutable: no need to know when libzmq releases it
                    _raw_send(sock, frame, flags, len(frame) < _COPY_THRESHOLD)
                elif _nbytes(frame) < _COPY_THRESHOLD:
                    _raw_send(sock, frame, flags, True)
                else:
                    self._trackers.append(sock.send(frame, flags, copy=False, track=True))
        finally:
            self._sending = False
        self._deliver_deferred_interrupt()

    def _send_link(self, link: rawlink.RawLink, frames: list[Any]) -> None:
        self._sending = True
        try:
            link.send(frames)
        except OSError as e:  # the client is gone (or stopped reading for TIMEOUT): nobody to tell
            controller = link in self._controller_links
            self.rejected("raw-link", f"could not send on a same-host connection: {type(e).__name__}: {e}")
            self._drop_link(link)
            if controller and self.mux is not None:  # the controller still gets it, through zmq
                self._dirty.add(self.mux)
                send_frames(self.mux, frames)
        finally:
            self._sending = False
        self._deliver_deferred_interrupt()

    def _deliver_deferred_interrupt(self) -> None:
        """Raise the SIGINT that arrived while a message was being sent (see ``_on_sigint``)."""
        if self._interrupt_pending:
            self._interrupt_pending = False
            if self.executor.running:
                signal.default_int_handler(signal.SIGINT, None)

    def _send_output(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any],
                     idents: list[bytes]) -> None:
        frames = self.session.serialize(msg_type, content, parent=parent, idents=idents)
        self._send(frames)
        if self._route is not self.mux and self._route not in self._controller_links and self.mux is not None:
            # the controller did not see this request: give it a copy of the output for iopub
            self._dirty.add(self.mux)
            self.mux.send_multipart(frames[len(idents):])

    def _wait_for_sends(self) -> None:
        """Block until libzmq has released the large frames of earlier replies."""
        while self._trackers:
            tracker = self._trackers.pop()
            if not tracker.done:
                tracker.wait()


def _peek_msg_id(frames: list[Any]) -> str:
    """The msg_id in a request's header, read without checking the signature (which the request
    still gets before it runs): only reported to the controller as "held"."""
    try:
        i = next(i for i, f in enumerate(frames) if bytes(f) == DELIM)
        header = json.loads(bytes(frames[i + 2]))
        return str(header["msg_id"]) if isinstance(header, dict) else ""
    except (StopIteration, IndexError, KeyError, ValueError):
        return ""


def _peek_msg_ids(frames: list[Any]) -> list[str]:
    """The msg_ids of a held request, or of each request in a held batch (read the same way)."""
    try:
        i = next(i for i, f in enumerate(frames) if bytes(f) == DELIM)
        header = json.loads(bytes(frames[i + 2]))
        if not (isinstance(header, dict) and header.get("msg_type") == batching.BATCH):
            return [_peek_msg_id(frames)]
        content = json.loads(bytes(frames[i + 5]))
        msg = Message(header, {}, {}, content if isinstance(content, dict) else {}, list(frames[i + 6:]))
        return [_peek_msg_id(part) for part in batching.unpack(msg)]
    except (StopIteration, IndexError, ValueError, ProtocolError):
        return []


_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def _readable(sock: zmq.Socket) -> bool:
    return bool(sock.getsockopt(zmq.EVENTS) & zmq.POLLIN)  # type: ignore[operator,arg-type]


def drain_fd(fd: int) -> None:
    """Read a non-blocking fd until it is empty (a self-pipe's wake-up bytes)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _all_small(buffers: list[Any]) -> bool:
    """Whether every buffer is copied when sent (so sending it twice costs little)."""
    for b in buffers:
        if (len(b) if type(b) is bytes else _nbytes(b)) >= _COPY_THRESHOLD:
            return False
    return True


def _nbytes(frame: Any) -> int:
    try:
        return memoryview(frame).nbytes
    except TypeError:
        return 0


_REPLY_FOR: dict[str, str] = M.REPLY_FOR


def _method(msg_type: str) -> str:
    """The method a request type names (``apply_request`` -> ``apply``), as error content says."""
    return msg_type.removesuffix("_request")


def time_limit(metadata: dict[str, Any]) -> float | None:
    """A request's ``time_limit`` (seconds > 0) from its metadata, or ``None``."""
    limit = metadata.get("time_limit")
    if limit is None:
        return None
    try:
        value = float(limit)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def run_engine(info: ConnectionInfo, uuid: str | None = None, supervisor_pid: int | None = None,
               startup: StartupCode | None = None, controller_timeout: float = CONTROLLER_TIMEOUT,
               seed_ns: dict[str, Any] | None = None, registration_timeout: float = REGISTRATION_TIMEOUT,
               supervision: Supervision | None = None) -> int:
    """Run one engine in this process; return its exit code."""
    relax_gc()  # before user code runs: startup code or a task may still choose its own thresholds
    return Engine(info, uuid=uuid, supervisor_pid=supervisor_pid, startup=startup,
                  controller_timeout=controller_timeout, seed_ns=seed_ns,
                  registration_timeout=registration_timeout, supervision=supervision).run()
