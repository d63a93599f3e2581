"""What goes into the task scheduler (:class:`Task`) and what comes out (:class:`Assign`, :class:`Fail`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Union

from .dependencies import Dependency

__all__ = [
    "Task",
    "Assign",
    "Fail",
    "Instruction",
    "Finished",
    "Outcomes",
    "IMPOSSIBLE_DEPENDENCY",
    "INVALID_DEPENDENCY",
    "UNMET_DEPENDENCY",
    "TASK_TIMEOUT",
    "ENGINE_DIED",
    "TASK_ABORTED",
    "TASK_KILLED_ENGINES",
    "ENAMES",
]

# The ``ename`` of every Fail the scheduler emits; the client maps them onto ipcluster.errors.
IMPOSSIBLE_DEPENDENCY = "ImpossibleDependency"
INVALID_DEPENDENCY = "InvalidDependency"
UNMET_DEPENDENCY = "UnmetDependency"
TASK_TIMEOUT = "TaskTimeout"
ENGINE_DIED = "EngineDied"
TASK_ABORTED = "TaskAborted"
TASK_KILLED_ENGINES = "TaskKilledEngines"
ENAMES = frozenset(
    {IMPOSSIBLE_DEPENDENCY, INVALID_DEPENDENCY, UNMET_DEPENDENCY, TASK_TIMEOUT, ENGINE_DIED, TASK_ABORTED,
     TASK_KILLED_ENGINES}
)


@dataclass
class Task:
    """A load-balanced task as the scheduler sees it: routing facts only, never the payload."""

    msg_id: str
    client: bytes
    """Routing identity of the submitting client (opaque to the scheduler)."""
    targets: list[bytes] | None
    """Engine uuids the task may run on; ``None`` means any engine."""
    after: Dependency | None = None
    """Time dependency: tasks that must have finished first."""
    follow: Dependency | None = None
    """Location dependency: tasks whose engine this one must run on."""
    retries: int = 0
    """Re-run elsewhere at most this many times after a failure or an engine death."""
    timeout: float | None = None
    """Seconds the task may wait in the scheduler (counted from each time it is queued)."""
    submitted: float = 0.0
    """Carried for the caller's records; the scheduler times a task with the ``now`` it is given."""


@dataclass(frozen=True, slots=True)
class Assign:
    """Send task *msg_id* to *engine*."""

    msg_id: str
    engine: bytes


@dataclass(frozen=True, slots=True)
class Fail:
    """Answer the client of *msg_id* with the error *ename* (one of :data:`ENAMES`).

    *client* is the submitting client's routing identity (:attr:`Task.client`), so the socket layer
    can answer without keeping its own map.  *engine* is the engine the task was on when it failed
    (``None`` if it was queued), so the answer can name it.
    """

    msg_id: str
    ename: str
    evalue: str
    client: bytes = b""
    engine: bytes | None = None


Instruction = Union[Assign, Fail]


class Finished(NamedTuple):
    """What :meth:`TaskScheduler.finished` returns.

    ``deliver`` is ``True`` when the engine's reply is the task's answer and should be forwarded to
    the client; ``False`` when the scheduler re-queued the task for a retry (the failed attempt is not
    the answer) or when the reply is stale (the task was no longer assigned to that engine).
    """

    instructions: list[Instruction]
    deliver: bool


class Outcomes:
    """A bounded LRU of finished tasks: ``{msg_id: (succeeded, engine or None)}``.

    Dependencies are checked against it.  When it is full the oldest outcome is forgotten; a new
    task depending on a forgotten msg_id then fails with ``InvalidDependency``.
    """

    def __init__(self, maxsize: int = 100_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._data: OrderedDict[str, tuple[bool, bytes | None]] = OrderedDict()
        self.succeeded = _Succeeded(self._data)
        self.locations = _Locations(self._data)

    def record(self, msg_id: str, succeeded: bool, engine: bytes | None) -> None:
        data = self._data
        data[msg_id] = (succeeded, engine)
        data.move_to_end(msg_id)
        if len(data) > self.maxsize:
            data.popitem(last=False)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._data

    def __len__(self) -> int:
        return len(self._data)


class _Succeeded(Mapping[str, bool]):
    """Read-only ``{msg_id: succeeded}`` view, as :mod:`.dependencies` expects."""

    def __init__(self, data: OrderedDict[str, tuple[bool, bytes | None]]) -> None:
        self._data = data

    def __getitem__(self, msg_id: str) -> bool:
        return self._data[msg_id][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _Locations(Mapping[str, "bytes | None"]):
    """Read-only ``{msg_id: engine}`` view (``None``: the engine is not known)."""

    def __init__(self, data: OrderedDict[str, tuple[bool, bytes | None]]) -> None:
        self._data = data

    def __getitem__(self, msg_id: str) -> bytes | None:
        return self._data[msg_id][1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)
