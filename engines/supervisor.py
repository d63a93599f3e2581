"""The engine-host supervisor: forks N engines from one pre-imported parent and watches them.

Why a supervisor: starting N Python processes that each import zmq, cloudpickle and the engine
costs N times the import time; forking a parent that already imported them costs almost nothing.
IPython is *not* pre-imported (engines import it on their first ``execute_request``).

The supervisor

* chooses each child's uuid before forking, so it can name the engine when it dies;
* gives each child a pipe as stdout/stderr, relays the lines to its own log and keeps the last
  lines of each, to send with a death report;
* notices a death at once (SIGCHLD wakes its poll through ``signal.set_wakeup_fd``; no sleeping
  loops) and reports ``engine_died_notification`` on the ``hub`` socket, without ever blocking:
  the controller may be the reason the engines died (a report that cannot be queued is logged and
  dropped, and the socket's linger is short);
* on SIGTERM/SIGINT terminates the children (SIGTERM, then SIGKILL after :data:`KILL_GRACE`; a
  second signal kills at once) and exits;
* enforces time limits and stops cancelled requests: each engine shows in a shared-memory slot
  what it runs (:mod:`engines.taskslot`); at a request's deadline, or when the controller relays a
  cancel (``task_interrupt_request``), the supervisor marks the slot and sends the engine SIGINT
  (the task fails with ``TaskTimeout`` / ``TaskCancelled``); if the request is still running
  :data:`INTERRUPT_GRACE` seconds later (a C loop holding the GIL, a task that ignores
  ``KeyboardInterrupt``, a stopped process) it kills the engine (SIGKILL), reports which request
  it killed and why, and starts a new engine in its place;
* restarts engines that die, with ``restart_engines``: the new engine runs the startup code again
  and gets the dead one's id from the controller (registration names the uuid it replaces).  A
  crash-looping engine does not spin: the n-th death within :data:`RESTART_WINDOW` seconds waits
  ``RESTART_BACKOFF * 2**(n-2)`` seconds (at most :data:`RESTART_BACKOFF_MAX`; the first restart
  is immediate), and after :data:`MAX_RESTARTS` deaths within the window that engine is not
  restarted again.  Engines killed for a time limit or a cancel are always restarted and do not
  count against this budget.  Clean exits (code 0), a lost controller (4) and engines stopped
  with the supervisor are never restarted;
* exits when the last child has (and no restart is due): 0 if every child exited 0; 4
  (:data:`~engines.controller_watch.EXIT_CONTROLLER_GONE`) if the engines stopped because their
  controller is gone (each exited 4, or 0 if shut down earlier); else 1 (statuses are logged).

Only the parent has a zmq context, and it is created *after* the first children are forked: a
forked child must not use a live context.  Each child creates its own.  A restarted engine is
forked later, from a parent whose context exists: the child never touches that context or its
sockets and never lets them be collected (it ends in ``os._exit``), so only their file descriptors
are inherited, and they close when the child exits.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

import zmq

from ipcluster.errors import ProtocolError
from ipcluster.protocol import messages as M
from ipcluster.protocol.connection import ConnectionInfo
from ipcluster.protocol.limits import REQUEST, set_limit
from ipcluster.protocol.session import Session, new_id

from engines.controller_watch import CONTROLLER_TIMEOUT, EXIT_CONTROLLER_GONE, REGISTRATION_TIMEOUT
from engines.engine import drain_fd, run_engine
from engines.execution import StartupCode
from engines.logs import setup_logging
from engines.taskslot import STOP_CANCEL, STOP_TIME_LIMIT, Supervision, TaskSlots

log = logging.getLogger("engines.supervisor")

#: Seconds between SIGTERM and SIGKILL when stopping the children.
KILL_GRACE = 2.0
#: Lines of each child's output kept for its death report.
TAIL_LINES = 50
#: Characters of output sent in a death report.
TAIL_CHARS = 8192
#: Linger (ms) of the hub socket: time for the last death reports to go out to a live controller.
HUB_LINGER = 500
#: Seconds between interrupting a request (time limit, cancel) and killing its engine.
INTERRUPT_GRACE = 2.0
#: Restart budget of one engine (with ``restart_engines``): deaths counted within this many seconds,
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: first back-off delay (seconds, doubling per death within the window) and its cap.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 8.0
#: Seconds a cancel for a request that is not running (yet) is kept, polled every CANCEL_POLL s:
#: the request may be starting just as the cancel arrives (a queued one is aborted by the engine).
CANCEL_WINDOW = 5.0
CANCEL_POLL = 0.05

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """One forked engine as the supervisor sees it."""

    index: int
    uuid: str
    pid: int
    out_fd: int | None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    partial: bytes = b""
    exit_code: int | None = None
    #: the request being stopped: (slot seq, msg_id, STOP_*, limit, when to kill), else None
    stopping: tuple[int, str, int, float, float] | None = None
    #: the request this supervisor killed the engine for: {"msg_id", "ename", "evalue"}
    killed: dict[str, str] | None = None
    #: msg_id -> until when a cancel for it (not running yet) is kept
    cancels: dict[str, float] = field(default_factory=dict)

    def output(self) -> str:
        text = "\n".join(self.tail)
        if self.partial:
            text += ("\n" if text else "") + self.partial.decode("utf-8", "replace")
        return text[-TAIL_CHARS:]


class Supervisor:
    """Runs *n* engines as children of this process (see the module docstring).

    Parameters
    ----------
    info:
        The cluster's connection info (also used for the ``hub`` socket).
    n:
        How many engines to fork.
    log_stream:
        Where the children's output lines are relayed (the supervisor's own log).
    log_level:
        Log level the children use.
    startup:
        Startup code each child runs once registered (not the supervisor: namespaces are per engine).
    controller_timeout:
        Each child's grace period for a lost controller (see :mod:`engines.controller_watch`).
    registration_timeout:
        How long each child waits for the controller's registration reply.
    restart_engines:
        Start a new engine in place of one that died (see the module docstring for the budget).
    interrupt_grace:
        Seconds between interrupting a request (time limit, cancel) and killing its engine.
    """

    def __init__(self, info: ConnectionInfo, n: int, log_stream: TextIO | None = None,
                 log_level: str = "INFO", startup: StartupCode | None = None,
                 controller_timeout: float = CONTROLLER_TIMEOUT,
                 registration_timeout: float = REGISTRATION_TIMEOUT,
                 restart_engines: bool = False, interrupt_grace: float = INTERRUPT_GRACE):
        if n < 1:
            raise ValueError("a supervisor needs at least one engine")
        if interrupt_grace < 0:
            raise ValueError(f"interrupt_grace must be >= 0 seconds, not {interrupt_grace}")
        self.restart_engines = restart_engines
        self.interrupt_grace = interrupt_grace
        self.identity = f"supervisor-{new_id()}"
        self.slots = TaskSlots(n)
        self._deaths: dict[int, deque[float]] = {}  # slot index -> recent death times
        # (when, slot index, the death report of the engine it replaces)
        self._respawns: list[tuple[float, int, dict[str, Any]]] = []
        self._timer_r = self._timer_w = -1
        self.poller: zmq.Poller | None = None
        self.info = info
        self.n = n
        self.log_stream = log_stream if log_stream is not None else sys.stderr
        self.log_level = log_level
        self.startup = startup
        self.controller_timeout = controller_timeout
        self.registration_timeout = registration_timeout
        self.children: dict[int, Child] = {}
        self.finished: list[Child] = []
        self.session = Session(info.key_bytes)
        self._stop_signals = 0
        self._kill_at: float | None = None
        self._wake_r = self._wake_w = -1
        self.hub: zmq.Socket | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Fork the engines, supervise them until all have exited; return the exit code."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._timer_r, self._timer_w = os.pipe()  # engines starting a request with a time limit
        os.set_blocking(self._timer_r, False)
        os.set_blocking(self._timer_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, _ignore)  # a Python handler, so the wakeup fd is written
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        for index in range(self.n):
            self._fork(index)
        log.info("supervisor %d started %d engines: %s", os.getpid(), self.n,
                 ", ".join(str(pid) for pid in self.children))
        ctx = zmq.Context()
        if self.info.curve_serverkey:  # CurveZMQ: every socket of this context is a CURVE client
            from ipcluster.protocol.curve import set_client_keys

            set_client_keys(ctx, self.info)
        try:
            self.hub = ctx.socket(zmq.DEALER)
            self.hub.linger = HUB_LINGER
            self.hub.setsockopt(zmq.IDENTITY, self.identity.encode("ascii"))  # the controller addresses us
            set_limit(self.hub, REQUEST, self.info.max_message_size)
            self.hub.connect(self.info.url("hub"))
            self._supervise()
        finally:
            if self.hub is not None:
                # let the last death reports go out, unless nobody is there to take them
                self.hub.close(linger=0 if self._controller_gone() else HUB_LINGER)
            ctx.term()
            signal.set_wakeup_fd(-1)
            for fd in (self._wake_r, self._wake_w, self._timer_r, self._timer_w):
                os.close(fd)
        return self._exit_code()

    def _controller_gone(self) -> bool:
        """Did the engines stop because the controller is gone (see the module docstring)?"""
        codes = [c.exit_code for c in self.finished]
        return EXIT_CONTROLLER_GONE in codes and all(code in (0, EXIT_CONTROLLER_GONE) for code in codes)

    def _exit_code(self) -> int:
        codes = [c.exit_code for c in self.finished]
        if all(code == 0 for code in codes):
            log.info("all %d engines exited cleanly", len(codes))
            return 0
        if self._controller_gone():
            log.error("the controller at %s is gone: %d of %d engines exited after losing it; exiting",
                      self.info.url("hub"), codes.count(EXIT_CONTROLLER_GONE), len(codes))
            return EXIT_CONTROLLER_GONE
        for c in self.finished:
            log.warning("engine pid %d (uuid %s) exited with %s", c.pid, c.uuid, _describe_exit(c.exit_code))
        return 1

    # --- forking ------------------------------------------------------------------------------

    def _fork(self, index: int, restart_of: dict[str, Any] | None = None) -> None:
        uuid = new_id()
        self.slots[index].reset()
        r, w = os.pipe()
        for stream in (sys.stdout, sys.stderr, self.log_stream):
            stream.flush()  # else the child would write the parent's buffered text again
        pid = os.fork()
        if pid == 0:  # child: never returns
            os.close(r)
            self._become_engine(uuid, w, index, restart_of)
        os.close(w)
        os.set_blocking(r, False)
        self.children[pid] = Child(index, uuid, pid, r)
        if self.poller is not None:
            self.poller.register(r, zmq.POLLIN)

    def _become_engine(self, uuid: str, out_fd: int, index: int = 0,
                       restart_of: dict[str, Any] | None = None) -> None:
        code = 1
        try:
            supervisor_pid = os.getppid()
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd in [self._wake_r, self._wake_w, self._timer_r, *(c.out_fd for c in self.children.values())]:
                if fd is not None and fd >= 0:
                    os.close(fd)
            _die_with_parent(supervisor_pid)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            setup_logging(self.log_level, stream=sys.__stderr__)
            # a restart forks after the parent made its zmq context: the child never touches that
            # context or its sockets (they stay referenced, so they are never collected here)
            supervision = Supervision(self.identity, self.slots[index], self._timer_w,
                                      restart_of["uuid"] if restart_of else None, restart_of)
            code = run_engine(self.info, uuid=uuid, supervisor_pid=supervisor_pid, startup=self.startup,
                              controller_timeout=self.controller_timeout,
                              registration_timeout=self.registration_timeout, supervision=supervision)
        except BaseException:  # noqa: B036 - a child must end in os._exit, whatever happened
            traceback.print_exc()
        finally:
            for stream in (sys.__stdout__, sys.__stderr__):
                try:
                    if stream is not None:
                        stream.flush()
                except Exception:
                    pass
            os._exit(code)

    # --- supervising --------------------------------------------------------------------------

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop_signals += 1

    def _supervise(self) -> None:
        assert self.hub is not None
        poller = self.poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(self._timer_r, zmq.POLLIN)
        poller.register(self.hub, zmq.POLLIN)
        for c in self.children.values():
            if c.out_fd is not None:
                poller.register(c.out_fd, zmq.POLLIN)
        handled_signals = 0
        while self.children or (self._respawns and not self._stop_signals):
            due = [t for t in (self._kill_at, self._next_slot_check(), self._next_respawn()) if t is not None]
            timeout = None
            if due:  # rounded up: waking early would spin until the deadline
                timeout = math.ceil(max(0.0, min(due) - time.monotonic()) * 1000)
            for sock, _ in poller.poll(timeout):
                if sock == self._wake_r:
                    drain_fd(self._wake_r)
                elif sock == self._timer_r:
                    drain_fd(self._timer_r)
                elif sock is self.hub:
                    self._drain_hub()
                else:
                    self._read_output(poller, sock)
            self._reap(poller)
            if self._stop_signals > handled_signals:
                handled_signals = self._stop_signals
                self._respawns.clear()
                self._terminate(kill_now=handled_signals > 1)
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                self._terminate(kill_now=True)
            self._check_slots(time.monotonic())
            self._respawn_due(time.monotonic())

    # --- time limits and cancels ----------------------------------------------------------------

    def _next_slot_check(self) -> float | None:
        """When :meth:`_check_slots` next has something to do (``None``: only when woken)."""
        due: list[float] = []
        for c in self.children.values():
            if c.stopping is not None:
                due.append(c.stopping[4])
            elif c.cancels:
                due.append(time.monotonic() + CANCEL_POLL)
            run = self.slots[c.index].running()
            if run is not None and run.deadline and c.stopping is None:
                due.append(run.deadline)
        return min(due) if due else None

    def _check_slots(self, now: float) -> None:
        """Interrupt requests past their deadline or cancelled; kill engines that ignore it."""
        for c in list(self.children.values()):
            slot = self.slots[c.index]
            run = slot.running()
            if c.stopping is not None and (run is None or run.seq != c.stopping[0]):
                c.stopping = None  # the interrupted request ended by itself
            if c.cancels:
                c.cancels = {m: t for m, t in c.cancels.items() if t > now}
            if run is None:
                continue
            if c.stopping is None:
                if run.msg_id in c.cancels:
                    del c.cancels[run.msg_id]
                    self._interrupt(c, run.seq, run.msg_id, STOP_CANCEL, run.limit, now)
                elif run.deadline and now >= run.deadline:
                    self._interrupt(c, run.seq, run.msg_id, STOP_TIME_LIMIT, run.limit, now)
            elif now >= c.stopping[4]:
                self._kill_for(c, now)

    def _interrupt(self, c: Child, seq: int, msg_id: str, stop: int, limit: float, now: float) -> None:
        if not self.slots[c.index].mark(seq, stop):
            return  # it ended just now
        why = "its time limit" if stop == STOP_TIME_LIMIT else "a cancel"
        log.info("engine pid %d: interrupting request %s (%s)", c.pid, msg_id, why)
        c.stopping = (seq, msg_id, stop, limit, now + self.interrupt_grace)
        try:
            os.kill(c.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def _kill_for(self, c: Child, now: float) -> None:
        assert c.stopping is not None
        seq, msg_id, stop, limit, _ = c.stopping
        if self.slots[c.index].seq() != seq:  # it ended at the last moment
            c.stopping = None
            return
        if stop == STOP_TIME_LIMIT:
            ename = "TaskTimeout"
            evalue = (f"task {msg_id} ran longer than its time limit of {limit:g} s and was still running "
                      f"{self.interrupt_grace:g} s after being interrupted; its engine was killed and restarted")
        else:
            ename = "TaskCancelled"
            evalue = (f"task {msg_id} was cancelled and was still running {self.interrupt_grace:g} s after "
                      "being interrupted; its engine was killed and restarted")
        log.warning("engine pid %d: killing it (%s)", c.pid, evalue)
        c.killed = {"msg_id": msg_id, "ename": ename, "evalue": evalue}
        c.stopping = None
        _kill(c.pid)

    def _on_interrupt_request(self, content: dict[str, Any]) -> None:
        """The controller relays a cancel: stop the engine *uuid* if it runs one of *msg_ids*.

        With ``kill_if_stopped`` (the controller unregistered the engine for missing heartbeats)
        the engine is killed if its process is stopped (SIGSTOP, a debugger): it could not answer
        heartbeats, and it would otherwise stay there for good.  A running engine is left alone:
        it missed heartbeats because of the network, and registers again when it is back.
        """
        uuid, ids = content.get("uuid"), content.get("msg_ids")
        child = next((c for c in self.children.values() if c.uuid == uuid), None)
        if child is not None and content.get("kill_if_stopped"):
            if _stopped(child.pid):
                log.warning("engine pid %d is stopped and was unregistered for missing heartbeats; killing it",
                            child.pid)
                _kill(child.pid)
            return
        if child is None or not isinstance(ids, list):
            return
        until = time.monotonic() + CANCEL_WINDOW
        for m in ids[:10_000]:
            if isinstance(m, str):
                child.cancels[m] = until

    # --- restarts ---------------------------------------------------------------------------------

    def _next_respawn(self) -> float | None:
        return min(r[0] for r in self._respawns) if self._respawns and not self._stop_signals else None

    def _respawn_due(self, now: float) -> None:
        if self._stop_signals:
            return
        due = [r for r in self._respawns if r[0] <= now]
        if not due:
            return
        self._respawns = [r for r in self._respawns if r[0] > now]
        for _, index, death in due:
            self._fork(index, restart_of=death)
            pid = next(p for p, c in self.children.items() if c.index == index)
            log.info("restarted engine %s as pid %d", death["uuid"], pid)

    def _restart_delay(self, child: Child) -> float | None:
        """Seconds to wait before restarting *child*'s engine; ``None``: do not restart it."""
        if self._stop_signals:
            return None
        if child.killed is not None:
            return 0.0  # killed on purpose: always back at once, and not the engine's fault
        if not self.restart_engines or child.exit_code in (0, EXIT_CONTROLLER_GONE):
            return None
        now = time.monotonic()
        deaths = self._deaths.setdefault(child.index, deque())
        deaths.append(now)
        while deaths and deaths[0] < now - RESTART_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_RESTARTS:
            log.error("engine %s died %d times within %g s; not restarting it again", child.uuid,
                      len(deaths), RESTART_WINDOW)
            return None
        if len(deaths) == 1:
            return 0.0
        return min(RESTART_BACKOFF * 2 ** (len(deaths) - 2), RESTART_BACKOFF_MAX)

    def _terminate(self, kill_now: bool) -> None:
        sig = signal.SIGKILL if kill_now else signal.SIGTERM
        if self.children:
            log.info("sending %s to %d engines", sig.name, len(self.children))
        for pid in self.children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        self._kill_at = None if kill_now else time.monotonic() + KILL_GRACE

    def _drain_hub(self) -> None:
        assert self.hub is not None
        while self.hub.poll(0):
            frames = self.hub.recv_multipart()
            try:
                msg = self.session.deserialize(frames, has_idents=False)
            except ProtocolError as e:
                log.warning("dropped a message on the hub socket: %s: %s", type(e).__name__, e)
                continue
            if msg.msg_type == M.TASK_INTERRUPT_REQUEST:
                self._on_interrupt_request(msg.content)
            else:
                log.debug("ignored %r on the hub socket", msg.msg_type)

    def _read_output(self, poller: zmq.Poller, fd: int) -> None:
        child = next((c for c in self.children.values() if c.out_fd == fd), None)
        if child is None:
            poller.unregister(fd)
            os.close(fd)
            return
        self._pump(child, poller)

    def _pump(self, child: Child, poller: zmq.Poller) -> None:
        """Relay what *child* has written so far; close its pipe at EOF."""
        fd = child.out_fd
        if fd is None:
            return
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                os.close(fd)
                child.out_fd = None
                self._relay(child, b"", final=True)
                return
            self._relay(child, data)

    def _relay(self, child: Child, data: bytes, final: bool = False) -> None:
        *lines, child.partial = (child.partial + data).split(b"\n")
        if final and child.partial:
            lines.append(child.partial)
            child.partial = b""
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            child.tail.append(line)
            try:
                self.log_stream.write(f"[engine pid {child.pid}] {line}\n")
            except (OSError, ValueError):
                pass
        if lines:
            try:
                self.log_stream.flush()
            except (OSError, ValueError):
                pass

    def _reap(self, poller: zmq.Poller) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            child.exit_code = os.waitstatus_to_exitcode(status)
            run = self.slots[child.index].running()  # what it was doing when it died
            # what the child wrote before dying is in the pipe; take it, don't wait for EOF (a
            # grandchild may hold the pipe open)
            self._pump(child, poller)
            if child.out_fd is not None:
                poller.unregister(child.out_fd)
                os.close(child.out_fd)
                child.out_fd = None
                self._relay(child, b"", final=True)
            self.finished.append(child)
            level = logging.INFO if child.exit_code == 0 else logging.WARNING
            log.log(level, "engine pid %d exited with %s", pid, _describe_exit(child.exit_code))
            delay = self._restart_delay(child)
            death = {"uuid": child.uuid, "pid": child.pid, "exit_code": child.exit_code,
                     "how": _describe_exit(child.exit_code), "running": run.msg_id if run is not None else None,
                     "killed": child.killed, "restarting": delay is not None}
            self._report(child, death)
            if delay is not None:
                self.finished.remove(child)  # replaced: its exit does not make the supervisor's code
                if delay:
                    log.warning("restarting engine %s in %g s", child.uuid, delay)
                # the new engine repeats the report when it registers: the controller may hear
                # from it before the report arrives (different sockets)
                self._respawns.append((time.monotonic() + delay, child.index, death))

    def _report(self, child: Child, death: dict[str, Any] | None = None) -> None:
        assert self.hub is not None
        if death is None:
            death = {"uuid": child.uuid, "pid": child.pid, "exit_code": child.exit_code,
                     "how": _describe_exit(child.exit_code)}
        content = {**death, "output": child.output()}
        try:
            # never block: the controller may be gone (that may be why the engine died)
            self.hub.send_multipart(self.session.serialize(M.ENGINE_DIED_NOTIFICATION, content), zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.error("could not report the death of engine pid %d: %s", child.pid, e)


def _ignore(signum: int, frame: Any) -> None:
    pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)  # a stopped process must run to die
    except ProcessLookupError:
        pass


def _stopped(pid: int) -> bool:
    """Whether process *pid* is stopped (state T, or t: traced), from ``/proc`` (False elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses; the state follows the last ")"
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] in (b"T", b"t")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code == EXIT_CONTROLLER_GONE:
        return f"code {code} (controller gone)"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel SIGTERM this child if the supervisor dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
