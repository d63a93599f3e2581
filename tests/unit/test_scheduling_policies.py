"""Scheduling policies: one contract every policy passes, then each policy's own behaviour."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from controller.scheduling.policies import (
    DEFAULT_POLICY,
    POLICIES,
    get_policy,
    leastload,
    lru,
    plainrandom,
    twobin,
    weighted,
)

ALL = sorted(POLICIES)

CASES = [
    ([0], [-1]),
    ([3], [7]),
    ([0, 0], [-1, -1]),
    ([2, 0, 1], [5, 3, 4]),
    ([5, 5, 5, 5], [1, 2, 3, 4]),
    ([0, 10, 0, 10, 0], [9, 1, 8, 2, 7]),
    ([1] * 50, list(range(50))),
]


# ---- contract: every policy -------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("loads,last_used", CASES)
def test_contract_returns_valid_index(name, loads, last_used):
    policy = POLICIES[name]
    rng = random.Random(1)
    for _ in range(20):
        i = policy(loads, rng, last_used)
        assert isinstance(i, int)
        assert 0 <= i < len(loads)


@pytest.mark.parametrize("name", ALL)
def test_contract_single_candidate_is_chosen(name):
    assert POLICIES[name]([42], random.Random(0), [3.0]) == 0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("loads,last_used", CASES)
def test_contract_deterministic_given_seed(name, loads, last_used):
    policy = POLICIES[name]
    a, b = random.Random(1234), random.Random(1234)
    assert [policy(loads, a, last_used) for _ in range(30)] == [
        policy(loads, b, last_used) for _ in range(30)
    ]


@pytest.mark.parametrize("name", ALL)
def test_contract_inputs_not_modified(name):
    loads, last_used = [3, 1, 2], [1.0, 2.0, 3.0]
    POLICIES[name](loads, random.Random(0), last_used)
    assert loads == [3, 1, 2] and last_used == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("name", ALL)
def test_contract_accepts_tuples(name):
    assert 0 <= POLICIES[name]((1, 2), random.Random(0), (0.0, 1.0)) < 2


@pytest.mark.parametrize("name", ALL)
def test_contract_empty_candidates_rejected(name):
    with pytest.raises(ValueError):
        POLICIES[name]([], random.Random(0), [])


@pytest.mark.parametrize("name", ALL)
def test_contract_mismatched_lengths_rejected(name):
    with pytest.raises(ValueError):
        POLICIES[name]([0, 0], random.Random(0), [0.0])


@pytest.mark.parametrize("name", ALL)
def test_contract_every_candidate_reachable_when_equal(name):
    """With equal loads, rotating last_used the way the scheduler does reaches every engine."""
    policy = POLICIES[name]
    rng = random.Random(5)
    loads, last_used = [0, 0, 0, 0], [-1.0] * 4
    seen = set()
    for t in range(200):
        i = policy(loads, rng, last_used)
        last_used[i] = t
        seen.add(i)
    assert seen == {0, 1, 2, 3}


# ---- registry ---------------------------------------------------------------------------------


def test_registry_names():
    assert set(POLICIES) == {"leastload", "lru", "plainrandom", "twobin", "weighted"}
    assert DEFAULT_POLICY == "leastload"
    for name, f in POLICIES.items():
        assert get_policy(name) is f


@pytest.mark.parametrize("bad", ["LeastLoad", "", "globals", "__init__", None])
def test_get_policy_unknown_names_valid_choices(bad):
    with pytest.raises(ValueError) as e:
        get_policy(bad)  # type: ignore[arg-type]
    for name in POLICIES:
        assert name in str(e.value)


# ---- each policy ------------------------------------------------------------------------------


def test_leastload_picks_min_load():
    assert leastload([3, 1, 2], random.Random(0), [0, 0, 0]) == 1


def test_leastload_tie_goes_to_least_recently_used_then_lowest_index():
    assert leastload([1, 0, 0, 0], random.Random(0), [0, 5, 2, 9]) == 2
    assert leastload([0, 0, 0], random.Random(0), [4, 4, 4]) == 0


def test_leastload_uses_no_randomness():
    rng = random.Random(0)
    before = rng.getstate()
    leastload([1, 2], rng, [0, 1])
    assert rng.getstate() == before


def test_lru_ignores_load():
    assert lru([9, 0, 0], random.Random(0), [1, 2, 3]) == 0
    assert lru([0, 0, 0], random.Random(0), [3, 1, 1]) == 1


def test_plainrandom_is_roughly_uniform():
    rng = random.Random(7)
    counts = Counter(plainrandom([0, 100, 5], rng, [0, 0, 0]) for _ in range(3000))
    assert set(counts) == {0, 1, 2}
    assert all(800 < c < 1200 for c in counts.values())


def test_twobin_takes_less_recently_used_of_two():
    rng = random.Random(3)
    # with two candidates both are always drawn, so the less recent one always wins
    for _ in range(50):
        assert twobin([0, 0], rng, [5, 1]) == 1
    # the most recently used of three can never win a pair
    assert 2 not in {twobin([0, 0, 0], rng, [1, 2, 3]) for _ in range(200)}


def test_weighted_prefers_idle_engines():
    rng = random.Random(11)
    counts = Counter(weighted([0, 9], rng, [0, 0]) for _ in range(4000))
    # weights 1 and 1/10: the idle engine gets ~91 %
    assert counts[0] > 3400
    assert counts[1] > 100
