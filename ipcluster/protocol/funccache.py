"""Reuse the pickle of a function defined in ``__main__`` while nothing it captures has changed.

cloudpickle pickles a function from a script, IPython or a notebook *by value*: its code, the
globals it names, its defaults and closure.  That costs ~90 µs for even a trivial function, which
dominates ``apply_async`` loops of small tasks.  This cache keeps the pickle of such a function
and hands it out again only while a recorded list of identity checks still holds:

* the function's ``__code__``, ``__defaults__``, ``__kwdefaults__`` and ``__annotations__``
  entries, names and closure cell contents are the very objects they were;
* every name its code could load from its module's globals maps to the same object (or is still
  missing), for it and for every by-value function it reaches through them.

Identity says nothing about an object mutated in place, so a function is cached only when every
value it captures is *stable*: immutable builtins (numbers, strings, bytes, ``None``, tuples and
frozensets of them), modules, classes and functions pickled by reference, builtin functions, and
by-value functions that are themselves stable.  A function that captures a list, a dict, an array
or any other object is pickled afresh each time, exactly as without the cache.
"""

from __future__ import annotations

import pickle
import types
import weakref
from typing import Any

import cloudpickle

try:  # cloudpickle's own test of "importable, so pickled by reference"
    from cloudpickle.cloudpickle import _should_pickle_by_reference
except ImportError:  # pragma: no cover - another cloudpickle layout: no caching at all
    _should_pickle_by_reference = None

#: A function whose pickle is at least this large is not cached (it may hold big constants that
#: the caller would rather send out-of-band).
MAX_PAYLOAD = 64 * 1024
#: Entries kept at most; the cache is emptied when it grows past this (live functions only).
MAX_ENTRIES = 256

_MISSING = object()
_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis),
                      type(NotImplemented)})
_MAX_ITEMS = 64  # items of a tuple/frozenset looked at before declaring it unstable
_MAX_DEPTH = 4  # nesting of by-value functions followed


class _Unstable(Exception):
    """Raised while recording checks: the function captures something identity cannot vouch for."""


class _Entry:
    __slots__ = ("attr_checks", "dict_checks", "len_checks", "payload")

    def __init__(self, rec: "_Recorder", payload: bytes):
        self.attr_checks = rec.attr_checks
        self.dict_checks = rec.dict_checks
        self.len_checks = rec.len_checks
        self.payload = payload

    def valid(self) -> bool:
        for d, n in self.len_checks:
            if len(d) != n:
                return False
        for obj, attr, expected in self.attr_checks:
            if getattr(obj, attr, _MISSING) is not expected:
                return False
        for d, key, expected in self.dict_checks:
            if d.get(key, _MISSING) is not expected:
                return False
        return True


