"""Task dependencies: what must have finished, and how, before a task may run — and where.

A :class:`Dependency` names other tasks by msg_id.  Used as ``after`` (a time dependency) it says the
task may start once those tasks have finished; used as ``follow`` (a location dependency) it says the
task must run on the engine(s) where those tasks ran.

``all=True`` needs every listed task, ``all=False`` any one of them.  ``success`` / ``failure`` say
which outcomes count: by default only a success does, so a failed prerequisite makes an ``all``
dependency impossible at once.  An empty dependency is always met.

Outcomes are given as ``{msg_id: succeeded}`` (``True`` for success, ``False`` for failure); an id
absent from the mapping has not finished yet.  Whether an id is known at all is the scheduler's
business (an unknown id is an ``InvalidDependency``), not this module's.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Dependency", "Status", "after_status", "follow_status"]


class Status(enum.Enum):
    """Where a dependency stands."""

    MET = "met"
    """It is satisfied now (for ``follow``: on at least one live engine)."""
    PENDING = "pending"
    """Not yet, but tasks that have not finished may still satisfy it."""
    IMPOSSIBLE = "impossible"
    """It can never be satisfied."""


@dataclass(frozen=True)
class Dependency:
    """A set of msg_ids with ``all``/``any`` and ``success``/``failure`` semantics.

    Wire form: ``{"msg_ids": [...], "all": bool, "success": bool, "failure": bool}``.
    """

    msg_ids: frozenset[str] = frozenset()
    all: bool = True
    success: bool = True
    failure: bool = False

    @classmethod
    def of(
        cls, msg_ids: Iterable[str], *, all: bool = True, success: bool = True, failure: bool = False
    ) -> Dependency:
        """A dependency on *msg_ids* (any iterable of str)."""
        return cls(frozenset(msg_ids), all=all, success=success, failure=failure)

    @classmethod
    def from_wire(cls, wire: Any) -> Dependency | None:
        """Parse the wire form; ``None`` or an empty list of ids gives ``None`` (no dependency).

        A bare list of msg_ids is accepted too (``all=True``, success only).

        Raises
        ------
        ValueError
            If the wire form is malformed (wrong types or unknown keys).
        """
        if wire is None:
            return None
        if isinstance(wire, (list, tuple)):
            wire = {"msg_ids": wire}
        if not isinstance(wire, Mapping):
            raise ValueError(f"a dependency must be a mapping, not {type(wire).__name__}")
        unknown = set(wire) - {"msg_ids", "all", "success", "failure"}
        if unknown:
            raise ValueError(f"unknown dependency keys: {sorted(unknown)}")
        ids = wire.get("msg_ids", [])
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple)):
            raise ValueError("dependency msg_ids must be a list of strings")
        if not all(isinstance(m, str) for m in ids):
            raise ValueError("dependency msg_ids must be a list of strings")
        flags = {}
        for key, default in (("all", True), ("success", True), ("failure", False)):
            value = wire.get(key, default)
            if not isinstance(value, bool):
                raise ValueError(f"dependency flag {key!r} must be a bool")
            flags[key] = value
        if not ids:
            return None
        return cls(frozenset(ids), **flags)

    def to_wire(self) -> dict[str, Any]:
        """The wire form (msg_ids sorted, for stable output)."""
        return {
            "msg_ids": sorted(self.msg_ids),
            "all": self.all,
            "success": self.success,
            "failure": self.failure,
        }

    def __bool__(self) -> bool:
        return bool(self.msg_ids)

    def counts(self, succeeded: bool) -> bool:
        """Whether a finished task with this outcome counts towards the dependency."""
        return self.success if succeeded else self.failure


def after_status(dep: Dependency | None, outcomes: Mapping[str, bool]) -> Status:
    """Where a time dependency stands given the finished tasks' *outcomes*.

    ``all``: met when every listed task finished with a counted outcome; impossible as soon as one
    finished with an outcome that does not count.  ``any``: met when one finished with a counted
    outcome; impossible only when every listed task finished and none counts.
    """
    if not dep:
        return Status.MET
    finished = 0
    for m in dep.msg_ids:
        ok = outcomes.get(m)
        if ok is None:
            continue
        finished += 1
        if dep.counts(ok):
            if not dep.all:
                return Status.MET
        elif dep.all:
            return Status.IMPOSSIBLE
    if finished == len(dep.msg_ids):
        return Status.MET if dep.all else Status.IMPOSSIBLE
    return Status.PENDING


def follow_status(
    dep: Dependency | None,
    outcomes: Mapping[str, bool],
    locations: Mapping[str, bytes | None],
    live: Container[bytes],
) -> tuple[Status, frozenset[bytes] | None]:
    """Where a location dependency stands, and on which engines it is met.

    Parameters
    ----------
    dep
        the ``follow`` dependency (``None`` or empty: met everywhere).
    outcomes
        ``{msg_id: succeeded}`` of finished tasks.
    locations
        ``{msg_id: engine}`` where finished tasks ran (``None`` or absent: unknown).
    live
        engines currently registered; a task cannot follow work onto an engine that has gone.

    Returns
    -------
    (status, engines)
        *engines* is ``None`` when any engine will do (no dependency), otherwise the live engines on
        which the dependency is met now (non-empty exactly when *status* is MET).

    ``all``: every listed task must finish with a counted outcome on one and the same engine —
    impossible once one did not count, once two ran on different engines, or once the engine they
    share has gone.  ``any``: met on every live engine where one of them ran with a counted outcome;
    impossible when all finished and none of those engines is live.
    """
    if not dep:
        return Status.MET, None
    after = after_status(dep, outcomes)
    if after is Status.IMPOSSIBLE:
        return Status.IMPOSSIBLE, frozenset()
    engines: set[bytes | None] = set()
    pending = False
    for m in dep.msg_ids:
        ok = outcomes.get(m)
        if ok is None:
            pending = True
        elif dep.counts(ok):
            engines.add(locations.get(m))
    if dep.all:
        if len(engines) > 1 or None in engines:
            return Status.IMPOSSIBLE, frozenset()
        if engines:
            (engine,) = engines
            if engine is None or engine not in live:
                return Status.IMPOSSIBLE, frozenset()
        if pending:
            return Status.PENDING, frozenset()
        return Status.MET, frozenset(e for e in engines if e is not None)
    usable = frozenset(e for e in engines if e is not None and e in live)
    if usable:
        return Status.MET, usable
    return (Status.PENDING if pending else Status.IMPOSSIBLE), frozenset()
