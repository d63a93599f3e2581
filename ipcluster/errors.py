"""The single exception hierarchy shared by the client, the controller and the engines.

Every error a user can see derives from :class:`IPClusterError`.  Errors raised by user code on an
engine arrive as :class:`RemoteError`; when the original exception type is importable in the client,
the raised object is an instance of *both* ``RemoteError`` and the original type, so
``except ZeroDivisionError`` and ``except ipcluster.RemoteError`` both catch it.
"""

from __future__ import annotations

import types
from typing import Any, Iterable, Sequence


class IPClusterError(Exception):
    """Base class of every ipcluster error."""


# --- protocol ------------------------------------------------------------------------------------


class ProtocolError(IPClusterError):
    """A message failed a check at the socket edge; it was dropped before being deserialized."""


class InvalidSignature(ProtocolError):
    """The HMAC signature of a message does not match its frames."""


class ReplayedMessage(ProtocolError):
    """A message whose signature has been seen before (a replay)."""


class StaleMessage(ReplayedMessage):
    """A message dated before what its receiver can still check for replays (too old, or older than
    the newest message of its sender that the receiver had to forget or saw before a restart)."""


class MalformedMessage(ProtocolError):
    """A message whose frames cannot be parsed (missing delimiter, bad JSON, wrong frame count)."""


class VersionMismatch(IPClusterError):
    """Two processes of one cluster run incompatible versions of ipcluster or Python."""


# --- connection and engines ----------------------------------------------------------------------


class ConnectionFileError(IPClusterError):
    """A connection file is missing, unreadable or malformed."""


import builtins as _builtins


class TimeoutError(IPClusterError, _builtins.TimeoutError):  # noqa: A001 - deliberately also the builtin
    """Waiting for a result, an engine or the controller took longer than allowed."""


class NoEnginesRegistered(IPClusterError):
    """An operation needs engines and none are registered."""


class EngineError(IPClusterError):
    """An engine could not complete a request: it died, was unregistered or is unknown."""

    def __init__(self, message: str, engine_id: int | None = None, msg_id: str | None = None):
        super().__init__(message)
        self.engine_id = engine_id
        self.msg_id = msg_id


class EngineDied(EngineError):
    """The engine running (or holding) a request stopped before it replied."""


class TaskKilledEngines(EngineDied):
    """A load-balanced task was running on ``max_engine_deaths`` engines that died; it is not
    retried again (it would take every engine of the cluster down)."""


class ControllerError(IPClusterError):
    """The controller rejected a request or could not be reached."""


class ControllerRestarted(ControllerError):
    """The controller was restarted from its task store and could not finish this request: it was
    still queued in the controller (never sent to an engine), or its engine never came back, or its
    reply was lost with the old controller.  The request ran at most once; resubmit it if needed."""


class LauncherError(IPClusterError):
    """A process that a launcher started failed; carries its exit code and last output lines."""

    def __init__(self, message: str, returncode: int | None = None, output: str = ""):
        self.returncode = returncode
        self.output = output
        text = message
        if returncode is not None:
            text += f" (exit code {returncode})"
        if output:
            text += "\n--- last output ---\n" + output.rstrip()
        super().__init__(text)


class ClusterError(IPClusterError):
    """A cluster could not be started, found or stopped."""


class AlreadyRunning(ClusterError):
    """A cluster with this profile and cluster id is already running."""


class ClusterNotFound(ClusterError):
    """No running cluster matches the given profile and cluster id."""


# --- remote errors -------------------------------------------------------------------------------


class RemoteTraceback(Exception):
    """Carries the remote traceback text; set as ``__cause__`` so it prints above the error."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class RemoteError(IPClusterError):
    """An exception raised by user code on an engine.

    Attributes
    ----------
    ename, evalue:
        The remote exception's type name and ``str()``.
    traceback:
        The remote traceback as text.
    engine_info:
        ``{"engine_id": int, "engine_uuid": str, "method": str}`` describing where it happened.
    """

    ename: str
    evalue: str
    traceback: str
    engine_info: dict[str, Any]

    def __init__(
        self,
        ename: str = "",
        evalue: str = "",
        traceback: str = "",
        engine_info: dict[str, Any] | None = None,
    ):
        super().__init__(ename, evalue)
        _fill_remote(self, ename, evalue, traceback, engine_info)

    @property
    def engine_id(self) -> int | None:
        return self.engine_info.get("engine_id")

    def __str__(self) -> str:
        where = f"[engine {self.engine_id}] " if self.engine_id is not None else ""
        return f"{where}{self.ename}: {self.evalue}"

    def render_traceback(self) -> list[str]:
        """The remote traceback as lines (or the error itself when it came without one)."""
        return self.traceback.splitlines() or [str(self)]

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of the local traceback: the engine and method, then the
        remote traceback (the local frames only say that a result was waited for)."""
        info = self.engine_info
        return [f"[{info.get('engine_id', '?')}:{info.get('method', 'apply')}]: ", *self.render_traceback()]


def _fill_remote(
    err: BaseException,
    ename: str,
    evalue: str,
    traceback: str,
    engine_info: dict[str, Any] | None,
) -> None:
    err.ename = ename  # type: ignore[attr-defined]
    err.evalue = evalue  # type: ignore[attr-defined]
    err.traceback = traceback  # type: ignore[attr-defined]
    err.engine_info = dict(engine_info or {})  # type: ignore[attr-defined]


_combined_types: dict[type, type] = {}


