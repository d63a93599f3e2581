"""Decorators that turn functions into remote calls, and the small functions engines run for views.

``@interactive`` marks a function to run in the engine's namespace (as if typed there): its globals
are the engine's ``user_ns``.  Functions defined in a script, IPython or a notebook (``__main__``)
already behave this way; the helpers below need the mark because they live in this module.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

if TYPE_CHECKING:
    from ipcluster.client.view import DirectView

F = TypeVar("F", bound=Callable[..., Any])


def interactive(f: F) -> F:
    """Run *f* on engines with the engine's namespace as its globals (like code typed there).

    The function is then shipped by value, so it must not rely on module state beyond the names
    it references.
    """
    f.__module__ = "__main__"
    return f


# --- what views run on engines (shipped by value thanks to @interactive) --------------------------


@interactive
def _push(ns: dict[str, Any]) -> None:
    globals().update(ns)


@interactive
def _pull(keys: str | Sequence[str]) -> Any:
    g = globals()

    def one(k: str) -> Any:
        try:
            return g[k]
        except KeyError:
            raise NameError(f"name {k!r} is not defined on this engine") from None

    if isinstance(keys, str):
        return one(keys)
    return [one(k) for k in keys]


@interactive
def _map(f: Callable[..., Any], *seqs: Sequence[Any]) -> list[Any]:
    return list(map(f, *seqs))


@interactive
def _import(module: str, attr: str | None, asname: str) -> None:
    """``import module as asname`` or ``from module import attr as asname``, in the engine namespace."""
    import importlib

    obj: Any = importlib.import_module(module)
    if attr is not None:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            obj = importlib.import_module(f"{module}.{attr}")
    globals()[asname] = obj


# --- decorators ----------------------------------------------------------------------------------


class RemoteFunction:
    """A function that runs on a view's engines when called: ``f(x)`` is ``view.apply(f, x)``."""

    def __init__(self, view: "DirectView", f: Callable[..., Any], block: bool | None = None):
        self.view = view
        self.func = f
        self.block = block
        functools.update_wrapper(self, f)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        block = self.view.block if self.block is None else self.block
        return self.view._apply(self.func, args, kwargs, block=block)


class ParallelFunction(RemoteFunction):
    """A function applied to partitions of its sequence arguments on the view's engines.

    With ``map=True`` the function is called on each element (like ``view.map``); otherwise it is
    called once per engine with that engine's slice of each sequence, and the returned sequences are
    joined in order.
    """

    def __init__(self, view: "DirectView", f: Callable[..., Any], block: bool | None = None,
                 map: bool = False):
        super().__init__(view, f, block)
        self.mapped = map

    def __call__(self, *sequences: Any) -> Any:
        block = self.view.block if self.block is None else self.block
        if self.mapped:
            return self.view.map(self.func, *sequences, block=block)
        return self.view._map_chunks(self.func, sequences, block=block, per_chunk=True)

    def map(self, *sequences: Any) -> Any:
        """Call the function on each element (like the builtin ``map``)."""
        block = self.view.block if self.block is None else self.block
        return self.view.map(self.func, *sequences, block=block)


def remote(view: "DirectView", block: bool | None = None) -> Callable[[F], RemoteFunction]:
    """Decorator: ``@remote(view)`` makes calls of the function run on *view*."""
    return lambda f: RemoteFunction(view, f, block)


def parallel(view: "DirectView", block: bool | None = None, map: bool = False
             ) -> Callable[[F], ParallelFunction]:
    """Decorator: ``@parallel(view)`` partitions the sequence arguments over *view*'s engines."""
    return lambda f: ParallelFunction(view, f, block, map)
