"""Turning an exception raised on the engine into the protocol's error content.

Error content (``docs/protocol.md``)::

    {"status": "error", "ename", "evalue", "traceback": [line, ...], "exc_module", "exc_qualname",
     "engine_info": {"engine_id", "engine_uuid", "method"}}

``ename``/``exc_module``/``exc_qualname`` name the *original* exception type, so the client can
re-raise it as that type when it can import it.  The traceback is plain text without the engine's
own frames: the user sees their code, not ours.
"""

from __future__ import annotations

import os
import traceback
from types import TracebackType
from typing import Any

from ipcluster.protocol.serialize import deserialize_object, serialize_object

# Frames from these directories are the engine's plumbing, not the user's code.
_ENGINE_DIRS = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(serialize_object.__code__.co_filename)) + os.sep,
)


def engine_info(engine_id: int | None, engine_uuid: str, method: str) -> dict[str, Any]:
    return {"engine_id": engine_id, "engine_uuid": engine_uuid, "method": method}


def _is_engine_file(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_ENGINE_DIRS)


def user_traceback(exc: BaseException) -> TracebackType | None:
    """*exc*'s traceback without the leading frames that belong to the engine itself."""
    tb = exc.__traceback__
    while tb is not None and _is_engine_file(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def safe_str(obj: object) -> str:
    """``str(obj)``, or a placeholder when ``__str__`` itself raises."""
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__name__} object>"


def format_traceback(exc: BaseException) -> list[str]:
    """The traceback of *exc* as plain-text lines (no trailing newlines), engine frames dropped."""
    try:
        te = traceback.TracebackException(type(exc), exc, user_traceback(exc), compact=True)
        link: traceback.TracebackException | None = te
        while link is not None:  # every exception of the chain: engine frames are never the user's
            link.stack = traceback.StackSummary.from_list(
                [f for f in link.stack if not _is_engine_file(f.filename)])
            link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
        chunks = list(te.format())
    except Exception:  # a broken __str__ or a pathological chain: never fail while reporting
        chunks = [f"{type(exc).__name__}: {safe_str(exc)}\n"]
    return "".join(chunks).splitlines()


def error_content(exc: BaseException, info: dict[str, Any],
                  traceback_lines: list[str] | None = None) -> dict[str, Any]:
    """Error content for *exc*; *traceback_lines* overrides the formatted traceback (IPython's)."""
    etype = type(exc)
    return {
        "status": "error",
        "ename": etype.__name__,
        "evalue": safe_str(exc),
        "traceback": format_traceback(exc) if traceback_lines is None else list(traceback_lines),
        "exc_module": etype.__module__,
        "exc_qualname": etype.__qualname__,
        "engine_info": dict(info),
    }


def aborted_content(info: dict[str, Any]) -> dict[str, Any]:
    """Reply content for a request that was aborted before it ran."""
    return {
        "status": "aborted",
        "ename": "TaskAborted",
        "evalue": "the task was aborted before it ran",
        "traceback": [],
        "exc_module": "ipcluster.errors",
        "exc_qualname": "TaskAborted",
        "engine_info": dict(info),
    }


def exception_buffers(exc: BaseException) -> list[Any]:
    """``serialize_object(exc)`` if the exception pickles *and* unpickles here, else ``[]``.

    Checking the round trip catches the common exception classes whose ``__init__`` signature
    does not match their ``args`` (they pickle fine and then fail to unpickle on the client).
    """
    try:
        buffers = serialize_object(exc)
        deserialize_object(buffers)
    except BaseException:
        return []
    return buffers
