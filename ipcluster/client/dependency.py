"""Task dependencies as the client states them (``after=`` / ``follow=`` of a LoadBalancedView)."""

from __future__ import annotations

from typing import Any, Iterable


class Dependency(set):  # type: ignore[type-arg]
    """A set of msg_ids a task depends on, and what counts as met.

    Parameters
    ----------
    dependencies:
        msg_ids, AsyncResults, or a mix.
    all:
        ``True``: every listed task must have finished (as counted below); ``False``: any one.
    success, failure:
        Which outcomes of the listed tasks count: by default only success.
    """

    def __init__(self, dependencies: Iterable[Any] = (), all: bool = True, success: bool = True,
                 failure: bool = False):
        super().__init__(msg_ids(dependencies))
        if not (success or failure):
            raise ValueError("a Dependency must count success, failure or both")
        self.all = all
        self.success = success
        self.failure = failure

    def to_wire(self) -> dict[str, Any]:
        return {"msg_ids": sorted(self), "all": self.all, "success": self.success, "failure": self.failure}

    def __repr__(self) -> str:
        return (f"Dependency({sorted(self)!r}, all={self.all}, success={self.success}, "
                f"failure={self.failure})")


def msg_ids(items: Any) -> list[str]:
    """msg_ids named by a msg_id, an AsyncResult, or an iterable of either."""
    if items is None:
        return []
    if isinstance(items, str):
        return [items]
    if hasattr(items, "msg_ids"):
        return list(items.msg_ids)
    out: list[str] = []
    for item in items:
        out.extend(msg_ids(item))
    return out


def as_dependency(value: Any) -> Dependency | None:
    """``after=`` / ``follow=`` values normalised; ``None`` or empty means no dependency."""
    if value is None:
        return None
    dep = value if isinstance(value, Dependency) else Dependency(value)
    return dep if dep else None
