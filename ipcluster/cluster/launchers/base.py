"""The interface every launcher offers: a Popen-like, asynchronous handle on what it started.

A launcher starts *one* thing — a controller, or one set of engines — somewhere (a local process,
an ssh session, a batch job) and answers the questions a :class:`~ipcluster.cluster.Cluster` asks:

=========================  ======================================================================
``await start()``          start it; return once it is launched (not once it is ready)
``poll()``                 ``None`` while it runs, else its exit code (``None`` too if unknown)
``running``                whether it still runs
``await wait(timeout)``    wait until it ended; ``TimeoutError`` after *timeout* seconds
``signal(signum)``         deliver a signal
``await stop(timeout)``    terminate, wait *timeout*, then kill; return the exit code
``output_tail(n)``         the last *n* lines of its output, for error messages
``to_dict()``              JSON-able state, so ``from_dict()`` can rebuild it in another process
=========================  ======================================================================

Launchers are traitlets ``Configurable`` so a profile's config can set their options
(``c.LocalEngineSetLauncher.engine_args = [...]``); inside, they take plain constructor arguments.
"""

from __future__ import annotations

import signal as _signal
from typing import Any, ClassVar

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from ipcluster.errors import LauncherError


class BaseLauncher(LoggingConfigurable):
    """Base class of controller and engine launchers (see the module docstring)."""

    #: ``"controller"`` or ``"engines"``.
    kind: ClassVar[str] = ""
    #: The name this class is registered under (``"local"``, ``"ssh"``, ...).
    name: ClassVar[str] = ""

    profile_dir = Unicode("", help="The profile directory of the cluster.")
    cluster_id = Unicode("", help="The cluster id.")
    log_path = Unicode("", help="Where the launched process's output goes.")

    # --- the interface ---------------------------------------------------------------------------

    async def start(self) -> None:
        raise NotImplementedError

    def poll(self) -> int | None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    async def wait(self, timeout: float | None = None) -> int | None:
        raise NotImplementedError

    def signal(self, signum: int) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """Kill it and everything it started, without waiting."""
        self.signal(_signal.SIGKILL)

    async def stop(self, timeout: float = 5.0) -> int | None:
        """Ask it to end (SIGTERM), wait up to *timeout* seconds, then kill it and wait again."""
        if not self.running:
            return self.poll()
        self.signal(_signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.log.warning("%s did not stop within %.1f s after SIGTERM; killing it", self, timeout)
        self.kill()
        try:
            return await self.wait(timeout)
        except TimeoutError:
            raise LauncherError(f"{self} survived SIGKILL for {timeout:.1f} s") from None

    def output_tail(self, n: int = 20) -> str:
        return ""

    # --- state -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; ``"launcher"`` names the registered class that can rebuild it.

        It includes every trait named by :meth:`state_traits` (lists copied).
        """
        d: dict[str, Any] = {
            "launcher": self.name,
            "profile_dir": self.profile_dir,
            "cluster_id": self.cluster_id,
            "log_path": self.log_path,
        }
        for name in self.state_traits():
            value = getattr(self, name)
            d[name] = list(value) if isinstance(value, (list, tuple)) else value
        return d

    @classmethod
    def state_traits(cls) -> set[str]:
        """Names of the non-config traits that :meth:`to_dict` records and ``from_dict`` restores."""
        return set()

    @classmethod
    def from_dict(cls, d: dict[str, Any], **kwargs: Any) -> "BaseLauncher":
        """Rebuild a launcher (attached to what is already running) from :meth:`to_dict` output."""
        raise NotImplementedError

    def failure(self, what: str, lines: int = 20) -> LauncherError:
        """A :class:`LauncherError` naming the exit code and the last lines of output."""
        return LauncherError(what, returncode=self.poll(), output=self.output_tail(lines))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