def remote_error_type(original: type[BaseException]) -> type[RemoteError]:
    """Return a class deriving from both :class:`RemoteError` and *original* (cached).

    Falls back to plain :class:`RemoteError` when Python cannot combine the two layouts.
    """
    if not isinstance(original, type) or not issubclass(original, Exception):
        return RemoteError
    if issubclass(original, RemoteError):
        return original
    cached = _combined_types.get(original)
    if cached is not None:
        return cached
    try:
        combined = type(
            original.__name__,
            (RemoteError, original),
            {"__module__": original.__module__, "__qualname__": original.__qualname__,
             "__str__": RemoteError.__str__, "__init__": RemoteError.__init__},
        )
    except TypeError:
        combined = RemoteError
    _combined_types[original] = combined
    return combined


def make_remote_error(
    ename: str,
    evalue: str,
    traceback: str,
    engine_info: dict[str, Any] | None = None,
    original: BaseException | None = None,
    original_type: type[BaseException] | None = None,
) -> RemoteError:
    """Build the exception a client raises for a remote failure.

    *original* (the unpickled remote exception, if that worked) gives the args and attributes;
    *original_type* alone gives the type.  The remote traceback is attached as ``__cause__``.
    """
    typ = original_type if original is None else type(original)
    cls = remote_error_type(typ) if typ is not None else RemoteError
    err = cls.__new__(cls)
    if original is not None:
        try:
            err.__dict__.update(getattr(original, "__dict__", {}))
        except Exception:
            pass
        err.args = original.args
        _copy_builtin_fields(err, original)
    else:
        err.args = (ename, evalue)
    _fill_remote(err, ename, evalue, traceback, engine_info)
    if traceback:
        err.__cause__ = RemoteTraceback(traceback)
    return err


def _copy_builtin_fields(err: BaseException, original: BaseException) -> None:
    """Copy the C-level fields of built-in exceptions (``OSError.errno``, ``.filename``, ...).

    They live in slots, not in ``__dict__``, and ``__new__`` without arguments leaves them ``None``.
    """
    for klass in type(original).__mro__:
        if klass.__module__ != "builtins":
            continue
        for name, descr in vars(klass).items():
            if isinstance(descr, types.MemberDescriptorType) and not name.startswith("__"):
                try:
                    setattr(err, name, getattr(original, name))
                except (AttributeError, TypeError):
                    pass


class CompositeError(RemoteError):
    """Several requests failed: holds each failure (a :class:`RemoteError`, :class:`EngineError`, ...).

    ``elist`` keeps them in request order; :meth:`raise_exception` re-raises one of them.
    """

    def __init__(self, message: str, elist: Sequence[BaseException]):
        self.elist = list(elist)
        first = self.elist[0] if self.elist else None
        super().__init__(
            "CompositeError",
            message,
            "\n".join(getattr(e, "traceback", "") or "" for e in self.elist),
            dict(getattr(first, "engine_info", {}) or {}),
        )
        self.message = message

    def __str__(self) -> str:
        lines = [f"{self.message}"]
        for e in self.elist[:8]:
            lines.append(f"  {_describe(e)}")
        if len(self.elist) > 8:
            lines.append(f"  ... {len(self.elist) - 8} more")
        return "\n".join(lines)

    def render_traceback(self) -> list[str]:
        lines: list[str] = []
        for e in self.elist:
            info = getattr(e, "engine_info", {}) or {}
            lines.append(f"[{info.get('engine_id', getattr(e, 'engine_id', '?'))}:{info.get('method', 'apply')}]: ")
            render = getattr(e, "render_traceback", None)
            lines.extend(render() if render is not None else [f"{type(e).__name__}: {e}"])
        return lines or [str(self)]

    def _render_traceback_(self) -> list[str]:
        """What IPython shows: each engine's traceback under its ``[engine:method]`` label."""
        return [*self.render_traceback(), f"{type(self).__name__}: {self.message}"]

    def raise_exception(self, excid: int = 0) -> None:
        """Raise the *excid*-th underlying error."""
        raise self.elist[excid]


def _describe(e: BaseException) -> str:
    if isinstance(e, RemoteError):
        return RemoteError.__str__(e)
    eid = getattr(e, "engine_id", None)
    where = f"[engine {eid}] " if eid is not None else ""
    return f"{where}{type(e).__name__}: {e}"


def collect_exceptions(results: Iterable[Any], method: str) -> None:
    """Raise a :class:`CompositeError` if any item of *results* is an exception."""
    results = list(results)  # may be a one-shot iterator; it is scanned twice
    elist = [r for r in results if isinstance(r, RemoteError)]
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, RemoteError)]
    if others:
        raise others[0]
    if elist:
        raise CompositeError(f"one or more exceptions raised in {method}", elist)


class TaskAborted(IPClusterError):
    """The task was aborted before it ran."""


class TaskTimeout(IPClusterError, _builtins.TimeoutError):
    """A task ran longer than its ``time_limit`` (it was interrupted, or killed and its engine
    restarted), or a load-balanced task waited longer than its ``timeout`` for an engine."""


class TaskCancelled(TaskAborted):
    """A running task was stopped by ``AsyncResult.cancel()`` (interrupted, or killed and its
    engine restarted)."""


class DependencyError(IPClusterError):
    """A load-balanced task's dependencies cannot be met."""


class InvalidDependency(DependencyError):
    """A dependency names a task the controller does not know."""


class ImpossibleDependency(DependencyError):
    """A dependency can no longer be met (e.g. a required task failed)."""


class UnmetDependency(DependencyError):
    """Every engine that could run the task declined it."""


__all__ = [name for name in globals() if not name.startswith("_") and name[0].isupper()] + [
    "make_remote_error",
    "remote_error_type",
    "collect_exceptions",
]
