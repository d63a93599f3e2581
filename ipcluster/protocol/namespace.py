"""Running interactively defined functions in an engine's namespace (shared by engines and the
client-side wrappers that run on engines, such as ``@require`` / ``@depend``)."""

from __future__ import annotations

import types
from typing import Any

MODULE_DUNDERS = frozenset({"__name__", "__builtins__", "__builtin__", "__package__", "__file__",
                             "__path__", "__loader__", "__spec__", "__doc__", "__cached__"})


def bind_to_namespace(f: Any, user_ns: dict[str, Any]) -> Any:
    """Return *f* rebuilt to run with *user_ns* as its globals, if it is an interactive function.

    Only plain Python functions whose ``__module__`` is ``"__main__"`` are rebound; anything else
    (builtins, partials, functions from importable modules, callables) is returned unchanged.
    The globals captured with *f* are inserted into *user_ns* without overwriting existing names.
    """
    if not isinstance(f, types.FunctionType) or f.__module__ != "__main__" or f.__globals__ is user_ns:
        return f
    for name, value in f.__globals__.items():
        if name not in MODULE_DUNDERS:
            user_ns.setdefault(name, value)
    g = types.FunctionType(f.__code__, user_ns, f.__name__, f.__defaults__, f.__closure__)
    g.__kwdefaults__ = f.__kwdefaults__
    g.__dict__.update(f.__dict__)
    g.__qualname__ = f.__qualname__
    g.__doc__ = f.__doc__
    g.__annotations__ = f.__annotations__
    return g
