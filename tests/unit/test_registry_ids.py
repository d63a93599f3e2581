"""Engine ids stay stable across an engine's restart or re-registration (registry, no sockets)."""

from __future__ import annotations

from controller.registry import EngineRegistry


def test_a_restarted_engine_gets_the_id_of_the_engine_it_replaces():
    r = EngineRegistry()
    a, b = r.add(b"ua"), r.add(b"ub")
    r.remove(a)
    again = r.add(b"ua-2", restart_of=b"ua")
    assert again.id == a.id == 0 and r.by_id(0) is again and r.by_uuid(b"ua-2") is again
    assert r.add(b"uc").id == 2  # a new engine still gets a new id
    assert b.id == 1


def test_an_engine_registering_again_with_its_uuid_keeps_its_id():
    r = EngineRegistry()
    a = r.add(b"ua")
    r.add(b"ub")
    r.remove(a)
    assert r.id_of(b"ua") == 0
    assert r.add(b"ua").id == 0


def test_an_id_held_by_another_engine_is_not_given_twice():
    r = EngineRegistry()
    a = r.add(b"ua")
    r.remove(a)
    r.add(b"ua-2", restart_of=b"ua")  # takes id 0
    # a second claim on the same dead engine (e.g. a stale restart) gets a fresh id
    assert r.add(b"ua-3", restart_of=b"ua").id == 1
    assert r.add(b"ux", restart_of=b"never-seen").id == 2


def test_removing_a_stale_record_does_not_drop_its_successor():
    r = EngineRegistry()
    a = r.add(b"ua")
    r.remove(a)
    new = r.add(b"ua-2", restart_of=b"ua")
    r.remove(a)  # removing the old record again is harmless
    assert r.by_id(0) is new and len(r) == 1


def test_an_engine_known_by_its_own_uuid_keeps_its_id_even_when_it_replaced_another():
    r = EngineRegistry()
    a, b = r.add(b"ua"), r.add(b"ub")
    r.remove(a)
    again = r.add(b"ua-2", restart_of=b"ua")  # id 0
    r.remove(again)  # e.g. lost in a controller restart, then back with the same registration
    assert r.add(b"ua-2", restart_of=b"ua").id == 0
    assert b.id == 1
