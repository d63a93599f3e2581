"""Running requests: ``apply_request`` (call a function) and ``execute_request`` (run code).

The engine has one user namespace, ``user_ns``: the ``__dict__`` of a module named ``__main__``
(installed as ``sys.modules["__main__"]`` by the engine, as IPython does, so pickle and friends
find what the user defined).  Both request types see the same namespace.

A function defined interactively on the client (``f.__module__ == "__main__"``: a script, IPython
or a notebook; cloudpickle ships those by value) runs with ``user_ns`` as its globals, like code
typed on the engine.  That is what makes ``push`` (``globals().update(ns)``), ``pull``
(``globals()[name]``) and ``apply(lambda: a)`` after a push work.  The globals cloudpickle captured
with it are added to ``user_ns`` first, without overwriting what the engine already has: a helper
or module the function uses is there, and a variable pushed to the engine wins over the client's
value of the same name.  Functions from importable modules run untouched.

Startup code (``c.IPEngine.startup_command`` / ``startup_script``, see :mod:`engines.config`) runs
in ``user_ns`` too, once, before the engine serves requests: :meth:`Executor.run_startup`.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import sys
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ipcluster.protocol.namespace import bind_to_namespace
from ipcluster.protocol.serialize import serialize_object, unpack_apply_message
from ipcluster.protocol.session import Message
from ipcluster.protocol.unmet import Declined

from engines.error_content import engine_info, error_content, exception_buffers
from engines.output import OutputRouter

# names of a module's own bookkeeping: never copied from a client function's globals

log = logging.getLogger("engines.execution")


@dataclass
class Outcome:
    """A handler's result: reply content (with ``status``) and reply buffers."""

    content: dict[str, Any]
    buffers: list[Any] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.content.get("status", "ok"))


@dataclass(frozen=True)
class StartupCode:
    """Python code an engine runs in its namespace before serving (``c.IPEngine.startup_*``).

    *command* is source text; *script* a file path (relative: from the working directory).
    """

    command: str = ""
    script: str = ""

    def __bool__(self) -> bool:
        return bool(self.command or self.script)


def new_user_module() -> types.ModuleType:
    """A fresh ``__main__`` module whose ``__dict__`` is the user namespace."""
    module = types.ModuleType("__main__", "The engine's interactive namespace")
    module.__dict__["__builtins__"] = builtins
    return module


def clear_namespace(user_ns: dict[str, Any]) -> None:
    """Remove every user name, keeping what a module namespace needs to work at all."""
    for name in [k for k in user_ns if k not in ("__name__", "__builtins__", "__builtin__")]:
        del user_ns[name]


