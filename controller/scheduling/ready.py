"""Per-task bookkeeping (:class:`Entry`) and the ready queue the scheduler assigns from.

Ready tasks with identical constraints share a group (key ``None``: unconstrained).  Within a group
the head can run wherever any member can, so a scheduling pass looks at one head per group instead of
every queued task: 10,000 tasks pinned to a busy engine cost one check, not 10,000.  Each group, and
the choice between group heads, follows submission order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Union

from .tasks import Task

__all__ = ["Entry", "GroupKey", "ReadyQueue"]

GroupKey = Union[
    None,
    tuple[Union[frozenset[bytes], None], Union[frozenset[bytes], None], frozenset[bytes], frozenset[bytes]],
]
"""``None`` or ``(targets, follow_engines, declined, avoid)``."""


@dataclass(slots=True)
class Entry:
    """The scheduler's bookkeeping for one unfinished task."""

    task: Task
    seq: int  # submission order
    retries_left: int
    targets: frozenset[bytes] | None
    deadline: float | None = None  # while queued (waiting or ready)
    engine: bytes | None = None  # while running
    follow_engines: frozenset[bytes] | None = None  # where ``follow`` is met; None = anywhere
    declined: set[bytes] = field(default_factory=set)  # never again on these
    avoid: set[bytes] = field(default_factory=set)  # failed there: elsewhere if another can run it
    waiting_on: set[str] = field(default_factory=set)  # unfinished dependency ids
    group: GroupKey = None  # ready-queue group, while ready
    assigned: int = 0  # assignment counter value when last assigned (the oldest runs first)
    deaths: int = 0  # engines that died while running this task (it was the one running)

    @property
    def constrained(self) -> bool:
        return (
            self.targets is not None
            or self.follow_engines is not None
            or bool(self.declined)
            or bool(self.avoid)
        )

    def group_key(self) -> GroupKey:
        if not self.constrained:
            return None
        return (self.targets, self.follow_engines, frozenset(self.declined), frozenset(self.avoid))

    def allows(self, engine: bytes) -> bool:
        """Whether targets, follow and declines permit *engine* (``avoid`` is only a preference)."""
        return (
            (self.targets is None or engine in self.targets)
            and (self.follow_engines is None or engine in self.follow_engines)
            and engine not in self.declined
        )


class ReadyQueue:
    """Tasks whose dependencies are met, grouped by constraints, each group in submission order."""

    def __init__(self) -> None:
        self.by_id: dict[str, Entry] = {}
        """Read-only for callers: every ready entry by msg_id (a dict: its truth test is cheap)."""
        self.groups: dict[GroupKey, dict[str, Entry]] = {}
        """Read-only for callers: ``{key: {msg_id: entry}}``, each inner dict in seq order."""

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self.by_id

    def entries(self) -> list[Entry]:
        """A snapshot of every ready entry (safe to mutate the queue while iterating it)."""
        return list(self.by_id.values())

    def heads(self) -> Iterator[tuple[GroupKey, Entry]]:
        """The oldest entry of each group."""
        for key, group in self.groups.items():
            yield key, group[next(iter(group))]

    def push(self, entry: Entry) -> None:
        """Add *entry* (no-op if present), in submission order within its group."""
        msg_id = entry.task.msg_id
        if msg_id in self.by_id:
            return
        self.by_id[msg_id] = entry
        key = entry.group = entry.group_key()
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = {msg_id: entry}
            return
        in_order = group[next(reversed(group))].seq < entry.seq
        group[msg_id] = entry
        if not in_order:  # a retried or newly released older task: restore submission order
            self.groups[key] = dict(sorted(group.items(), key=lambda kv: kv[1].seq))

    def remove(self, entry: Entry) -> bool:
        """Remove *entry*; ``False`` if it was not ready."""
        msg_id = entry.task.msg_id
        if self.by_id.pop(msg_id, None) is None:
            return False
        group = self.groups[entry.group]
        del group[msg_id]
        if not group:
            del self.groups[entry.group]
        return True
