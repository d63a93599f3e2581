"""Load-balancing policies: tiny pure functions that pick one engine among candidates.

Every policy has the signature::

    policy(loads, rng, last_used) -> index

``loads[i]``
    number of tasks currently assigned to candidate ``i``.
``rng``
    the scheduler's :class:`random.Random`; a policy draws all its randomness from it, so a seeded
    scheduler makes the same choices every run.
``last_used[i]``
    when candidate ``i`` was last given a task, as any increasing number (the scheduler uses an
    assignment counter, not a clock); lower is less recently used, never-used engines carry a value
    below every used one.

The candidates are already filtered by the scheduler (not full, allowed by the task, dependencies met
there), are never empty, and appear in engine-registration order.  The returned value is an index into
``loads``.  Policies hold no state of their own: everything they need is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

__all__ = [
    "POLICIES",
    "DEFAULT_POLICY",
    "Policy",
    "get_policy",
    "leastload",
    "lru",
    "plainrandom",
    "twobin",
    "weighted",
]

Policy = Callable[[Sequence[int], random.Random, Sequence[float]], int]
"""The type of a policy: ``(loads, rng, last_used) -> index of the chosen candidate``."""


def _check(loads: Sequence[int], last_used: Sequence[float]) -> int:
    n = len(loads)
    if n == 0:
        raise ValueError("a policy needs at least one candidate engine")
    if len(last_used) != n:
        raise ValueError(f"loads and last_used differ in length ({n} != {len(last_used)})")
    return n


def _less_recent(last_used: Sequence[float], a: int, b: int) -> int:
    """The less recently used of candidates *a* and *b*; the lower index on a tie."""
    if last_used[b] < last_used[a] or (last_used[b] == last_used[a] and b < a):
        return b
    return a


def leastload(loads: Sequence[int], rng: random.Random, last_used: Sequence[float]) -> int:
    """The candidate with the fewest assigned tasks (the default).

    Ties go to the least recently used candidate, then to the lowest index, so idle engines take
    turns instead of the first engine receiving every short task.  Uses no randomness.
    """
    n = _check(loads, last_used)
    best = 0
    for i in range(1, n):
        if loads[i] < loads[best] or (loads[i] == loads[best] and last_used[i] < last_used[best]):
            best = i
    return best


def lru(loads: Sequence[int], rng: random.Random, last_used: Sequence[float]) -> int:
    """The least recently used candidate, whatever its load; the lowest index on a tie."""
    n = _check(loads, last_used)
    best = 0
    for i in range(1, n):
        if last_used[i] < last_used[best]:
            best = i
    return best


def plainrandom(loads: Sequence[int], rng: random.Random, last_used: Sequence[float]) -> int:
    """A uniformly random candidate."""
    n = _check(loads, last_used)
    return rng.randrange(n)


def twobin(loads: Sequence[int], rng: random.Random, last_used: Sequence[float]) -> int:
    """Two distinct candidates drawn at random; the less recently used of the two wins.

    "The power of two choices": nearly as even as :func:`lru` without always hitting the same engine
    from several schedulers.  With one candidate it is that candidate.
    """
    n = _check(loads, last_used)
    if n == 1:
        return 0
    a, b = rng.sample(range(n), 2)
    return _less_recent(last_used, a, b)


def weighted(loads: Sequence[int], rng: random.Random, last_used: Sequence[float]) -> int:
    """A random candidate, weighted by inverse load: weight ``1 / (1 + load)``.

    An idle engine is twice as likely as an engine with one task, and so on; every candidate keeps a
    non-zero chance.
    """
    n = _check(loads, last_used)
    if n == 1:
        return 0
    weights = [1.0 / (1 + max(load, 0)) for load in loads]
    x = rng.random() * sum(weights)
    for i, w in enumerate(weights):
        x -= w
        if x < 0:
            return i
    return n - 1  # rounding left x a hair above zero


POLICIES: dict[str, Policy] = {
    "leastload": leastload,
    "lru": lru,
    "plainrandom": plainrandom,
    "twobin": twobin,
    "weighted": weighted,
}
"""Every policy by the name a user chooses on the controller."""

DEFAULT_POLICY = "leastload"


def get_policy(name: str) -> Policy:
    """The policy registered as *name*.

    Raises
    ------
    ValueError
        If *name* is not in :data:`POLICIES`; the message lists the valid names.
    """
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown scheduling policy {name!r}; choose one of: {valid}") from None
