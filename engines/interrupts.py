"""SIGINTs meant for one request: how the engine's SIGINT handler tells them from the others.

A SIGINT carries no data, and it arrives some time after it was sent: the control thread replies to
a ``signal_request`` first and signals the main thread afterwards, and a ``signal_request`` itself
may have been overtaken by the request's own end (a client interrupting a request that has just
been aborted or has just failed).  Interrupting "whatever runs" would then stop the engine's next
request, which nobody asked for.

So the control thread records, before each SIGINT it sends for one request, which request that
is: the request's sequence number in the engine's task slot (odd, unique per run; see
:mod:`engines.taskslot`).  The main thread's handler takes the records and interrupts only if the
request it runs now is one of them.  A SIGINT that finds no record comes from elsewhere (a user's
``rc.send_signal`` without msg_ids, ``kill -INT``, the supervisor enforcing a time limit, the
shutdown watchdog) and interrupts whatever runs, as before.

Signals of one kind coalesce (several SIGINTs may run the handler once), so one call takes every
record there is.  A task that installs its own SIGINT handler gets the signals instead; the engine
forgets the records when it puts its handler back after the task.

Left open, as unlikely as harmless: a SIGINT from elsewhere coalescing with a targeted one whose
request has ended is dropped with it (the supervisor, which sends those for time limits, still kills
an engine that does not stop); a task that installs its own handler and restores the engine's
before it ends leaves the records of the signals its handler got, and the next SIGINT from
elsewhere is judged by them; and a handler call that took the record of a SIGINT whose delivery
was still under way (two targeted ones microseconds apart) leaves that SIGINT without a record, so
it interrupts whatever runs, as every SIGINT did before.
"""

from __future__ import annotations

import signal
from collections import deque
from typing import Callable


class TargetedInterrupts:
    """Records of the SIGINTs sent for one request each (appended by the control thread, taken by
    the main thread's SIGINT handler; ``deque`` appends and pops are atomic, so no lock: the
    handler may run at any point of the main thread, even inside another handler)."""

    __slots__ = ("_seqs",)

    def __init__(self) -> None:
        self._seqs: deque[int] = deque()

    def send(self, seq: int, interrupt: Callable[[int], None]) -> None:
        """Interrupt (with *interrupt*, e.g. a ``pthread_kill`` of the main thread) the request
        running as task-slot sequence number *seq*, and only that one."""
        self._seqs.append(seq)  # before the signal: the handler must find it
        interrupt(signal.SIGINT)

    def wanted(self, running_seq: int) -> bool:
        """In the SIGINT handler: whether to interrupt the request running as *running_seq* now.

        Takes the records: ``True`` if there are none (a SIGINT from elsewhere) or one is for
        *running_seq*; ``False`` if they are all for requests that have ended.
        """
        seqs = []
        while True:
            try:
                seqs.append(self._seqs.popleft())
            except IndexError:
                break
        return not seqs or running_seq in seqs

    def clear(self) -> None:
        """Forget the records (main thread: after a task had its own SIGINT handler, which got
        the signals they were for)."""
        self._seqs.clear()

    def __len__(self) -> int:
        return len(self._seqs)


__all__ = ["TargetedInterrupts"]
