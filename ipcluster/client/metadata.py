"""Per-request metadata and the conversion of replies into values or exceptions."""

from __future__ import annotations

import sys
from typing import Any

from ipcluster import errors
from ipcluster.protocol.serialize import deserialize_object
from ipcluster.protocol.session import Message


#: A fresh request's metadata (``outputs`` gets its own list in each copy).
_DEFAULTS: dict[str, Any] = dict(
    msg_id=None, engine_id=None, engine_uuid=None, submitted=None, received=None, started=None,
    completed=None, status=None, stdout="", stderr="", outputs=None, execute_result=None, error=None,
)


class Metadata(dict[str, Any]):
    """A dict with attribute access, describing one request to one engine.

    Keys: ``msg_id``, ``engine_id``, ``engine_uuid``, ``submitted``, ``received``, ``started``,
    ``completed`` (float Unix times), ``status``, ``stdout``, ``stderr``, ``outputs`` (display data,
    in order), ``execute_result``, ``error``.
    """

    def __init__(self, **kwargs: Any):
        dict.__init__(self, _DEFAULTS)
        self["outputs"] = []
        if kwargs:
            dict.update(self, kwargs)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


_new_dict = dict.__new__
_update = dict.update


def new_metadata(msg_id: str, engine_id: int | None, engine_uuid: str, submitted: float) -> Metadata:
    """``Metadata(msg_id=..., engine_id=..., engine_uuid=..., submitted=...)``, made once per request:
    without the keyword-argument call (a fifth of the cost)."""
    md: Metadata = _new_dict(Metadata)
    _update(md, _DEFAULTS)
    md["msg_id"] = msg_id
    md["engine_id"] = engine_id
    md["engine_uuid"] = engine_uuid
    md["submitted"] = submitted
    md["outputs"] = []
    return md


def _find_type(module: str | None, qualname: str | None) -> type[BaseException] | None:
    """The exception class named by the engine, if its module is already imported here.

    Modules are never imported for this: a remote error must not run import side effects.
    """
    if not module or not qualname:
        return None
    mod = sys.modules.get(module)
    if mod is None:
        return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None


def error_from_content(content: dict[str, Any], buffers: list[Any] | None = None) -> BaseException:
    """The exception a client raises for an error reply."""
    ename = str(content.get("ename", "Error"))
    evalue = str(content.get("evalue", ""))
    tb = content.get("traceback") or []
    traceback = "\n".join(tb) if isinstance(tb, list) else str(tb)
    info = content.get("engine_info") or {}
    module, qualname = content.get("exc_module"), content.get("exc_qualname")
    if module == "ipcluster.errors":
        cls = getattr(errors, str(qualname), None)
        if isinstance(cls, type) and issubclass(cls, errors.EngineError):
            return cls(evalue, engine_id=info.get("engine_id"))
        if isinstance(cls, type) and issubclass(cls, errors.IPClusterError) and not issubclass(cls, errors.RemoteError):
            err = cls(evalue or qualname)
            if traceback:  # where a task stopped for its time limit or a cancel was interrupted
                err.__cause__ = errors.RemoteTraceback(traceback)
            return err
    original = None
    if buffers:
        try:
            candidate = deserialize_object(buffers)
            if isinstance(candidate, BaseException):
                original = candidate
        except Exception:
            original = None
    return errors.make_remote_error(
        ename, evalue, traceback, info, original=original, original_type=_find_type(module, qualname)
    )


def reply_value(msg: Message) -> tuple[bool, Any]:
    """``(ok, value)`` for a reply: the result object, or the exception to raise."""
    status = msg.content.get("status")
    if status == "ok":
        if msg.msg_type == "apply_reply":
            return True, deserialize_object(msg.buffers) if msg.buffers else None
        return True, None
    if status == "aborted":
        return False, errors.TaskAborted(msg.content.get("evalue") or "task aborted before it ran")
    if status == "unmet":  # an engine declined (@require / @depend), e.g. through a DirectView
        return False, errors.UnmetDependency(msg.content.get("evalue") or "a functional dependency is unmet")
    return False, error_from_content(msg.content, msg.buffers)
