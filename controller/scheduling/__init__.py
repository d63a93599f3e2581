"""Load-balanced task scheduling, kept free of sockets, threads and clocks.

- :mod:`.policies` — tiny pure functions that pick an engine among candidates, by name.
- :mod:`.dependencies` — ``after`` / ``follow`` dependencies and whether they are met.
- :mod:`.tasks` — what goes in (:class:`Task`) and comes out (:class:`Assign`, :class:`Fail`).
- :mod:`.ready` — per-task bookkeeping and the ready queue, grouped by constraints.
- :mod:`.state` — :class:`TaskScheduler`, the sans-I/O state machine a thin socket layer drives.

The socket layer feeds events (``submit``, ``finished``, ``declined``, ``add_engine``,
``remove_engine``, ``abort``, ``tick`` at ``next_deadline()``) and carries out the returned
instructions in order.
"""

from .dependencies import Dependency, Status
from .policies import POLICIES, get_policy
from .state import TaskScheduler
from .tasks import Assign, Fail, Finished, Instruction, Task

__all__ = [
    "Assign",
    "Dependency",
    "Fail",
    "Finished",
    "Instruction",
    "POLICIES",
    "Status",
    "Task",
    "TaskScheduler",
    "get_policy",
]
