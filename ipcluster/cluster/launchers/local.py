"""Launchers that start processes on this machine.

* :class:`LocalControllerLauncher` runs ``python -P -m controller ...``;
* :class:`LocalEngineSetLauncher` runs ``python -P -m engines --file CONN -n N ...``: one supervisor
  process that forks N engines.

``-P`` keeps a user's ``controller.py`` / ``engines.py`` in the working directory from shadowing our
packages.  Output (stdout and stderr) is appended to :attr:`~BaseLauncher.log_path`.
"""

from __future__ import annotations

import signal as _signal
import sys
from typing import Any

from traitlets import Bool, Integer, List, Unicode

from ipcluster.cluster.launchers.controlleropts import ControllerOptions
from ipcluster.cluster.launchers.base import BaseLauncher
from ipcluster.cluster.launchers.process import ProcessHandle, tail_file, wait_gone
from ipcluster.errors import LauncherError


class LocalProcessLauncher(BaseLauncher):
    """One local process; subclasses say which by :meth:`build_args`."""

    name = "local"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.process: ProcessHandle | None = None
        self.args: list[str] = []

    def build_args(self) -> list[str]:
        raise NotImplementedError

    def build_env(self) -> dict[str, str] | None:
        """The child's environment (``None``: this process's)."""
        return None

    # --- Popen-like interface --------------------------------------------------------------------

    async def start(self) -> None:
        if self.process is not None and self.process.running:
            raise LauncherError(f"{self} is already running (pid {self.process.pid})")
        if not self.log_path:
            raise LauncherError(f"{self}: no log_path to write the output to")
        self.args = self.build_args()
        try:
            self.process = ProcessHandle.spawn(self.args, self.log_path, env=self.build_env())
        except OSError as e:
            raise LauncherError(f"{self}: cannot start {self.args[0]!r}: {e}") from e
        self.log.debug("started %s: pid %d, output in %s", self, self.process.pid, self.log_path)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def poll(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def exited(self) -> bool:
        """Started and ended (``poll()`` alone cannot say so for a process we did not start)."""
        return self.process is not None and not self.process.running

    async def wait(self, timeout: float | None = None) -> int | None:
        if self.process is None:
            raise LauncherError(f"{self} was not started")
        return await self.process.wait(timeout)

    def signal(self, signum: int) -> None:
        if self.process is not None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill_group(_signal.SIGKILL)

    async def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate -> wait -> kill, then make sure nothing it started outlives it."""
        if self.process is None:
            return None
        import psutil

        before = self.process.group_members()
        rc = await super().stop(timeout)
        leftovers = await wait_gone(before + self.process.group_members(), timeout)
        for proc in leftovers:
            self.log.warning("killing pid %d left behind by %s", proc.pid, self)
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        await wait_gone(leftovers, timeout)
        return rc

    def output_tail(self, n: int = 20) -> str:
        return tail_file(self.log_path, n)

    def failure(self, what: str, lines: int = 20) -> LauncherError:
        rc = self.poll()
        if rc is None and self.exited:
            what += " (exit code unknown)"
        return LauncherError(what, returncode=rc, output=self.output_tail(lines))

    # --- state -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["args"] = list(self.args)
        d.update(self.process.to_dict() if self.process is not None else {"pid": None})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **kwargs: Any) -> "LocalProcessLauncher":
        keys = {"profile_dir", "cluster_id", "log_path"} | cls.state_traits()
        launcher = cls(**{k: d[k] for k in keys if k in d}, **kwargs)
        launcher.args = list(d.get("args") or [])
        if d.get("pid"):
            launcher.process = ProcessHandle.attach(int(d["pid"]), d.get("create_time"), d.get("pgid"))
        return launcher

    def __repr__(self) -> str:
        pid = f" pid={self.pid}" if self.pid else ""
        return f"<{type(self).__name__}{pid}>"


class LocalControllerLauncher(ControllerOptions, LocalProcessLauncher):
    """Start the controller as ``python -P -m controller`` on this machine."""

    kind = "controller"

    def build_args(self) -> list[str]:
        return [sys.executable, "-P", "-m", "controller", "--profile-dir", self.profile_dir,
                "--cluster-id", self.cluster_id, *self.controller_options()]



class LocalEngineSetLauncher(LocalProcessLauncher):
    """Start *n* engines under one supervisor process (``python -P -m engines``)."""

    kind = "engines"

    n = Integer(1, help="How many engines the supervisor starts.")
    connection_file = Unicode("", help="The connection file the engines read.")
    restart_engines = Bool(False, help="The supervisor starts a new engine in place of one that dies.")
    engine_args = List(Unicode(), help="Extra command-line arguments for the engine supervisor.").tag(
        config=True
    )

    def build_args(self) -> list[str]:
        if not self.connection_file:
            raise LauncherError(f"{self}: no connection file given")
        return [
            sys.executable, "-P", "-m", "engines",
            "--file", self.connection_file,
            "-n", str(self.n),
            "--log-file", self.log_path,
        ] + (["--restart-engines"] if self.restart_engines else []) + list(self.engine_args)

    def engine_pids(self) -> list[int]:
        """Pids of the engine processes (the supervisor's children)."""
        if not self.running:
            return []
        assert self.process is not None
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def signal_engines(self, signum: int) -> None:
        """Send *signum* to every engine (not to the supervisor)."""
        if self.process is None:
            return
        import psutil

        if self.running:
            try:
                procs = psutil.Process(self.process.pid).children()
            except psutil.NoSuchProcess:
                procs = self.process.group_members()
        else:  # the supervisor is gone: its orphaned engines are still in its process group
            procs = self.process.group_members()
        for proc in procs:
            try:
                proc.send_signal(signum)
            except psutil.NoSuchProcess:
                pass

    @classmethod
    def state_traits(cls) -> set[str]:
        return {"n", "connection_file"}
