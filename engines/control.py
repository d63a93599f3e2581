"""The control thread: abort, clear, signal and shutdown while the main thread runs a task.

It owns the control DEALER (after registration) and one end of an inproc PAIR "wake" pipe to the
main thread; it never touches the mux socket.  It talks to the main thread through
:class:`SharedState` and by sending ``b"wake"`` on the pipe; the main thread sends ``b"stop"`` when
it is leaving, and the control thread then says goodbye to the controller
(``unregistration_notification``) and closes its sockets.

* ``abort_request`` adds msg_ids to :class:`AbortSet`; the main thread consumes an id instead of
  running the request and replies ``status: "aborted"``.
* ``clear_request`` sets ``SharedState.clear`` and wakes the main thread, which clears the
  namespace at once when idle, or before its next request.
* ``signal_request`` delivers the signal to the main thread (SIGINT becomes ``KeyboardInterrupt`` in
  the running task; see the engine's handler).  One with ``msg_ids`` (SIGINT only) is for those
  requests alone: it is sent only if the engine runs one of them, and recorded in
  :class:`~engines.interrupts.TargetedInterrupts` so that it is dropped if that request has ended by
  the time it arrives (it must not interrupt the next one).
* ``shutdown_request`` replies, unregisters, wakes the main thread to exit, and starts a watchdog:
  if the main thread has not finished within a second, it is interrupted (SIGINT), and a second
  later the process exits regardless.

For an engine without a supervisor (``--mpi``, or started without ``-n``) it also enforces time
limits and cancels (``task_interrupt_request``), as the supervisor would but interrupting only:
at the deadline, or on a cancel of the running request, it marks the engine's task slot (see
:mod:`engines.taskslot`) and interrupts the main thread for that request only (the request fails
with ``TaskTimeout`` / ``TaskCancelled``); a request that does not stop is interrupted again every
:data:`LONE_REINTERRUPT` seconds, with a warning: there is no supervisor to kill and restart the
engine (and a C call holding the GIL cannot be interrupted from this thread at all).

It also watches the control socket's connection (a zmq socket monitor, read in this thread like
the socket itself; see :mod:`engines.controller_watch`).  When the controller has been unreachable
for ``controller_timeout`` seconds it logs why, sets the stop reason ``"controller gone"`` and
stops the engine as a shutdown does (wake, then the same watchdog), without saying goodbye to a
controller that is not there; the engine then exits with
:data:`~engines.controller_watch.EXIT_CONTROLLER_GONE`.  A reconnection within the grace period
cancels it.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import zmq
from zmq.utils.monitor import parse_monitor_message

from ipcluster.errors import ProtocolError
from ipcluster.protocol import messages as M
from ipcluster.protocol.session import Message, Session

from engines.controller_watch import (CONTROLLER_GONE, CONTROLLER_TIMEOUT, EXIT_CONTROLLER_GONE,
                                      MONITORED_EVENTS, ControllerWatch)
from engines.error_content import engine_info, error_content
from engines.interrupts import TargetedInterrupts
from engines.logs import LimitedLog
from engines.taskslot import STOP_CANCEL, STOP_TIME_LIMIT, TaskSlot, slot_id

log = logging.getLogger("engines.control")

#: How long a shutdown waits for a busy main thread before interrupting it, then before exiting.
SHUTDOWN_GRACE = 1.0

#: Seconds between two registration requests sent again (a reply is normally there in milliseconds).
REREGISTER_INTERVAL = 0.5

#: Cap on remembered abort ids (ids of requests that never arrive would otherwise pile up).
MAX_ABORTED = 100_000

#: Engines without a supervisor: seconds between interrupts of a request that does not stop.
LONE_REINTERRUPT = 2.0
#: Seconds a cancel for a request that is not running (yet) is kept, polled every CANCEL_POLL s.
CANCEL_WINDOW = 5.0
CANCEL_POLL = 0.05


class AbortSet:
    """Thread-safe set of msg_ids to abort; bounded, oldest ids forgotten first."""

    def __init__(self, limit: int = MAX_ABORTED):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def add(self, msg_ids: Iterable[str]) -> None:
        with self._lock:
            for mid in msg_ids:
                self._ids[str(mid)] = None
                self._ids.move_to_end(str(mid))
            while len(self._ids) > self._limit:
                self._ids.popitem(last=False)

    def consume(self, msg_id: str) -> bool:
        """True (once) if *msg_id* was aborted: the caller must not run it."""
        if not self._ids:  # the usual case, without the lock (an add racing with this check
            return False  # could as well have come just after it)
        with self._lock:
            if msg_id in self._ids:
                del self._ids[msg_id]
                return True
            return False

    def __contains__(self, msg_id: object) -> bool:
        with self._lock:
            return msg_id in self._ids

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)


@dataclass
class SharedState:
    """What the main and control threads share (each field is safe to use from both)."""

    aborted: AbortSet = field(default_factory=AbortSet)
    #: set by clear_request; the main thread clears the namespace and resets it
    clear: threading.Event = field(default_factory=threading.Event)
    #: why the main loop must stop ("shutdown", "terminated", "controller gone"); None while serving
    stop_reason: str | None = None
    #: set by the main thread once it has left its loop
    main_done: threading.Event = field(default_factory=threading.Event)
    #: the engine id of a registration made again after a lost connection, until the main thread
    #: has sent its ready notification (see ``Engine._ready_again``)
    reregistered: int | None = None
    #: which request each SIGINT the control thread sends for one request is for
    interrupts: TargetedInterrupts = field(default_factory=TargetedInterrupts)


class ControlThread(threading.Thread):
    """Serves the control socket (see the module docstring).

    Parameters
    ----------
    socket:
        The registered control DEALER; from now on used by this thread only.
    wake_url:
        inproc address of the main thread's wake PAIR (bound by the main thread).
    controller_url:
        The controller address the socket is connected to (for the log).
    controller_timeout:
        Seconds the controller may be unreachable before the engine stops; ``<= 0``: never.
    slot:
        The engine's task slot: what it runs (read to direct a signal to one request).
    enforce_limits:
        Whether this thread enforces time limits and cancels from *slot* (an engine without a
        supervisor; otherwise the supervisor does).
    """

    def __init__(self, ctx: zmq.Context, socket: zmq.Socket, wake_url: str, session: Session,
                 state: SharedState, engine_uuid: str, engine_id: int | None,
                 interrupt: Callable[[int], None] | None = None, controller_url: str = "",
                 controller_timeout: float = CONTROLLER_TIMEOUT, slot: TaskSlot | None = None,
                 enforce_limits: bool = True):
        super().__init__(name="engine-control", daemon=True)
        #: the engine's task slot, if known
        self.slot = slot
        #: time limits and cancels are enforced here (see the module docstring)
        self.enforce_limits = slot is not None and enforce_limits
        self._stopping: tuple[int, float] | None = None  # (slot seq, when to interrupt again)
        self._cancels: dict[str, float] = {}  # msg_id -> until when
        self.ctx = ctx
        self.socket = socket
        self.wake_url = wake_url
        self.session = session
        self.state = state
        self.engine_uuid = engine_uuid
        self.engine_id = engine_id
        self.interrupt = interrupt or _signal_main_thread
        self.rejected = LimitedLog(log)
        self.unregistered = False
        self.handlers: dict[str, Callable[[Message], dict[str, Any]]] = {
            M.ABORT_REQUEST: self.on_abort,
            M.CLEAR_REQUEST: self.on_clear,
            M.SIGNAL_REQUEST: self.on_signal,
            M.SHUTDOWN_REQUEST: self.on_shutdown,
            M.TASK_INTERRUPT_REQUEST: self.on_task_interrupt,
        }
        self._after_reply: Callable[[], None] | None = None
        self._pipe: zmq.Socket | None = None
        self.controller_url = controller_url
        self.watch = ControllerWatch(controller_timeout)
        #: the content of our registration request (set by the engine), sent again by register_again
        self.registration: dict[str, Any] | None = None
        self._registered_again_at = -math.inf
        # msg_ids of our latest registration requests: only a reply to one of them counts (the
        # controller forwards what clients send, so a registration_reply may come from anyone
        # holding the key, at any time)
        self._registrations_sent: deque[str] = deque(maxlen=8)
        self.returns: dict[str, Callable[[Message], None]] = {
            M.REGISTRATION_REPLY: self.on_registration_reply,
            M.REREGISTRATION_NOTIFICATION: lambda msg: self.register_again("the controller asked"),
        }
        self._monitor: zmq.Socket | None = None

    # --- loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._pipe = self.ctx.socket(zmq.PAIR)
            self._pipe.linger = 0
            self._pipe.connect(self.wake_url)
            poller = zmq.Poller()
            poller.register(self.socket, zmq.POLLIN)
            poller.register(self._pipe, zmq.POLLIN)
            if self.watch.enabled:
                self._start_monitor(poller)
            while True:
                now = time.monotonic()
                remaining = self.watch.remaining(now)
                if self.enforce_limits:
                    due = self._slot_due(now)
                    if due is not None:
                        remaining = due - now if remaining is None else min(remaining, due - now)
                # rounded up: waking early would spin until the deadline
                events = dict(poller.poll(None if remaining is None else math.ceil(max(remaining, 0) * 1000)))
                if self._pipe in events and self._pipe.recv() == b"stop":
                    break
                if self._monitor is not None and self._monitor in events:
                    self._on_monitor(self._monitor.recv_multipart())
                if self.watch.expired(time.monotonic()):
                    self._controller_gone()
                if self.socket in events:
                    self._handle(self.socket.recv_multipart())
                if self.enforce_limits:
                    self._check_slot(time.monotonic())
        except zmq.ContextTerminated:
            pass
        except Exception:
            log.exception("control thread failed")
        finally:
            self._close()

    def _handle(self, frames: list[bytes]) -> None:
        try:
            msg = self.session.deserialize(frames)
        except ProtocolError as e:
            self.rejected("control-rejected", f"dropped control message: {type(e).__name__}: {e}")
            return
        if msg.msg_type in self.returns:  # registering again: see register_again
            self.returns[msg.msg_type](msg)
            return
        handler = self.handlers.get(msg.msg_type)
        if handler is None:
            self.rejected("control-unknown", f"ignored {msg.msg_type!r} on control")
            return
        method = msg.msg_type.removesuffix("_request")
        try:
            content = handler(msg)
        except Exception as e:
            log.warning("%s failed: %s: %s", msg.msg_type, type(e).__name__, e)
            content = error_content(e, engine_info(self.engine_id, self.engine_uuid, method))
        self.reply(msg, content)
        if self._after_reply is not None:
            action, self._after_reply = self._after_reply, None
            action()

    def _start_monitor(self, poller: zmq.Poller) -> None:
        try:
            self._monitor = self.socket.get_monitor_socket(MONITORED_EVENTS)
        except (zmq.ZMQError, NotImplementedError) as e:  # serving matters more than noticing
            log.warning("cannot watch the connection to the controller (%s); this engine will not "
                        "exit by itself if the controller dies", e)
            return
        poller.register(self._monitor, zmq.POLLIN)

    def _on_monitor(self, frames: list[bytes]) -> None:
        event = parse_monitor_message(frames)["event"]
        change = self.watch.on_event(event, time.monotonic())
        if change == "lost":
            log.warning("lost the connection to the controller at %s; exiting in %g s unless it comes back",
                        self.controller_url, self.watch.timeout)
        elif change == "back":
            log.info("the connection to the controller at %s is back", self.controller_url)
            self.register_again("the connection came back")

    # --- registering again (a restarted controller, a healed partition) --------------------------
    # The controller may have lost us: restarted from its store (it knows our id), or it
    # unregistered us while we could not answer.  We register again with the same uuid, so we
    # keep our id; the main thread then sends a ready notification listing the requests it holds.

    def register_again(self, why: str) -> None:
        """Send a registration request again (at most one per :data:`REREGISTER_INTERVAL`)."""
        if self.registration is None or self.unregistered or self.state.stop_reason is not None:
            return
        now = time.monotonic()
        if now - self._registered_again_at < REREGISTER_INTERVAL:
            return
        self._registered_again_at = now
        log.info("registering again with the controller at %s (%s)", self.controller_url, why)
        content = dict(self.registration, id=self.engine_id, reconnect=True)
        content.pop("restart_of", None)  # that was about our first registration
        header = self.session.header(M.REGISTRATION_REQUEST)
        self._registrations_sent.append(header["msg_id"])
        self.socket.send_multipart(self.session.serialize(M.REGISTRATION_REQUEST, content, header=header))

    def on_registration_reply(self, msg: Message) -> None:
        if msg.parent_id not in self._registrations_sent:
            log.warning("ignored a registration_reply to no registration request of this engine")
            return
        self._registrations_sent.clear()
        if msg.content.get("status") != "ok":
            log.error("the controller refused this engine's registration: %s", msg.content.get("evalue"))
            self._begin_shutdown()
            return
        try:
            self.engine_id = int(msg.content["id"])
        except (KeyError, TypeError, ValueError):
            log.error("malformed registration_reply: %.200r", msg.content)
            return
        log.info("registered again as engine %d", self.engine_id)
        self.state.reregistered = self.engine_id
        self.wake_main()

    def _controller_gone(self) -> None:
        """The grace period ran out: stop the engine, like a shutdown, with its own exit code."""
        log.error("controller at %s gone for %.1f s; exiting", self.controller_url,
                  self.watch.lost_for(time.monotonic()))
        self.unregistered = True  # nobody to tell, and the goodbye would only wait out its linger
        if self.state.stop_reason is None:
            self.state.stop_reason = CONTROLLER_GONE
        self.wake_main()
        threading.Thread(target=self._watchdog, args=(EXIT_CONTROLLER_GONE,),
                         name="engine-shutdown-watchdog", daemon=True).start()

    def reply(self, msg: Message, content: dict[str, Any]) -> None:
        metadata = {"engine_id": self.engine_id, "engine_uuid": self.engine_uuid,
                    "status": content.get("status", "ok")}
        self.socket.send_multipart(self.session.serialize(
            M.REPLY_FOR[msg.msg_type], content, parent=msg.header, metadata=metadata, idents=msg.idents))

    def wake_main(self) -> None:
        assert self._pipe is not None
        self._pipe.send(b"wake")

    # --- handlers -----------------------------------------------------------------------------

    def on_abort(self, msg: Message) -> dict[str, Any]:
        ids = msg.content.get("msg_ids") or []
        if not isinstance(ids, list):
            raise TypeError("abort_request msg_ids must be a list")
        self.state.aborted.add(ids)
        return {"status": "ok"}

    def on_clear(self, msg: Message) -> dict[str, Any]:
        self.state.clear.set()
        self.wake_main()
        return {"status": "ok"}

    def on_signal(self, msg: Message) -> dict[str, Any]:
        """Send the signal to the main thread, after the reply (a terminating signal must not
        cost the client its answer).  With ``msg_ids`` (SIGINT only): only if one of those
        requests runs, and only to it (see :mod:`engines.interrupts`)."""
        signum = signal.Signals(int(msg.content.get("signum", 0)))
        ids = msg.content.get("msg_ids")
        if ids is None:
            self._after_reply = lambda: self.interrupt(signum)
            return {"status": "ok"}
        if not isinstance(ids, list):
            raise TypeError("signal_request msg_ids must be a list")
        if signum != signal.SIGINT:
            raise ValueError(f"signal_request msg_ids: only SIGINT can be sent to a request, not {signum.name}")
        run = self.slot.running() if self.slot is not None else None
        if run is None or run.msg_id not in {slot_id(str(m)) for m in ids[:10_000]}:
            return {"status": "ok", "interrupting": False}
        seq = run.seq
        self._after_reply = lambda: self.state.interrupts.send(seq, self.interrupt)
        return {"status": "ok", "interrupting": True}

    def on_task_interrupt(self, msg: Message) -> dict[str, Any]:
        """Stop the running request if it is one of ``msg_ids`` (engines without a supervisor)."""
        ids = msg.content.get("msg_ids") or []
        if not isinstance(ids, list):
            raise TypeError("task_interrupt_request msg_ids must be a list")
        if not self.enforce_limits:
            return {"status": "ok", "interrupting": False}  # the supervisor does it
        until = time.monotonic() + CANCEL_WINDOW
        for m in ids[:10_000]:
            self._cancels[str(m)] = until
        self._check_slot(time.monotonic())
        return {"status": "ok", "interrupting": True}

    # --- time limits and cancels of an engine without a supervisor -----------------------------

    def _slot_due(self, now: float) -> float | None:
        assert self.slot is not None
        if self._stopping is not None:
            return self._stopping[1]
        run = self.slot.running()
        if run is not None and run.deadline:
            return run.deadline
        return now + CANCEL_POLL if self._cancels else None

    def _check_slot(self, now: float) -> None:
        assert self.slot is not None
        run = self.slot.running()
        if self._cancels:
            self._cancels = {m: t for m, t in self._cancels.items() if t > now}
        if self._stopping is not None and (run is None or run.seq != self._stopping[0]):
            self._stopping = None
        if run is None:
            return
        if self._stopping is None:
            if self._cancels.pop(run.msg_id, None) is not None:
                stop = STOP_CANCEL
            elif run.deadline and now >= run.deadline:
                stop = STOP_TIME_LIMIT
            else:
                return
            if self.slot.mark(run.seq, stop):
                self._stopping = (run.seq, now + LONE_REINTERRUPT)
                self.state.interrupts.send(run.seq, self.interrupt)
        elif now >= self._stopping[1]:
            log.warning("request %s is still running %g s after being interrupted; this engine has no "
                        "supervisor to kill and restart it: interrupting it again", run.msg_id, LONE_REINTERRUPT)
            self._stopping = (run.seq, now + LONE_REINTERRUPT)
            self.state.interrupts.send(run.seq, self.interrupt)

    def on_shutdown(self, msg: Message) -> dict[str, Any]:
        self._after_reply = self._begin_shutdown
        return {"status": "ok"}

    def _begin_shutdown(self) -> None:
        self.unregister()
        if self.state.stop_reason is None:
            self.state.stop_reason = "shutdown"
        self.wake_main()
        threading.Thread(target=self._watchdog, name="engine-shutdown-watchdog", daemon=True).start()

    def _watchdog(self, exit_code: int = 0) -> None:
        if self.state.main_done.wait(SHUTDOWN_GRACE):
            return
        log.warning("shutdown: main thread busy for %.1f s; interrupting it", SHUTDOWN_GRACE)
        self.interrupt(signal.SIGINT)
        if self.state.main_done.wait(SHUTDOWN_GRACE):
            return
        log.warning("shutdown: main thread still busy; exiting now")
        logging.shutdown()
        os._exit(exit_code)

    def unregister(self) -> None:
        """Tell the controller this engine is leaving (once)."""
        if self.unregistered:
            return
        self.unregistered = True
        try:
            self.socket.send_multipart(self.session.serialize(M.UNREGISTRATION_NOTIFICATION, {}))
        except zmq.ZMQError as e:
            log.warning("could not send unregistration: %s", e)

    def _close(self) -> None:
        try:
            self.unregister()
        finally:
            if self._monitor is not None:
                self._monitor.close(linger=0)
            # undelivered messages for a controller that is gone would only delay the exit
            self.socket.close(linger=0 if self.watch.gone else 1000)
            if self._pipe is not None:
                self._pipe.close(linger=0)


def _signal_main_thread(signum: int) -> None:
    """Deliver *signum* to the main thread, so a blocking call there (sleep, poll) is interrupted.

    Process-wide actions (SIGKILL, a default SIGTERM) still apply to the whole process.
    """
    signal.pthread_kill(threading.main_thread().ident or 0, signum)
