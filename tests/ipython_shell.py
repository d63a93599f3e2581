"""A real IPython ``InteractiveShell`` in the test process, undone afterwards.

Creating a shell changes process-wide state: ``sys.modules["__main__"]``, ``sys.displayhook`` and
``sys.excepthook``, and the ``InteractiveShell`` singleton that ``get_ipython()`` returns.  The
context manager puts all of that back, so the shell does not leak into later tests.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import types
from typing import Iterator

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config


@contextlib.contextmanager
def interactive_shell() -> Iterator[InteractiveShell]:
    saved = sys.modules.get("__main__"), sys.displayhook, sys.excepthook
    c = Config()
    c.HistoryManager.enabled = False  # nothing written to ~/.ipython
    c.InteractiveShell.colors = "nocolor"
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=c, user_module=types.ModuleType("__main__"))
    try:
        yield shell
    finally:
        from ipcluster import magics

        for m in magics._ACTIVE.pop(shell, {}).values():
            if m.autopx_enabled:
                m.autopx()
        shell.atexit_operations()  # what IPython would do at exit, now: the shell is done
        atexit.unregister(shell.atexit_operations)
        InteractiveShell.clear_instance()
        main, sys.displayhook, sys.excepthook = saved
        if main is not None:
            sys.modules["__main__"] = main
