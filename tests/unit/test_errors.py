"""The shared exception hierarchy (``ipcluster.errors``)."""

from __future__ import annotations

import builtins
import pickle

import pytest

import ipcluster
from ipcluster import errors
from ipcluster.errors import (
    CompositeError,
    EngineDied,
    EngineError,
    InvalidSignature,
    IPClusterError,
    LauncherError,
    MalformedMessage,
    ProtocolError,
    RemoteError,
    RemoteTraceback,
    ReplayedMessage,
    collect_exceptions,
    make_remote_error,
    remote_error_type,
)

pytestmark = pytest.mark.timeout(10)

TB = 'Traceback (most recent call last):\n  File "<remote>", line 1, in <module>\nZeroDivisionError: division by zero'


class CustomError(Exception):
    """A user exception with a required-argument __init__ and extra attributes."""

    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def remote(original, engine_id=3, tb=TB, method="apply"):
    return make_remote_error(
        type(original).__name__, str(original), tb,
        {"engine_id": engine_id, "engine_uuid": "u-%d" % engine_id, "method": method},
        original=original,
    )


# --- hierarchy ----------------------------------------------------------------------------------


def test_hierarchy():
    for cls in (InvalidSignature, ReplayedMessage, MalformedMessage):
        assert issubclass(cls, ProtocolError)
    assert issubclass(ProtocolError, IPClusterError)
    assert issubclass(EngineDied, EngineError)
    assert issubclass(CompositeError, RemoteError)
    assert issubclass(errors.TimeoutError, builtins.TimeoutError)
    assert issubclass(errors.TimeoutError, IPClusterError)
    assert issubclass(errors.AlreadyRunning, errors.ClusterError)
    assert issubclass(errors.ClusterNotFound, errors.ClusterError)


def test_top_level_names_are_the_error_classes():
    for name in ipcluster._ERRORS:
        cls = getattr(ipcluster, name)
        assert cls is getattr(errors, name)
        assert issubclass(cls, IPClusterError), name
    with pytest.raises(AttributeError):
        ipcluster.NoSuchThing  # noqa: B018


def test_engine_error_fields():
    e = EngineDied("engine 2 died", engine_id=2, msg_id="abc")
    assert (e.engine_id, e.msg_id) == (2, "abc")
    assert str(e) == "engine 2 died"


# --- make_remote_error --------------------------------------------------------------------------


ORIGINALS = [
    pytest.param(ZeroDivisionError("division by zero"), id="ZeroDivisionError"),
    pytest.param(KeyError("missing"), id="KeyError"),
    pytest.param(ValueError("bad", 2), id="ValueError"),
    pytest.param(FileNotFoundError(2, "No such file or directory", "/nope"), id="FileNotFoundError"),
    pytest.param(PermissionError(13, "Permission denied", "/root/x"), id="PermissionError"),
    pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="ConnectionResetError"),
    pytest.param(OSError("plain os error"), id="OSError"),
    pytest.param(CustomError(42, "custom detail"), id="CustomError"),
]


@pytest.mark.parametrize("original", ORIGINALS)
def test_remote_error_is_both_remote_error_and_original_type(original):
    err = remote(original)
    assert isinstance(err, RemoteError)
    assert isinstance(err, IPClusterError)
    assert isinstance(err, type(original))
    assert type(err).__name__ == type(original).__name__
    assert type(err).__qualname__ == type(original).__qualname__
    assert type(err).__module__ == type(original).__module__

    # both kinds of except clause catch it
    with pytest.raises(type(original)):
        raise err
    with pytest.raises(RemoteError):
        raise err


@pytest.mark.parametrize("original", ORIGINALS)
def test_remote_error_keeps_args_fields_and_traceback(original):
    err = remote(original, engine_id=5)
    assert err.args == original.args
    assert err.ename == type(original).__name__
    assert err.evalue == str(original)
    assert err.traceback == TB
    assert err.engine_id == 5
    assert err.engine_info == {"engine_id": 5, "engine_uuid": "u-5", "method": "apply"}
    assert isinstance(err.__cause__, RemoteTraceback)
    assert str(err.__cause__) == TB
    assert err.__cause__.tb == TB


