"""Noticing that the controller is gone: a grace timer driven by the control socket's TCP events.

An engine only ever talks to its controller, so once the controller has died (SIGKILL, a crash)
nothing would ever stop the engine.  The control thread therefore watches its control DEALER with
a zmq socket monitor (heartbeat pings are no help: they are echoed in C and Python never sees
them).  The kernel closes a dead process's TCP connections at once, so the engine learns of the
death immediately; zmq then keeps trying to reconnect by itself.

:class:`ControllerWatch` is the state machine, sans I/O, time passed in::

    connected --(DISCONNECTED or CONNECT_RETRIED)--> lost since t
    lost      --(HANDSHAKE_SUCCEEDED)--------------> connected      (came back within the grace)
    lost      --(t + timeout reached)--------------> gone           (the engine exits, once)

A reconnection counts once the ZMTP handshake has succeeded, not at the TCP connect: something
that accepts TCP but does not speak ZMTP (or drops us again at once) must not restart the grace
period on each attempt.  ``CONNECT_RETRIED`` counts as "lost" too, so a disconnection that
happened before the monitor was attached is still noticed at zmq's next reconnection attempt.
Repeated "lost" events never extend the grace period.

"back" is also when the engine registers again (``ControlThread.register_again``): the controller
may have been restarted from its task store, and knows the engine's id but not that it is there.
"""

from __future__ import annotations

import zmq

#: Default seconds an engine waits for a lost controller to come back before it exits.
CONTROLLER_TIMEOUT = 10.0
#: Default seconds a starting engine waits for the controller's registration reply before it exits
#: with a message naming the address it tried.
REGISTRATION_TIMEOUT = 30.0
#: ``SharedState.stop_reason`` once the controller is gone.
CONTROLLER_GONE = "controller gone"
#: Exit code of an engine (and of a supervisor whose engines all ended so) whose controller is gone.
EXIT_CONTROLLER_GONE = 4

#: Monitor events meaning "not connected to the controller (any more)".
LOST_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
#: Monitor events meaning "connected again"; libzmq before 4.3 has no handshake events.
BACK_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED if zmq.zmq_version_info() >= (4, 3) else zmq.EVENT_CONNECTED
#: What the control thread asks its socket monitor for.
MONITORED_EVENTS = LOST_EVENTS | BACK_EVENTS


class ControllerWatch:
    """The grace timer (see the module docstring).

    Parameters
    ----------
    timeout:
        Seconds the controller may stay unreachable; ``<= 0`` disables the watch (never gone).
    """

    def __init__(self, timeout: float = CONTROLLER_TIMEOUT):
        self.timeout = timeout
        #: monotonic time the connection was lost, None while connected
        self.lost_since: float | None = None
        #: set once the grace period has run out; the watch then ignores everything
        self.gone = False

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    def on_event(self, event: int, now: float) -> str | None:
        """Feed one monitor event; return ``"lost"`` or ``"back"`` when the state changed."""
        if self.gone or not self.enabled:
            return None
        if event & LOST_EVENTS:
            if self.lost_since is None:
                self.lost_since = now
                return "lost"
        elif event & BACK_EVENTS and self.lost_since is not None:
            self.lost_since = None
            return "back"
        return None

    def remaining(self, now: float) -> float | None:
        """Seconds until the grace period runs out; None while connected (nothing to wait for)."""
        if self.lost_since is None or self.gone:
            return None
        return max(0.0, self.lost_since + self.timeout - now)

    def expired(self, now: float) -> bool:
        """True exactly once: when the controller has been unreachable for :attr:`timeout` seconds."""
        remaining = self.remaining(now)
        if remaining is None or remaining > 0:
            return False
        self.gone = True
        return True

    def lost_for(self, now: float) -> float:
        """Seconds since the connection was lost (0 while connected)."""
        return 0.0 if self.lost_since is None else now - self.lost_since


__all__ = ["BACK_EVENTS", "CONTROLLER_GONE", "CONTROLLER_TIMEOUT", "ControllerWatch", "EXIT_CONTROLLER_GONE",
           "LOST_EVENTS", "MONITORED_EVENTS"]
