"""Task dependencies as the client states them.

Two kinds:

- on other tasks: :class:`Dependency` (``after=`` / ``follow=`` of a LoadBalancedView), checked by
  the controller's scheduler;
- on the engine itself: :func:`require` and :func:`depend` wrap a function into a :class:`Dependent`
  that checks its condition on the engine before running.  Where the condition is unmet it raises
  :class:`Declined`; the engine then declines the task (an ``apply_reply`` with status ``"unmet"``)
  and the scheduler places it on another engine, or fails it with ``UnmetDependency`` once every
  engine that could run it has declined.

:class:`Declined` lives in :mod:`ipcluster.protocol.unmet`, which engines import.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable, Iterable

from ipcluster.protocol.namespace import bind_to_namespace
from ipcluster.protocol.unmet import Declined


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


# --- functional dependencies (checked on the engine) ----------------------------------------------


# a module's own bookkeeping names: never copied from a shipped function's globals


def _in_namespace(f: Any, ns: dict[str, Any]) -> Any:
    """*f* with *ns* as its globals if it is an interactive (``__main__``) function: the engine
    rebinds only a task's outermost callable, so the functions inside a Dependent are bound here."""
    return bind_to_namespace(f, ns)


def _namespace() -> dict[str, Any]:
    """Where the task runs: the engine's user namespace (the engine installs it as ``__main__``)."""
    main = sys.modules.get("__main__")
    return main.__dict__ if main is not None else {}


def _name(f: Any) -> str:
    return str(getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f))


class Dependent:
    """A function that runs only where its requirements hold; picklable (cloudpickle).

    Built by :func:`require` and :func:`depend`.  Calling it, on an engine or locally, first imports
    *modules* into the namespace (``{name in namespace: module name}``), then calls each condition
    ``(f, args, kwargs)``; a module that cannot be imported or a false condition raises
    :class:`Declined`.  Interactive functions (``__module__ == "__main__"``, e.g. ``@interactive``)
    run with the engine's namespace as their globals, as a task's function does.
    """

    def __init__(self, f: Callable[..., Any], modules: dict[str, str] | None = None,
                 conditions: Iterable[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = ()):
        if not callable(f):
            raise TypeError(f"a dependent function must be callable, not {type(f).__name__}")
        self.f = f
        self.modules = dict(modules or {})
        self.conditions = list(conditions)
        for attr in ("__name__", "__qualname__", "__doc__"):
            value = getattr(f, attr, None)
            if value is not None:
                setattr(self, attr, value)
        self.__wrapped__ = f

    def check(self, ns: dict[str, Any]) -> None:
        """Import the modules into *ns* and test the conditions; raise :class:`Declined` if unmet."""
        for alias, module in self.modules.items():
            try:
                imported = importlib.import_module(module)
            except ImportError as e:
                raise Declined(f"module {module!r} is not importable here ({type(e).__name__}: {e})") from None
            if alias == module:  # as `import a.b` binds: the name a, the top-level package
                top = module.partition(".")[0]
                ns[top] = sys.modules[top]
            else:  # as `import a.b as x`
                ns[alias] = imported
        for cond, args, kwargs in self.conditions:
            if not _in_namespace(cond, ns)(*args, **kwargs):
                raise Declined(f"{_name(cond)}({_call_args(args, kwargs)}) is false here")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ns = _namespace()
        self.check(ns)
        return _in_namespace(self.f, ns)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Dependent {_name(self.f)} modules={sorted(self.modules.values())} conditions={len(self.conditions)}>"


def _call_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    text = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    return text if len(text) <= 80 else text[:77] + "..."


def require(*requirements: Any, **mapping: Any) -> Callable[[Callable[..., Any]], Dependent]:
    """Decorator: the task runs only on engines that have these modules and meet these conditions.

    Parameters
    ----------
    requirements:
        Module names (``"numpy"``, ``"os.path"``) or modules: imported on the engine, into its
        namespace under their names (``"os.path"`` binds ``os``, as ``import os.path`` does).
        Callables: conditions called without arguments on the engine, which must return true.
        (ipyparallel pushes positional functions instead; here use :func:`depend` semantics.)
    mapping:
        ``alias="module.name"`` (or a module): imported under *alias*, as ``import module.name as
        alias``.

    An engine where an import fails or a condition is false declines the task; the scheduler
    tries another.  When every engine declines, the task fails with ``UnmetDependency``.  Through a
    DirectView, the call fails with ``UnmetDependency``.
    """
    modules: dict[str, str] = {}
    conditions: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
    for item in requirements:
        if isinstance(item, types.ModuleType):
            item = item.__name__
        if isinstance(item, str):
            modules[item] = item
        elif callable(item):
            conditions.append((item, (), {}))
        else:
            raise TypeError(f"require() takes module names, modules or callables, not {type(item).__name__}")
    for alias, item in mapping.items():
        if isinstance(item, types.ModuleType):
            item = item.__name__
        if not isinstance(item, str):
            raise TypeError(f"require({alias}=...) takes a module name or a module, not {type(item).__name__}")
        modules[alias] = item

    def decorate(f: Callable[..., Any]) -> Dependent:
        return Dependent(f, modules=modules, conditions=conditions)

    return decorate


def depend(condition: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Dependent]:
    """Decorator: the task runs only on engines where ``condition(*args, **kwargs)`` is true.

    *condition* runs on the engine just before the task; an ``@interactive`` one sees the engine's
    namespace as its globals.  An exception it raises is the task's error (not a decline).
    See :func:`require` for what happens when engines decline.
    """
    if not callable(condition):
        raise TypeError(f"depend() takes a callable, not {type(condition).__name__}")

    def decorate(f: Callable[..., Any]) -> Dependent:
        return Dependent(f, conditions=[(condition, args, kwargs)])

    return decorate