class Executor:
    """Runs requests in the user namespace and turns outcomes into reply content.

    ``running`` is true while user code may be on the stack; the engine's SIGINT handler raises
    ``KeyboardInterrupt`` only then, so an interrupt never lands in the engine's own plumbing.
    """

    def __init__(self, output: OutputRouter, engine_uuid: str, user_module: types.ModuleType | None = None):
        self.output = output
        self.engine_uuid = engine_uuid
        self.engine_id: int | None = None
        self.user_module = user_module if user_module is not None else new_user_module()
        self.user_ns: dict[str, Any] = self.user_module.__dict__
        self.running = False
        self._shell: Any = None

    def info(self, method: str) -> dict[str, Any]:
        return engine_info(self.engine_id, self.engine_uuid, method)

    def error(self, exc: BaseException, method: str, with_buffers: bool = False) -> Outcome:
        content = error_content(exc, self.info(method))
        return Outcome(content, exception_buffers(exc) if with_buffers else [])

    @contextlib.contextmanager
    def user_code(self) -> Iterator[None]:
        """Mark the block as interruptible (see ``running``)."""
        self.running = True
        try:
            yield
        finally:
            self.running = False

    # --- apply --------------------------------------------------------------------------------

    def apply(self, msg: Message) -> Outcome:
        """Call the function in *msg*'s buffers; reply with its pickled result or the error."""
        # Each inner try/finally is what ``with self.user_code():`` does, written out: this runs
        # for every task, and a generator-based context manager costs more than a tiny task.
        try:
            self.running = True
            try:
                f, args, kwargs = unpack_apply_message(msg.buffers)
                result = bind_to_namespace(f, self.user_ns)(*args, **kwargs)
                del f, args, kwargs
            finally:
                self.running = False
        except Declined as e:  # an @require / @depend unmet here: decline, the scheduler tries elsewhere
            return self.declined(e)
        except BaseException as e:  # noqa: B036 - KeyboardInterrupt and SystemExit are task errors here
            return self.error(e, "apply", with_buffers=True)
        try:
            self.running = True  # pickling may run the user's __reduce__
            try:
                buffers = serialize_object(result)
            finally:
                self.running = False
        except BaseException as e:  # noqa: B036
            return self.error(e, "apply", with_buffers=True)
        return Outcome({"status": "ok"}, buffers)

    def declined(self, e: Declined) -> Outcome:
        """The reply that declines a task: status ``"unmet"``, named as ``ipcluster.UnmetDependency``."""
        return Outcome({"status": "unmet", "ename": "UnmetDependency", "evalue": e.reason, "traceback": [],
                        "exc_module": "ipcluster.errors", "exc_qualname": "UnmetDependency",
                        "engine_info": self.info("apply")})

    def stopped(self, outcome: Outcome, stop: int, msg_id: str, limit: float | None, method: str) -> Outcome:
        """The reply of a request the supervisor interrupted (time limit or cancel): the error is
        ``TaskTimeout`` / ``TaskCancelled``, with the interrupted traceback kept for the user."""
        from engines.taskslot import STOP_CANCEL

        if stop == STOP_CANCEL:
            ename, evalue = "TaskCancelled", f"task {msg_id} was cancelled while running; it was interrupted"
        else:
            ename = "TaskTimeout"
            evalue = f"task {msg_id} ran longer than its time limit of {limit or 0:g} s; it was interrupted"
        content = {**outcome.content, "status": "error", "ename": ename, "evalue": evalue,
                   "exc_module": "ipcluster.errors", "exc_qualname": ename, "engine_info": self.info(method)}
        return Outcome(content)

    # --- execute ------------------------------------------------------------------------------

    def execute(self, msg: Message) -> Outcome:
        """Run ``content["code"]`` as an IPython cell; outputs are sent as they happen."""
        code = msg.content.get("code", "")
        silent = bool(msg.content.get("silent", False))
        if not isinstance(code, str):
            return self.error(TypeError(f"execute_request code must be str, not {type(code).__name__}"),
                              "execute")
        try:
            # not interruptible (a time limit, a cancel): a half-done import of IPython would
            # break every later execute on this engine
            shell = self.shell()
            from engines.shell import run_cell

            with self.user_code():
                count, error = run_cell(shell, code, silent)
        except BaseException as e:  # noqa: B036
            outcome = self.error(e, "execute")
            self.output.publish("error", outcome.content)
            return outcome
        if error is not None:
            return Outcome({**error, "execution_count": count})
        return Outcome({"status": "ok", "execution_count": count})

    def prepare_shell(self) -> None:
        """Create the IPython shell now if needed (a failure is reported by the execute itself)."""
        try:
            self.shell()
        except Exception:
            pass

    def shell(self) -> Any:
        """The IPython shell sharing ``user_ns``, created (and IPython imported) on first use."""
        if self._shell is None:
            from engines.shell import create_shell

            self._shell = create_shell(self.user_module, self.output, self.info("execute"))
        return self._shell

    # --- startup code -------------------------------------------------------------------------

    def run_startup(self, startup: StartupCode) -> None:
        """Run *startup*'s command, then its script, in the user namespace.

        As in IPython Parallel, a failure does not stop the engine: it is logged with its traceback
        (the engine log is where the user looks; no client is attached yet) and the engine serves
        anyway; a failing command does not skip the script.  Output goes to the engine's log too.
        Startup code is interruptible like a task (SIGINT, or SIGTERM which then stops the engine);
        an interrupt ends all of it: an interrupted command skips the script.
        """
        if startup.command:
            if not self._run_startup("startup_command", "<startup_command>", lambda: startup.command):
                return
        if startup.script:
            path = os.path.abspath(os.path.expanduser(startup.script))
            self._run_startup(f"startup_script {path}", path, lambda: _read_bytes(path), file=path)

    def _run_startup(self, what: str, filename: str, source: Callable[[], str | bytes],
                     file: str | None = None) -> bool:
        """Run one part of the startup code; False if it was interrupted."""
        log.info("running %s", what)
        ns = self.user_ns
        saved_file = ns.get("__file__", _MISSING)
        if file is not None:
            ns["__file__"] = file  # as when running the file with `python`; restored afterwards
        try:
            with self.user_code():
                exec(compile(source(), filename, "exec"), ns)
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM stopping the engine: where it was matters
            log.warning("%s interrupted:\n%s", what, _user_traceback(e).rstrip())
            return False
        except BaseException as e:  # noqa: B036 - as for a task: whatever the user's code raises
            log.error("%s failed; the engine serves anyway:\n%s", what, _user_traceback(e).rstrip())
        finally:
            if file is not None:
                if saved_file is _MISSING:
                    ns.pop("__file__", None)
                else:
                    ns["__file__"] = saved_file
            for stream in (sys.stdout, sys.stderr):  # its prints belong before our next log line
                try:
                    stream.flush()
                except (OSError, ValueError, AttributeError):
                    pass
        return True

    # --- clear --------------------------------------------------------------------------------

    def clear(self) -> None:
        """Empty the user namespace (``clear_request``)."""
        if self._shell is not None:
            self._shell.reset(new_session=False)
        else:
            clear_namespace(self.user_ns)

    def install_main_module(self) -> None:
        """Make the user module ``sys.modules["__main__"]`` (what pickle looks up for ``__main__``)."""
        sys.modules["__main__"] = self.user_module


_MISSING = object()


def _read_bytes(path: str) -> bytes:
    """A source file as bytes: ``compile`` honours its encoding declaration."""
    with open(path, "rb") as f:
        return f.read()


def _user_traceback(exc: BaseException) -> str:
    """*exc*'s traceback without this module's frames (the user's code is what matters)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


__all__ = ["Executor", "Outcome", "StartupCode", "bind_to_namespace", "clear_namespace", "new_user_module"]
