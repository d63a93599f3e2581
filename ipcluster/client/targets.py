"""Turning a view's ``targets`` into engine ids (pure)."""

from __future__ import annotations

from typing import Collection, Sequence

from ipcluster import errors

Targets = int | Sequence[int] | slice | str | None


def resolve_targets(targets: Targets, ids: Sequence[int], registered: Collection[int]) -> tuple[list[int], bool]:
    """Engine ids for *targets* given the sorted registered *ids*, and whether one int was given.

    ``None`` / ``'all'``: every engine; an int (negative counts from the end); a slice of the ids;
    a list of ids.  Unknown engines raise :class:`~ipcluster.NoEnginesRegistered`.
    """
    if targets is None or (isinstance(targets, str) and targets == "all"):
        if not ids:
            raise errors.NoEnginesRegistered("no engines are registered; start some or wait_for_engines()")
        return list(ids), False
    if isinstance(targets, bool):
        raise TypeError(f"targets must be an int, a slice, a list of ints or 'all', not {targets!r}")
    if isinstance(targets, int):
        if targets < 0:
            if -targets > len(ids):
                raise IndexError(f"engine index {targets} out of range ({len(ids)} engines)")
            return [ids[targets]], True
        if targets not in registered:
            raise errors.NoEnginesRegistered(f"engine {targets} is not registered (engines: {list(ids)})")
        return [targets], True
    if isinstance(targets, slice):
        picked = list(ids[targets])
        if not picked:
            raise errors.NoEnginesRegistered(f"no engines selected by {targets} (engines: {list(ids)})")
        return picked, False
    if isinstance(targets, str):
        raise ValueError(f"targets must be an int, a slice, a list of ints or 'all', not {targets!r}")
    out = [int(t) for t in targets]
    missing = [t for t in out if t not in registered]
    if missing:
        raise errors.NoEnginesRegistered(f"engine(s) {missing} not registered (engines: {list(ids)})")
    return out, False