@pytest.mark.parametrize("original", ORIGINALS)
def test_remote_error_str_shows_engine_id(original):
    err = remote(original, engine_id=7)
    s = str(err)
    assert s.startswith("[engine 7] ")
    assert f"{type(original).__name__}: {original}" in s


def test_os_error_fields_are_kept():
    original = FileNotFoundError(2, "No such file or directory", "/nope")
    err = remote(original)
    assert err.errno == 2
    assert err.strerror == "No such file or directory"
    assert err.filename == "/nope"


def test_other_builtin_fields_are_kept():
    err = remote(StopIteration(99))
    assert err.value == 99
    err = remote(SystemExit(3))
    assert err.code == 3
    err = remote(ImportError("no module", name="mod", path="/p/mod.py"))
    assert (err.name, err.path) == ("mod", "/p/mod.py")


def test_custom_exception_attributes_are_kept():
    err = remote(CustomError(42, "custom detail"))
    assert isinstance(err, CustomError)
    assert (err.code, err.detail) == (42, "custom detail")


def test_locally_defined_exception_class():
    class Interactive(ArithmeticError):
        pass

    err = remote(Interactive("x"))
    assert isinstance(err, Interactive) and isinstance(err, ArithmeticError)
    with pytest.raises(ArithmeticError):
        raise err


def test_type_only_when_the_exception_did_not_unpickle():
    err = make_remote_error("KeyError", "'k'", TB, {"engine_id": 1}, original_type=KeyError)
    assert isinstance(err, KeyError) and isinstance(err, RemoteError)
    assert err.args == ("KeyError", "'k'")
    assert str(err) == "[engine 1] KeyError: 'k'"


def test_without_type_is_plain_remote_error():
    err = make_remote_error("WeirdError", "boom", TB)
    assert type(err) is RemoteError
    assert str(err) == "WeirdError: boom"  # no engine info: no prefix
    assert err.engine_id is None
    assert err.__cause__.tb == TB


def test_no_traceback_no_cause():
    err = make_remote_error("E", "v", "", original=ValueError("v"))
    assert err.__cause__ is None
    assert err.render_traceback() == [str(err)]


def test_render_traceback_is_the_remote_traceback():
    err = remote(ZeroDivisionError("division by zero"))
    assert err.render_traceback() == TB.splitlines()


def test_engine_info_is_copied():
    info = {"engine_id": 1}
    err = make_remote_error("E", "v", TB, info, original=ValueError("v"))
    info["engine_id"] = 99
    assert err.engine_id == 1


def test_remote_error_type_is_cached_and_falls_back():
    assert remote_error_type(ZeroDivisionError) is remote_error_type(ZeroDivisionError)
    assert remote_error_type(RemoteError) is RemoteError
    assert remote_error_type(CompositeError) is CompositeError
    # not an Exception (must not turn into something `except Exception` misses the other way)
    assert remote_error_type(KeyboardInterrupt) is RemoteError
    assert remote_error_type("not a type") is RemoteError  # type: ignore[arg-type]


def test_remote_error_constructor():
    err = RemoteError("ValueError", "bad", TB, {"engine_id": 0, "method": "execute"})
    assert str(err) == "[engine 0] ValueError: bad"
    assert err.args == ("ValueError", "bad")
    assert err.render_traceback() == TB.splitlines()


def test_remote_traceback_str():
    assert str(RemoteTraceback("line 1\nline 2")) == "line 1\nline 2"


# --- CompositeError -----------------------------------------------------------------------------


def _errors(n):
    return [
        make_remote_error(
            "ZeroDivisionError", f"boom {i}", f"Traceback {i}\n  line {i}\nZeroDivisionError: boom {i}",
            {"engine_id": i, "engine_uuid": f"u{i}", "method": "apply"}, original=ZeroDivisionError(f"boom {i}"),
        )
        for i in range(n)
    ]