def _code_names(code: types.CodeType, out: set[str]) -> set[str]:
    """Every name *code* (and code nested in it) may look up as a global: a superset is fine."""
    out.update(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_names(const, out)
    return out


class _Recorder:
    """Walks what a by-value function captures, recording identity checks; raises :class:`_Unstable`."""

    def __init__(self) -> None:
        self.attr_checks: list[tuple[Any, str, Any]] = []
        self.dict_checks: list[tuple[dict[str, Any], str, Any]] = []
        # dicts whose size must not change (keys added to a function's __dict__ or kwdefaults)
        self.len_checks: list[tuple[dict[str, Any], int]] = []
        self._seen: set[int] = set()

    def function(self, f: types.FunctionType, depth: int) -> None:
        if id(f) in self._seen:
            return
        self._seen.add(id(f))
        if depth > _MAX_DEPTH or f.__dict__:
            raise _Unstable
        self.len_checks.append((f.__dict__, 0))
        for attr in ("__code__", "__defaults__", "__kwdefaults__", "__name__", "__qualname__", "__module__",
                     "__doc__"):
            self.attr_checks.append((f, attr, getattr(f, attr)))
        for value in f.__defaults__ or ():
            self.value(value, depth)
        if f.__kwdefaults__:
            self.len_checks.append((f.__kwdefaults__, len(f.__kwdefaults__)))
            for key, value in f.__kwdefaults__.items():
                self.dict_checks.append((f.__kwdefaults__, key, value))
                self.value(value, depth)
        annotations = f.__annotations__  # a mutable dict that cloudpickle ships: checked like kwdefaults
        self.len_checks.append((annotations, len(annotations)))
        for key, value in annotations.items():
            self.dict_checks.append((annotations, key, value))
            self.value(value, depth)
        for cell in f.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell (a name assigned later in the enclosing scope)
                raise _Unstable from None
            self.attr_checks.append((cell, "cell_contents", value))
            self.value(value, depth)
        g = f.__globals__
        for name in sorted(_code_names(f.__code__, set())):
            value = g.get(name, _MISSING)
            self.dict_checks.append((g, name, value))
            if value is not _MISSING:
                self.value(value, depth)

    def value(self, v: Any, depth: int) -> None:
        t = type(v)
        if t in _SCALARS:
            return
        if t is tuple or t is frozenset:
            if len(v) > _MAX_ITEMS:
                raise _Unstable
            for item in v:
                self.value(item, depth)
            return
        if t is types.BuiltinFunctionType:
            owner = getattr(v, "__self__", None)
            if owner is None or isinstance(owner, types.ModuleType):
                return
            raise _Unstable  # a bound method of some object
        if t is types.ModuleType or isinstance(v, type):
            if _by_reference(v):
                return
            raise _Unstable  # a class or module defined in __main__ can change under the same identity
        if t is types.FunctionType:
            if _by_reference(v):
                return
            self.function(v, depth + 1)
            return
        raise _Unstable


def _by_reference(obj: Any) -> bool:
    try:
        return bool(_should_pickle_by_reference(obj))  # type: ignore[misc]
    except Exception:
        return False


class FunctionPickleCache:
    """``payload(f)``: the cached cloudpickle of by-value function *f*, or ``None`` (pickle it normally)."""

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[types.FunctionType, _Entry | None] = weakref.WeakKeyDictionary()
        self.hits = 0

    def payload(self, f: types.FunctionType) -> bytes | None:
        if _should_pickle_by_reference is None:
            return None
        known: Any = self._entries.get(f, _MISSING)  # one lookup: this runs for every function pickled
        if known is None:
            return None  # known unstable: what it captures can change in place
        if known is not _MISSING and known.valid():
            self.hits += 1
            return known.payload  # type: ignore[no-any-return]
        entry = self._build(f)
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[f] = entry
        return None if entry is None else entry.payload

    def _build(self, f: types.FunctionType) -> _Entry | None:
        if _by_reference(f):
            return None  # cheap to pickle already (module + name)
        rec = _Recorder()
        try:
            rec.function(f, 0)
        except _Unstable:
            return None
        except RecursionError:  # pragma: no cover - absurdly nested constants
            return None
        payload = cloudpickle.dumps(f, protocol=pickle.HIGHEST_PROTOCOL)
        if len(payload) >= MAX_PAYLOAD:
            return None
        return _Entry(rec, payload)


#: Functions rebuilt from payloads, on the receiving side (payload -> function), newest last.
_loaded: dict[bytes, types.FunctionType] = {}
MAX_LOADED = 64


def load_function(payload: bytes) -> Any:
    """Rebuild a function from a cached payload (runs on the receiving side, inside unpickling).

    The same payload arrives again and again in a loop of small tasks, and unpickling a function
    by value costs tens of µs; so the first function built from a payload is kept and later ones
    are copies of it.  Each copy gets its own closure cells and keyword defaults, as a fresh
    unpickle would: a task that rebinds a ``nonlocal`` never affects the next one.  Everything
    else a payload's function captures is immutable (see the module docstring).
    """
    f = _loaded.get(payload)
    if f is None:
        f = pickle.loads(payload)
        if type(f) is not types.FunctionType:
            return f
        if len(_loaded) >= MAX_LOADED:
            del _loaded[next(iter(_loaded))]
        _loaded[payload] = f
    return _copy_function(f)


def _copy_function(f: types.FunctionType) -> types.FunctionType:
    closure = None
    if f.__closure__:
        closure = tuple(types.CellType(c.cell_contents) for c in f.__closure__)
    g = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, closure)
    g.__kwdefaults__ = dict(f.__kwdefaults__) if f.__kwdefaults__ else None
    if f.__annotations__:
        g.__annotations__ = dict(f.__annotations__)
    g.__qualname__ = f.__qualname__
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    return g


#: The process-wide cache used by :mod:`ipcluster.protocol.serialize`.
CACHE = FunctionPickleCache()

__all__ = ["CACHE", "FunctionPickleCache", "load_function", "MAX_ENTRIES", "MAX_PAYLOAD"]
