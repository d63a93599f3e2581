"""Functional dependencies (@require / @depend): the wrapper and the engine's decline, no sockets."""

from __future__ import annotations

import sys
import types

import cloudpickle
import pytest

import ipcluster
from ipcluster import errors
from ipcluster.client.dependency import Declined, Dependent, depend, require
from ipcluster.client.metadata import reply_value
from ipcluster.protocol.serialize import pack_apply_message
from ipcluster.protocol.session import Message

from engines.execution import Executor, new_user_module


@pytest.fixture(autouse=True)
def main(monkeypatch) -> types.ModuleType:
    """A fresh ``__main__`` (the engine's namespace), so nothing lands in the test runner's."""
    module = new_user_module()
    monkeypatch.setitem(sys.modules, "__main__", module)
    return module


def _interactive_in(ns: dict, src: str, name: str):
    """A function defined in *ns* and marked interactive (``__module__ == "__main__"``)."""
    exec(src, ns)
    f = ns[name]
    f.__module__ = "__main__"
    return f


def test_public_names():
    assert ipcluster.require is require
    assert ipcluster.depend is depend


def test_require_imports_modules_under_their_names(main):
    g = _interactive_in({}, "def g():\n    return os.path.join('a', 'b'), np_.__name__\n", "g")
    task = require("os.path", np_="json")(g)
    assert task() == ("a/b", "json")
    assert main.__dict__["os"].__name__ == "os" and main.__dict__["np_"].__name__ == "json"


def test_require_module_object_and_missing_module():
    assert require(types)(lambda: 1).modules == {"types": "types"}
    task = require("no_such_module_xyz")(lambda: 1)
    with pytest.raises(Declined, match="no_such_module_xyz"):
        task()


def test_require_callable_is_a_condition():
    assert require(lambda: True)(lambda: 5)() == 5
    def never():
        return False
    with pytest.raises(Declined, match="never"):
        require(never)(lambda: 5)()


def test_depend_passes_arguments_and_sees_the_engine_namespace(main):
    has = _interactive_in({}, "def has(name, want=True):\n    return (name in globals()) == want\n", "has")
    task = depend(has, "flag")(lambda x: x * 2)
    with pytest.raises(Declined, match=r"has\('flag'\) is false"):
        task(3)
    main.__dict__["flag"] = 1
    assert task(3) == 6
    assert depend(has, "flag", want=False)(lambda: 0).conditions[0][2] == {"want": False}


def test_condition_errors_are_task_errors():
    def broken():
        raise KeyError("x")
    with pytest.raises(KeyError):
        depend(broken)(lambda: 1)()


def test_stacked_and_metadata_kept():
    def work(x):
        """doc"""
        return x + 1
    task = require("json")(depend(lambda: True)(work))
    assert task(1) == 2
    assert task.__name__ == "work" and task.__doc__ == "doc" and task.__wrapped__.__wrapped__ is work


def test_pickles_by_value():
    task = require("json", j="json")(depend(lambda n: n > 0, 1)(lambda x: -x))
    copy = cloudpickle.loads(cloudpickle.dumps(task))
    assert isinstance(copy, Dependent) and copy.modules == task.modules
    assert copy(4) == -4


def test_bad_arguments():
    with pytest.raises(TypeError):
        require(42)
    with pytest.raises(TypeError):
        require(x=42)
    with pytest.raises(TypeError):
        depend("not callable")


class _Output:
    def publish(self, *args, **kwargs):
        pass


def _apply_msg(f) -> Message:
    return Message({"msg_type": "apply_request"}, {}, {}, {}, pack_apply_message(f, (), {}))


def test_engine_declines_with_unmet_content(main):
    executor = Executor(_Output(), "uuid-1", user_module=main)
    executor.engine_id = 3
    outcome = executor.apply(_apply_msg(require("no_such_module_xyz")(lambda: 1)))
    assert outcome.status == "unmet"
    assert outcome.content["ename"] == "UnmetDependency"
    assert "no_such_module_xyz" in outcome.content["evalue"]
    assert outcome.content["engine_info"] == {"engine_id": 3, "engine_uuid": "uuid-1", "method": "apply"}
    assert outcome.buffers == []
    # met: runs as usual, with the module imported into the engine namespace
    g = _interactive_in({}, "def g():\n    return json.dumps(1)\n", "g")
    outcome = executor.apply(_apply_msg(require("json")(g)))
    assert outcome.status == "ok" and "json" in executor.user_ns


def test_client_raises_unmet_dependency_for_unmet_replies():
    msg = Message({"msg_type": "apply_reply"}, {}, {},
                  {"status": "unmet", "ename": "UnmetDependency", "evalue": "module 'x'"})
    ok, value = reply_value(msg)
    assert not ok and isinstance(value, errors.UnmetDependency) and "module 'x'" in str(value)
