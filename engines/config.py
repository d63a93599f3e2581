"""Engine configuration: ``<profile_dir>/ipengine_config.py``, written as for IPython Parallel.

The file is run by traitlets' :class:`~traitlets.config.loader.PyFileConfigLoader` with ``c`` (or
``get_config()``) bound to a :class:`~traitlets.config.Config`, so::

    c.IPEngine.startup_command = "import numpy as np"
    c.IPEngine.startup_script = "/path/to/setup_engine.py"
    c.IPEngine.work_dir = "/scratch/me"
    c.IPEngine.log_level = "DEBUG"
    c.IPEngine.controller_timeout = 30.0
    c.IPEngine.registration_timeout = 60.0

works.  Only :class:`IPEngine`'s six traits mean anything to the engines; other sections of an
ipyparallel config (``c.Session``, ``c.IPKernelApp`` ...) are ignored, and an unknown ``IPEngine``
option is logged as a warning.  Command-line options (``--log-level``, ``--work-dir``,
``--controller-timeout``) win over the file.

This module imports traitlets (~30 ms), so :mod:`engines.__main__` imports it only when a config
file exists: an engine without one starts as fast as before.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

from traitlets import Float, Integer, TraitError, Unicode, Union, validate
from traitlets.config import Config, LoggingConfigurable
from traitlets.config.loader import PyFileConfigLoader

from ipcluster.errors import IPClusterError

from engines.controller_watch import CONTROLLER_TIMEOUT, REGISTRATION_TIMEOUT

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

log = logging.getLogger("engines.config")


class EngineConfigError(IPClusterError):
    """``ipengine_config.py`` could not be loaded: it raised, has a syntax error or a bad value.

    ``str()`` names the file (and the line, when known) and the error.
    """

    def __init__(self, path: str | os.PathLike[str], error: BaseException):
        self.path = str(path)
        self.error = error
        line = _error_line(self.path, error)
        where = f"{self.path}, line {line}" if line else self.path
        # a SyntaxError's str() repeats file and line
        detail = error.msg if isinstance(error, SyntaxError) and line else str(error)
        super().__init__(f"error in {where}: {type(error).__name__}: {detail}")


class IPEngine(LoggingConfigurable):
    """The engine settings a profile's ``ipengine_config.py`` may set (``c.IPEngine.<name>``).

    Deliberately few: what IPython Parallel users actually set on their engines.
    """

    startup_command = Unicode(
        "", help="Python code run in each engine's namespace after it registers, before it serves "
        "requests (plain Python, not IPython syntax). An error is logged and the engine serves anyway."
    ).tag(config=True)
    startup_script = Unicode(
        "", help="A Python file run like startup_command (after it), with __file__ set. A relative "
        "path is taken from the engine's working directory."
    ).tag(config=True)
    work_dir = Unicode("", help="The engines' working directory (default: where they were started).").tag(
        config=True
    )
    log_level = Union([Unicode(), Integer()], default_value="INFO",
                      help="The engines' log level: a name such as 'DEBUG' or a number.").tag(config=True)
    registration_timeout = Float(
        REGISTRATION_TIMEOUT, help="Seconds a starting engine waits for the controller to answer its "
        "registration before it exits (exit code 1) with a message naming the address it tried."
    ).tag(config=True)
    controller_timeout = Float(
        CONTROLLER_TIMEOUT, help="Seconds an engine waits for a lost connection to its controller to come "
        "back before it exits (exit code 4), so engines do not outlive a dead controller. 0 disables this."
    ).tag(config=True)

    @validate("log_level")
    def _valid_log_level(self, proposal: Any) -> str:
        return normalize_log_level(proposal["value"])


def normalize_log_level(value: str | int) -> str:
    """*value* as one of :data:`LOG_LEVELS` (``"warn"`` and ``30`` give ``"WARNING"``)."""
    name = logging.getLevelName(value) if isinstance(value, int) else str(value).upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LOG_LEVELS:
        raise TraitError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return name


def load_engine_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> IPEngine:
    """:class:`IPEngine` configured by the config file *path* (if it exists), *overrides* winning.

    *overrides* maps trait names to values from the command line.  Raises
    :class:`EngineConfigError` if the file raises, does not compile or sets a bad value.
    """
    path = Path(os.path.abspath(path))  # as PyFileConfigLoader names it in tracebacks
    config = Config()
    if path.is_file():
        loader = PyFileConfigLoader(path.name, path=str(path.parent), log=log)
        try:
            config = loader.load_config()
        except (Exception, SystemExit) as e:  # what the user's code raises, SyntaxError and exit() included
            raise EngineConfigError(path, e) from e
    if overrides:
        config.merge(Config({"IPEngine": dict(overrides)}))
    try:
        return IPEngine(config=config, log=log)
    except TraitError as e:  # a value of the wrong type or an unknown log level
        raise EngineConfigError(path, e) from e


def _error_line(path: str, error: BaseException) -> int | None:
    """The line of *path* that *error* comes from, if it does."""
    if isinstance(error, SyntaxError) and error.filename == path:
        return error.lineno
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == path]
    return lines[-1] if lines else None


__all__ = ["EngineConfigError", "IPEngine", "load_engine_config", "normalize_log_level"]
