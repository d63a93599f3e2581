"""Dependencies: wire form, time (``after``) and location (``follow``) semantics."""

from __future__ import annotations

import pytest

from controller.scheduling.dependencies import Dependency, Status, after_status, follow_status

MET, PENDING, IMPOSSIBLE = Status.MET, Status.PENDING, Status.IMPOSSIBLE


def dep(*ids: str, **flags: bool) -> Dependency:
    return Dependency.of(ids, **flags)


# ---- wire form --------------------------------------------------------------------------------


def test_defaults_are_all_success_only():
    d = dep("a")
    assert (d.all, d.success, d.failure) == (True, True, False)


def test_wire_round_trip():
    d = dep("b", "a", all=False, success=False, failure=True)
    wire = d.to_wire()
    assert wire == {"msg_ids": ["a", "b"], "all": False, "success": False, "failure": True}
    assert Dependency.from_wire(wire) == d


def test_from_wire_defaults_and_bare_list():
    assert Dependency.from_wire({"msg_ids": ["x"]}) == dep("x")
    assert Dependency.from_wire(["x", "y"]) == dep("x", "y")


@pytest.mark.parametrize("wire", [None, [], {"msg_ids": []}, {}])
def test_from_wire_empty_is_none(wire):
    assert Dependency.from_wire(wire) is None


@pytest.mark.parametrize(
    "wire",
    [
        "abc",
        5,
        {"msg_ids": "abc"},
        {"msg_ids": [1, 2]},
        {"msg_ids": ["a"], "all": "yes"},
        {"msg_ids": ["a"], "success": 1},
        {"msg_ids": ["a"], "bogus": True},
    ],
)
def test_from_wire_rejects_malformed(wire):
    with pytest.raises(ValueError):
        Dependency.from_wire(wire)


def test_empty_dependency_is_falsy_and_always_met():
    assert not Dependency()
    assert after_status(Dependency(), {}) is MET
    assert after_status(None, {}) is MET
    assert follow_status(None, {}, {}, set()) == (MET, None)
    assert follow_status(Dependency(), {}, {}, set()) == (MET, None)


# ---- after: all -------------------------------------------------------------------------------


def test_all_success_only():
    d = dep("a", "b")
    assert after_status(d, {}) is PENDING
    assert after_status(d, {"a": True}) is PENDING
    assert after_status(d, {"a": True, "b": True}) is MET
    # one failure is enough to make it impossible, even with others pending
    assert after_status(d, {"a": False}) is IMPOSSIBLE


def test_all_failure_only():
    d = dep("a", "b", success=False, failure=True)
    assert after_status(d, {"a": False}) is PENDING
    assert after_status(d, {"a": False, "b": False}) is MET
    assert after_status(d, {"b": True}) is IMPOSSIBLE


def test_all_success_or_failure_is_plain_completion():
    d = dep("a", "b", success=True, failure=True)
    assert after_status(d, {"a": False}) is PENDING
    assert after_status(d, {"a": False, "b": True}) is MET


def test_neither_outcome_counts_is_impossible_once_anything_finishes():
    d = dep("a", success=False, failure=False)
    assert after_status(d, {}) is PENDING
    assert after_status(d, {"a": True}) is IMPOSSIBLE
    assert after_status(d, {"a": False}) is IMPOSSIBLE


def test_unrelated_outcomes_are_ignored():
    assert after_status(dep("a"), {"z": False, "y": True}) is PENDING


# ---- after: any -------------------------------------------------------------------------------


def test_any_met_by_one_counted_outcome():
    d = dep("a", "b", "c", all=False)
    assert after_status(d, {}) is PENDING
    assert after_status(d, {"b": True}) is MET
    assert after_status(d, {"a": False, "b": True}) is MET


def test_any_impossible_only_when_all_finished_unmet():
    d = dep("a", "b", all=False)
    assert after_status(d, {"a": False}) is PENDING
    assert after_status(d, {"a": False, "b": False}) is IMPOSSIBLE


def test_any_failure_only():
    d = dep("a", "b", all=False, success=False, failure=True)
    assert after_status(d, {"a": True}) is PENDING
    assert after_status(d, {"a": True, "b": False}) is MET
    assert after_status(d, {"a": True, "b": True}) is IMPOSSIBLE


# ---- follow -----------------------------------------------------------------------------------

A, B, C = b"A", b"B", b"C"
LIVE = {A, B, C}


def test_follow_all_met_where_all_ran():
    d = dep("x", "y")
    loc = {"x": A, "y": A}
    assert follow_status(d, {"x": True, "y": True}, loc, LIVE) == (MET, frozenset({A}))


def test_follow_all_pending_while_some_unfinished():
    d = dep("x", "y")
    assert follow_status(d, {"x": True}, {"x": A}, LIVE) == (PENDING, frozenset())
    assert follow_status(d, {}, {}, LIVE) == (PENDING, frozenset())


def test_follow_all_impossible_on_different_engines():
    d = dep("x", "y", "z")
    status, engines = follow_status(d, {"x": True, "y": True}, {"x": A, "y": B}, LIVE)
    assert status is IMPOSSIBLE and not engines


def test_follow_all_impossible_when_engine_gone():
    d = dep("x", "y")
    assert follow_status(d, {"x": True}, {"x": A}, {B})[0] is IMPOSSIBLE
    assert follow_status(d, {"x": True, "y": True}, {"x": A, "y": A}, {B})[0] is IMPOSSIBLE


def test_follow_all_impossible_when_location_unknown():
    assert follow_status(dep("x"), {"x": True}, {}, LIVE)[0] is IMPOSSIBLE


def test_follow_all_impossible_on_uncounted_outcome():
    assert follow_status(dep("x", "y"), {"x": False}, {"x": A}, LIVE)[0] is IMPOSSIBLE


def test_follow_all_failure_counts_only_failures():
    d = dep("x", "y", success=False, failure=True)
    loc = {"x": A, "y": A}
    assert follow_status(d, {"x": False, "y": False}, loc, LIVE) == (MET, frozenset({A}))


def test_follow_any_met_on_each_live_engine_where_one_ran():
    d = dep("x", "y", "z", all=False)
    outcomes = {"x": True, "y": True, "z": False}
    loc = {"x": A, "y": B, "z": C}
    assert follow_status(d, outcomes, loc, LIVE) == (MET, frozenset({A, B}))
    assert follow_status(d, outcomes, loc, {B, C}) == (MET, frozenset({B}))


def test_follow_any_pending_then_impossible():
    d = dep("x", "y", all=False)
    # x ran on an engine that has gone; y may still run somewhere live
    assert follow_status(d, {"x": True}, {"x": A}, {B}) == (PENDING, frozenset())
    assert follow_status(d, {"x": True, "y": False}, {"x": A, "y": B}, {B})[0] is IMPOSSIBLE
    assert follow_status(d, {"x": False, "y": False}, {}, LIVE)[0] is IMPOSSIBLE
