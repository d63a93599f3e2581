"""The cache of by-value function pickles: reused only while nothing the function captures changed."""

from __future__ import annotations

import pickle
import types

import pytest

from ipcluster.protocol.funccache import FunctionPickleCache, load_function
from ipcluster.protocol.serialize import deserialize_object, serialize_object

pytestmark = pytest.mark.timeout(10)


def _make(src: str, ns: dict | None = None) -> tuple[types.FunctionType, dict]:
    """A function compiled in a fresh '__main__'-like namespace, so cloudpickle ships it by value."""
    g = {"__name__": "__main__"} if ns is None else ns
    exec(src, g)
    return g["f"], g


def _run(cache: FunctionPickleCache, f: types.FunctionType, *args):
    payload = cache.payload(f)
    assert payload is not None
    return load_function(payload)(*args)


def test_stable_function_is_reused_until_a_global_is_rebound():
    f, g = _make("K = 2\ndef f(x):\n    return x * K\n")
    cache = FunctionPickleCache()
    assert _run(cache, f, 3) == 6
    p1 = cache.payload(f)
    assert cache.payload(f) is p1 and cache.hits == 2
    g["K"] = 5
    assert _run(cache, f, 3) == 15


def test_a_global_defined_later_invalidates():
    f, g = _make("def f(x):\n    return len(x)\n")
    cache = FunctionPickleCache()
    assert _run(cache, f, "abc") == 3
    g["len"] = lambda x: 99  # shadows the builtin from now on
    assert _run(cache, f, "abc") == 99


def test_mutable_captures_are_never_cached():
    for src in ("L = [1]\ndef f():\n    return L\n",
                "def f(acc=[]):\n    return acc\n",
                "def f(*, d={}):\n    return d\n",
                "import numbers\nclass C: pass\ndef f():\n    return C\n"):
        f, _ = _make(src)
        assert FunctionPickleCache().payload(f) is None, src


def test_closure_cells_defaults_code_and_attributes_are_checked():
    src = ("def make(n):\n    def f(x=1):\n        return x + n\n"
           "    def bump():\n        nonlocal n\n        n += 1\n    return f, bump\nf, bump = make(10)\n")
    f, g = _make(src)
    cache = FunctionPickleCache()
    assert _run(cache, f) == 11
    g["bump"]()  # rebinds the closure cell
    assert _run(cache, f) == 12
    f.__defaults__ = (5,)
    assert _run(cache, f) == 16

    h, _ = _make("def f(x):\n    return x\n")
    assert _run(cache, h, 7) == 7
    h.__code__ = _make("def f(x):\n    return -x\n")[0].__code__  # a different body
    assert _run(cache, h, 7) == -7
    h.attr = 1  # functions with attributes are not cached
    assert cache.payload(h) is None

    k, _ = _make("def f(*, step=1):\n    return step\n")
    assert _run(cache, k) == 1
    k.__kwdefaults__["step"] = 3  # mutated in place
    assert _run(cache, k) == 3


def test_nested_by_value_functions_are_followed():
    f, g = _make("def helper(x):\n    return x + 1\ndef f(x):\n    return helper(x)\n")
    cache = FunctionPickleCache()
    assert _run(cache, f, 1) == 2
    exec("def helper(x):\n    return x + 2\n", g)  # rebinding the helper
    assert _run(cache, f, 1) == 3
    g["helper"].__defaults__ = None
    g["helper"].__code__ = _make("def f(x):\n    return x + 3\n")[0].__code__  # mutating it in place
    assert _run(cache, f, 1) == 4


def test_importable_functions_are_left_to_cloudpickle():
    import os.path
    assert FunctionPickleCache().payload(os.path.join) is None


def test_serialize_object_uses_the_cache_and_round_trips():
    f, g = _make("import math\ndef f(x):\n    return math.sqrt(x)\n")
    for _ in range(3):
        g2, args, kwargs = deserialize_object(serialize_object((f, (16,), {})))
        assert g2(*args, **kwargs) == 4.0
    # the cached form is a plain pickle of the function that any unpickler can load
    assert pickle.loads(FunctionPickleCache().payload(f))(9) == 3.0


def test_loaded_functions_are_fresh_copies():
    src = ("def make():\n    n = 0\n    def f(*, step=1):\n        nonlocal n\n        n += step\n        return n\n"
           "    return f\nf = make()\n")
    f, _ = _make(src)
    payload = FunctionPickleCache().payload(f)
    a, b = load_function(payload), load_function(payload)
    assert a is not b
    assert (a(), a(), b()) == (1, 2, 1)  # each copy has its own closure cell
    a.__kwdefaults__["step"] = 10
    assert b() == 2 and load_function(payload)() == 1
    assert (a.__module__, a.__qualname__, a.__name__) == ("__main__", "make.<locals>.f", "f")


def _make_evaluated(src: str) -> types.FunctionType:
    """:func:`_make`, with annotations evaluated (not inheriting this module's future import)."""
    g: dict = {"__name__": "__main__"}
    exec(compile(src, "<main>", "exec", dont_inherit=True), g)
    return g["f"]


def test_annotated_functions_are_cached_while_their_annotations_stay_put():
    f = _make_evaluated("def f(x: int, y: 'float' = 1.0) -> None:\n    return None\n")
    cache = FunctionPickleCache()
    assert _run(cache, f, 1) is None
    p1 = cache.payload(f)
    assert p1 is not None and cache.payload(f) is p1
    copy = load_function(p1)
    assert copy.__annotations__ == {"x": int, "y": "float", "return": None}
    assert copy.__annotations__ is not load_function(p1).__annotations__  # each copy has its own
    f.__annotations__["z"] = str  # changed in place: pickled afresh, with the new entry
    p2 = cache.payload(f)
    assert p2 is not p1 and load_function(p2).__annotations__["z"] is str
    g = _make_evaluated("class C: pass\ndef f(x: C) -> None:\n    return None\n")  # a class of __main__: may change
    assert FunctionPickleCache().payload(g) is None
