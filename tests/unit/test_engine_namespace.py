"""Engine namespace semantics: interactive functions run in the engine's user namespace."""

from __future__ import annotations

import math

import cloudpickle

from engines.execution import bind_to_namespace, clear_namespace, new_user_module


def ship(f):
    """What the client does to an interactively defined function: pickle it by value."""
    f.__module__ = "__main__"
    return cloudpickle.loads(cloudpickle.dumps(f))


def helper(x):
    return x + 1


def test_interactive_function_gets_user_ns_as_globals():
    user_ns = new_user_module().__dict__

    def push(ns):
        globals().update(ns)

    bind_to_namespace(ship(push), user_ns)({"a": 5})
    assert user_ns["a"] == 5

    def pull(name):
        return globals()[name]

    assert bind_to_namespace(ship(pull), user_ns)("a") == 5


SCALE = 2  # the client's value of a global, captured by cloudpickle


def test_engine_value_wins_over_captured_global():
    user_ns = new_user_module().__dict__
    user_ns["SCALE"] = 10  # pushed to the engine earlier

    def scaled():
        return SCALE

    shipped = ship(scaled)
    assert shipped() == 2
    assert bind_to_namespace(shipped, user_ns)() == 10
    assert user_ns["SCALE"] == 10


def test_captured_helpers_and_modules_are_added():
    user_ns = new_user_module().__dict__

    def uses_helper(x):
        return helper(x) + math.floor(0.5)

    f = bind_to_namespace(ship(uses_helper), user_ns)
    assert f(1) == 2
    assert user_ns["math"] is math
    assert user_ns["helper"](1) == 2
    assert f.__globals__ is user_ns
    assert user_ns["__name__"] == "__main__"
    assert "__file__" not in user_ns  # the client's module bookkeeping is not copied


def test_rebinding_keeps_function_attributes():
    user_ns = new_user_module().__dict__
    y = 3

    def f(a, b=2, *, c=4):
        """doc"""
        return a + b + c + y

    f.custom = "attr"
    g = bind_to_namespace(ship(f), user_ns)
    assert g(1) == 10
    assert g.__kwdefaults__ == {"c": 4}
    assert g.__defaults__ == (2,)
    assert g.custom == "attr"
    assert g.__doc__ == "doc"
    assert g.__qualname__.endswith("f")


def test_non_interactive_callables_are_untouched():
    user_ns = new_user_module().__dict__
    assert bind_to_namespace(helper, user_ns) is helper
    assert bind_to_namespace(len, user_ns) is len
    assert bind_to_namespace(math.floor, user_ns) is math.floor
    assert len(user_ns) == len(new_user_module().__dict__)


def test_clear_namespace_keeps_module_basics():
    user_ns = new_user_module().__dict__
    user_ns.update(a=1, b=2)
    clear_namespace(user_ns)
    assert set(user_ns) == {"__name__", "__builtins__"}
    exec("z = len([1])", user_ns)
    assert user_ns["z"] == 1
