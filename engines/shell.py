"""IPython on the engine: an ``InteractiveShell`` whose display goes to the requesting client.

Imported on the first ``execute_request`` only (IPython is the slowest import an engine has).  The
shell shares the engine's user namespace, so ``%magics``, ``display()`` and rich reprs work in
``execute`` and see what ``apply``/``push`` put there.

What differs from a terminal IPython:

* the displayhook sends ``execute_result`` and the display publisher sends ``display_data``;
* a traceback is sent as an ``error`` output message (plain text: ``colors = "NoColor"``) and kept
  as the reply's error content;
* history lives in memory (``HistoryManager.enabled = False``): nothing is written to ~/.ipython;
* the engine's own SIGINT/SIGTERM handlers and ``sys.excepthook`` are kept.
"""

from __future__ import annotations

import signal
import sys
import types
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Any as AnyTrait
from traitlets import Dict
from traitlets.config import Config

from engines.error_content import error_content
from engines.output import OutputRouter


class EngineDisplayHook(DisplayHook):
    """Sends the value of a cell's last expression as ``execute_result``."""

    def start_displayhook(self) -> None:
        self._data: dict[str, Any] = {}
        self._md: dict[str, Any] = {}

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
        self._data = format_dict
        self._md = md_dict or {}

    def finish_displayhook(self) -> None:
        if self._data:
            assert self.shell is not None
            self.shell.engine_output.publish("execute_result", {
                "execution_count": self.prompt_count, "data": self._data, "metadata": self._md,
            })
        self._data = {}


class EngineDisplayPublisher(DisplayPublisher):
    """Sends ``display()`` calls as ``display_data``."""

    def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None = None, source: Any = None, *,
                transient: dict[str, Any] | None = None, update: bool = False, **kwargs: Any) -> None:
        content: dict[str, Any] = {"data": data, "metadata": metadata or {}}
        if transient:
            content["transient"] = transient
        self.shell.engine_output.publish("display_data", content)

    def clear_output(self, wait: bool = False) -> None:
        # no protocol message for it; a front end only shows what it was sent
        pass


class EngineShell(InteractiveShell):
    """The engine's shell (see the module docstring)."""

    displayhook_class = EngineDisplayHook
    display_pub_class = EngineDisplayPublisher

    engine_output = AnyTrait(None, help="OutputRouter of the engine").tag(config=False)
    engine_info = Dict(help="engine_info of error content").tag(config=False)

    #: error content of the last failed cell, set by ``_showtraceback``
    last_error: dict[str, Any] | None = None

    def _showtraceback(self, etype: type, evalue: BaseException, stb: Any) -> None:
        text = self.InteractiveTB.stb2text(stb) if isinstance(stb, list) else str(stb)
        content = error_content(evalue, self.engine_info, traceback_lines=text.splitlines())
        self.last_error = content
        self.engine_output.publish("error", content)

    def show_usage_error(self, exc: BaseException) -> None:
        self._showtraceback(type(exc), exc, [f"UsageError: {exc}"])

    def enable_gui(self, gui: Any = None) -> None:
        # an engine has no event loop to integrate with; %matplotlib inline does not call this
        if gui not in (None, "inline"):
            raise UsageError(f"GUI event loops ({gui!r}) are not supported on an engine")


def _config() -> Config:
    c = Config()
    c.HistoryManager.enabled = False
    c.InteractiveShell.colors = "NoColor"
    if "warn_venv" in InteractiveShell.class_trait_names():
        c.InteractiveShell.warn_venv = False
    return c


def create_shell(user_module: types.ModuleType, output: OutputRouter, info: dict[str, Any]) -> EngineShell:
    """The engine's shell singleton, running in *user_module*'s namespace."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    excepthook = sys.excepthook
    shell = EngineShell.instance(config=_config(), user_module=user_module, engine_output=output,
                                 engine_info=info)
    # creating a shell must not change how the engine handles signals and crashes
    for s, h in handlers.items():
        if h is not None and signal.getsignal(s) is not h:
            signal.signal(s, h)
    sys.excepthook = excepthook
    return shell


def run_cell(shell: EngineShell, code: str, silent: bool) -> tuple[int, dict[str, Any] | None]:
    """Run *code*; return ``(execution_count, error content or None)``."""
    count = shell.execution_count
    shell.last_error = None
    result = shell.run_cell(code, silent=silent, store_history=not silent)
    shell.exit_now = False  # exit()/quit() do not stop an engine; shutdown_request does
    exc = result.error_before_exec or result.error_in_exec
    if exc is None:
        return count, None
    if shell.last_error is None:  # failed without showing a traceback
        shell.last_error = error_content(exc, shell.engine_info)
        shell.engine_output.publish("error", shell.last_error)
    return count, shell.last_error