def test_composite_str_lists_each_engine():
    elist = _errors(3)
    ce = CompositeError("one or more exceptions raised in apply", elist)
    lines = str(ce).splitlines()
    assert lines[0] == "one or more exceptions raised in apply"
    assert lines[1:] == [f"  [engine {i}] ZeroDivisionError: boom {i}" for i in range(3)]
    assert ce.elist == elist
    assert ce.engine_id == 0  # the first failure's engine


def test_composite_str_is_bounded():
    ce = CompositeError("many", _errors(11))
    lines = str(ce).splitlines()
    assert len(lines) == 1 + 8 + 1
    assert lines[-1] == "  ... 3 more"
    assert "boom 8" not in str(ce)


def test_composite_render_traceback():
    elist = _errors(2)
    lines = CompositeError("m", elist).render_traceback()
    assert lines == [
        "[0:apply]: ", "Traceback 0", "  line 0", "ZeroDivisionError: boom 0",
        "[1:apply]: ", "Traceback 1", "  line 1", "ZeroDivisionError: boom 1",
    ]


def test_composite_raise_exception():
    elist = _errors(3)
    ce = CompositeError("m", elist)
    with pytest.raises(ZeroDivisionError) as info:
        ce.raise_exception()
    assert info.value is elist[0]
    with pytest.raises(RemoteError) as info:
        ce.raise_exception(2)
    assert info.value is elist[2]
    with pytest.raises(IndexError):
        ce.raise_exception(3)


def test_composite_is_a_remote_error():
    ce = CompositeError("m", _errors(2))
    with pytest.raises(RemoteError):
        raise ce
    assert ce.ename == "CompositeError"
    assert ce.evalue == "m"


def test_collect_exceptions():
    assert collect_exceptions([1, "x", None], "apply") is None
    elist = _errors(2)
    with pytest.raises(CompositeError) as info:
        collect_exceptions([1, elist[0], 2, elist[1]], "map")
    assert info.value.elist == elist
    assert "map" in str(info.value)
    # a local (non-remote) error is raised as itself
    local = EngineDied("gone", engine_id=4)
    with pytest.raises(EngineDied) as info2:
        collect_exceptions([elist[0], local], "apply")
    assert info2.value is local


def test_collect_exceptions_accepts_a_generator():
    elist = _errors(1)
    with pytest.raises(CompositeError):
        collect_exceptions((r for r in [1, elist[0]]), "apply")
    local = EngineDied("gone", engine_id=4)
    with pytest.raises(EngineDied):
        collect_exceptions((r for r in [1, local]), "apply")


# --- LauncherError ------------------------------------------------------------------------------


def test_launcher_error_message_has_exit_code_and_output_tail():
    tail = "Traceback (most recent call last):\n  ...\nImportError: no module named engines\n\n"
    e = LauncherError("engine 3 failed to start", returncode=1, output=tail)
    s = str(e)
    assert s.startswith("engine 3 failed to start (exit code 1)")
    assert "--- last output ---" in s
    assert s.endswith("ImportError: no module named engines")  # trailing blank lines trimmed
    assert e.returncode == 1
    assert e.output == tail


def test_launcher_error_negative_exit_code_and_no_output():
    e = LauncherError("controller killed", returncode=-9)
    assert str(e) == "controller killed (exit code -9)"
    assert e.output == ""


def test_launcher_error_without_exit_code():
    e = LauncherError("ssh failed", output="Permission denied (publickey).")
    assert "exit code" not in str(e)
    assert str(e).endswith("Permission denied (publickey).")
    assert e.returncode is None


def test_launcher_error_exit_code_zero_is_shown():
    assert "(exit code 0)" in str(LauncherError("exited early", returncode=0))


def test_plain_errors_pickle():
    for e in (LauncherError("x", 1, "out"), EngineError("y", 1, "m"), InvalidSignature("z")):
        e2 = pickle.loads(pickle.dumps(e))
        assert type(e2) is type(e)
