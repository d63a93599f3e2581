"""Route bookkeeping and target resolution of the client (pure, no sockets)."""

import concurrent.futures

import pytest

from ipcluster import errors
from ipcluster.client.routes import RouteTable
from ipcluster.client.targets import resolve_targets


def test_route_stays_active_until_everything_is_answered():
    released = []
    table = RouteTable(on_released=released.append)
    a, b = concurrent.futures.Future(), concurrent.futures.Future()
    table.pending(b"e", "mux", [a, b])
    assert table.active(b"e") == "mux" and table.any_active([b"x", b"e"]) and table
    a.set_result(1)
    assert table.active(b"e") == "mux"
    b.set_result(2)
    assert table.active(b"e") is None and not table
    assert released == []  # only adopted routes are released


def test_adopted_route_takes_over_and_is_released():
    released = []
    table = RouteTable(on_released=released.append)
    direct = concurrent.futures.Future()
    table.pending(b"e", "direct", [direct])
    name = table.new_adopted_name()
    adopted = concurrent.futures.Future()
    table.pending(b"e", name, [adopted])
    assert table.active(b"e") == name and name == "adopted-1" and table.adopted_count == 1
    direct.set_result(None)
    assert table.active(b"e") == name  # one still outstanding
    adopted.set_exception(RuntimeError("engine died"))
    assert table.active(b"e") is None and released == [name]


@pytest.mark.parametrize("targets,expected", [
    (None, ([0, 2, 5], False)), ("all", ([0, 2, 5], False)), (2, ([2], True)), (-1, ([5], True)),
    (slice(None, None, 2), ([0, 5], False)), ([5, 0], ([5, 0], False)), (range(0, 1), ([0], False)),
])
def test_resolve_targets(targets, expected):
    assert resolve_targets(targets, [0, 2, 5], {0, 2, 5}) == expected


@pytest.mark.parametrize("targets,exc", [
    (1, errors.NoEnginesRegistered), ([0, 9], errors.NoEnginesRegistered), (-4, IndexError),
    (slice(7, 9), errors.NoEnginesRegistered), ("some", ValueError), (True, TypeError),
])
def test_resolve_targets_errors(targets, exc):
    with pytest.raises(exc):
        resolve_targets(targets, [0, 2, 5], {0, 2, 5})


def test_resolve_all_without_engines():
    with pytest.raises(errors.NoEnginesRegistered, match="no engines are registered"):
        resolve_targets("all", [], set())
