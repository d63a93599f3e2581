"""Error content: the original type's name and module, a traceback of the user's code only."""

from __future__ import annotations

import pickle
import threading

from ipcluster.protocol.serialize import deserialize_object, pack_apply_message
from ipcluster.protocol.session import Message

from engines.error_content import aborted_content, error_content, exception_buffers, format_traceback
from engines.execution import Executor
from engines.output import OutputRouter

INFO = {"engine_id": 3, "engine_uuid": "u", "method": "apply"}


class CustomError(Exception):
    pass


class TwoArgError(Exception):
    def __init__(self, a, b):  # args == (a,): pickles, but does not unpickle
        super().__init__(a)


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")


def raise_nested():
    def inner():
        raise CustomError("boom")

    inner()


def make_executor():
    sent = []
    router = OutputRouter(lambda *a: sent.append(a))
    ex = Executor(router, "uuid-1")
    ex.engine_id = 3
    return ex, sent


def apply_msg(f, *args, **kwargs):
    return Message({"msg_id": "m1", "msg_type": "apply_request"}, {}, {}, {},
                   pack_apply_message(f, args, kwargs))


def test_error_content_names_original_type():
    try:
        raise_nested()
    except CustomError as e:
        c = error_content(e, INFO)
    assert c["status"] == "error"
    assert c["ename"] == "CustomError"
    assert c["evalue"] == "boom"
    assert c["exc_module"] == __name__
    assert c["exc_qualname"] == "CustomError"
    assert c["engine_info"] == INFO
    text = "\n".join(c["traceback"])
    assert "in inner" in text and "in raise_nested" in text
    assert text.splitlines()[-1] == f"{__name__}.CustomError: boom"
    assert all("\n" not in line for line in c["traceback"])


def test_unprintable_exception_still_reported():
    c = error_content(Unprintable(), INFO)
    assert c["ename"] == "Unprintable"
    assert c["evalue"] == "<unprintable Unprintable object>"
    assert c["traceback"]


def test_exception_buffers_round_trip_or_nothing():
    bufs = exception_buffers(CustomError("x"))
    err = deserialize_object(bufs)
    assert isinstance(err, CustomError) and err.args == ("x",)
    assert exception_buffers(TwoArgError(1, 2)) == []


def test_aborted_content():
    c = aborted_content(INFO)
    assert c["status"] == "aborted" and c["ename"] == "TaskAborted"
    assert c["exc_module"] == "ipcluster.errors"


def test_apply_ok():
    ex, _ = make_executor()
    out = ex.apply(apply_msg(divmod, 7, 2))
    assert out.status == "ok"
    assert deserialize_object(out.buffers) == (3, 1)


def test_apply_error_drops_engine_frames():
    ex, _ = make_executor()
    out = ex.apply(apply_msg(raise_nested))
    c = out.content
    assert c["ename"] == "CustomError" and c["engine_info"]["method"] == "apply"
    text = "\n".join(c["traceback"])
    assert "engines" not in text.replace("test_engine_errors", "")
    assert "raise_nested" in text
    assert isinstance(deserialize_object(out.buffers), CustomError)
    assert not ex.running


def test_apply_unpicklable_result_is_an_error():
    ex, _ = make_executor()
    out = ex.apply(apply_msg(threading.Lock))
    assert out.status == "error" and out.content["ename"] == "TypeError"


def test_apply_bad_payload_is_an_error():
    ex, _ = make_executor()
    msg = Message({"msg_id": "m"}, {}, {}, {}, [pickle.dumps(("not", "a", "function")), b""])
    out = ex.apply(msg)
    assert out.status == "error"


def test_system_exit_and_keyboard_interrupt_are_task_errors():
    ex, _ = make_executor()
    for exc in (SystemExit(3), KeyboardInterrupt()):
        out = ex.apply(apply_msg(_raiser, exc))
        assert out.status == "error" and out.content["ename"] == type(exc).__name__


def _raiser(exc):
    raise exc


def test_format_traceback_of_chained_exceptions():
    try:
        try:
            raise KeyError("a")
        except KeyError as e:
            raise ValueError("b") from e
    except ValueError as e:
        lines = format_traceback(e)
    text = "\n".join(lines)
    assert "KeyError: 'a'" in text and "ValueError: b" in text
    assert "direct cause" in text
