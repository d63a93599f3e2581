"""Parallel magics for IPython and Jupyter: ``%px``, ``%%px``, ``%autopx``, ``%pxresult``, ``%pxconfig``.

They appear when a :class:`~ipcluster.Client` is created inside IPython, with ``%load_ext
ipcluster``, or with ``rc.activate()`` / ``view.activate(suffix)``.  This module imports IPython
only inside its functions: ``import ipcluster`` never loads IPython, and a Client made outside
IPython never does either.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipcluster.magics.parallel import ParallelMagics

# shell -> {suffix: its magics}
_ACTIVE: "weakref.WeakKeyDictionary[Any, dict[str, ParallelMagics]]" = weakref.WeakKeyDictionary()


def _shell() -> Any:
    from IPython import get_ipython

    return get_ipython()


def magics_for(shell: Any, suffix: str = "") -> "ParallelMagics | None":
    """The magics registered under *suffix* in *shell*, if any."""
    return _ACTIVE.get(shell, {}).get(suffix)


def _install(shell: Any, suffix: str, view: Any, explicit: bool) -> "ParallelMagics":
    from ipcluster.magics.parallel import ParallelMagics

    if not isinstance(suffix, str) or (suffix and not suffix.replace("_", "a").isalnum()):
        raise ValueError(f"suffix must be letters, digits and '_' (it becomes part of %px<suffix>), "
                         f"not {suffix!r}")
    per_shell = _ACTIVE.setdefault(shell, {})
    magics = per_shell.get(suffix)
    if magics is None:
        magics = per_shell[suffix] = ParallelMagics(shell, suffix)
        magics.register()
    if view is not None:
        magics.view = view
        magics.explicit = magics.explicit or explicit
    return magics


def activate(view: Any, suffix: str = "") -> "ParallelMagics":
    """Make *view* the one ``%px<suffix>`` and its siblings run on, in the running IPython.

    Raises ``RuntimeError`` outside IPython.
    """
    shell = _shell()
    if shell is None:
        raise RuntimeError("the parallel magics (%px ...) need IPython: activate() works in an IPython "
                           "terminal or a Jupyter notebook, not in a plain Python process")
    return _install(shell, suffix, view, explicit=True)


def auto_activate(client: Any) -> None:
    """Called when a Client is created: inside IPython, give ``%px`` a view on all its engines,
    unless a view was activated explicitly whose client is still open."""
    shell = _shell()
    if shell is None:
        return
    current = magics_for(shell)
    if current is not None and current.explicit and current.view is not None \
            and not getattr(current.view.client, "_closed", False):
        return
    _install(shell, "", client.direct_view("all"), explicit=False)


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext ipcluster``: register the magics (they run on a Client's view once one exists)."""
    _install(ip, "", None, explicit=False)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext ipcluster``: leave %autopx mode; the magics stay registered."""
    for magics in _ACTIVE.get(ip, {}).values():
        if magics.autopx_enabled:
            magics.autopx()


__all__ = ["activate", "auto_activate", "load_ipython_extension", "unload_ipython_extension", "magics_for"]
