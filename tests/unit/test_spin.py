"""The waiting policy of blocking calls (ipcluster/client/spin.py), with a scripted poller and clock."""

from __future__ import annotations

from typing import Any

import pytest

from ipcluster.client.spin import MAX_SKIP, SpinWait, spin_budget_from_env


class ScriptedPoller:
    """``poll(0)`` answers from *ready_after* (None: never ready); blocking polls always answer."""

    def __init__(self, clock: "Clock", ready_after: float | None) -> None:
        self.clock = clock
        self.ready_after = ready_after
        self.calls: list[int] = []

    def poll(self, timeout: int) -> list[Any]:
        self.calls.append(timeout)
        self.clock.now += 10e-6  # each poll takes 10 µs
        if timeout != 0 or (self.ready_after is not None and self.clock.now >= self.ready_after):
            return [("sock", 1)]
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def wait(budget: float, ready_after: float | None, spin: SpinWait | None = None) -> tuple[SpinWait, list[int]]:
    clock = Clock()
    spin = spin or SpinWait(budget, clock)
    spin._clock = clock
    poller = ScriptedPoller(clock, ready_after)
    assert spin.poll(poller, 50) == [("sock", 1)]
    return spin, poller.calls


def test_no_budget_goes_straight_to_sleep() -> None:
    _, calls = wait(0.0, ready_after=0.0)
    assert calls == [50]


def test_a_reply_within_the_budget_is_taken_without_sleeping() -> None:
    spin, calls = wait(500e-6, ready_after=100e-6)
    assert 50 not in calls and all(c == 0 for c in calls)
    assert len(calls) == 10  # ready at the tenth 10 µs poll
    _, calls = wait(500e-6, ready_after=100e-6, spin=spin)  # and the next wait spins again
    assert 50 not in calls


def test_an_empty_spin_sleeps_then_skips_spinning_for_more_and_more_waits() -> None:
    spin, calls = wait(500e-6, ready_after=None)
    assert calls[-1] == 50 and calls.count(0) == 50  # the whole budget, then the blocking poll
    skipped = []
    for _ in range(200):
        _, calls = wait(500e-6, ready_after=None, spin=spin)
        skipped.append(calls == [50])
    # after the n-th empty spin, 2**(n-1) waits (at most MAX_SKIP) go straight to sleep
    spins = [i for i, s in enumerate(skipped) if not s]
    gaps = [b - a - 1 for a, b in zip([-1, *spins], spins)]
    assert gaps[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert max(gaps) == MAX_SKIP


def test_replies_within_the_budget_win_spinning_back() -> None:
    spin = SpinWait(500e-6)
    for _ in range(3):  # three empty spins: backoff 8
        while True:
            _, calls = wait(500e-6, ready_after=None, spin=spin)
            if calls != [50]:
                break
    assert spin._backoff == 8
    while spin._skip:
        wait(500e-6, ready_after=None, spin=spin)
    wait(500e-6, ready_after=50e-6, spin=spin)
    assert spin._backoff == 4 and spin._skip == 0


@pytest.mark.parametrize(("raw", "expected"), [("", 500e-6), ("0", 0.0), ("250", 250e-6), ("-3", 0.0),
                                               ("many", 500e-6)])
def test_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv("IPCLUSTER_SPIN_US", raw)
    assert spin_budget_from_env(500) == pytest.approx(expected)


def test_no_polling_while_waiting_for_many_processes_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipcluster.client import spin as spin_module

    monkeypatch.setattr(spin_module, "CPUS", 2)
    limit = 2 * spin_module.PROCESSES_PER_CPU
    assert spin_module.worth_spinning(1) and spin_module.worth_spinning(limit)
    assert not spin_module.worth_spinning(limit + 1)
    clock = Clock()
    waiter = SpinWait(500e-6, clock)
    poller = ScriptedPoller(clock, ready_after=0.0)  # a reply is there at once
    assert waiter.poll(poller, 50, spin=False) == [("sock", 1)]
    assert poller.calls == [50]  # straight to the blocking poll
    assert waiter.poll(poller, 50) == [("sock", 1)] and poller.calls[1:] == [0]  # the policy is untouched
