"""Engines on other hosts over ssh: one supervisor per host (see :mod:`.ssh`).

:class:`SSHEngineSetLauncher` holds one :class:`SSHEngineLauncher` per entry of its ``engines``
setting, starts them together and answers for all of them.
"""

from __future__ import annotations

import asyncio
import signal as _signal
import time
from pathlib import Path
from typing import Any, cast

from traitlets import Bool, Dict, Integer, List, Unicode

from ipcluster.cluster.launchers import sshcmd
from ipcluster.cluster.launchers.base import BaseLauncher
from ipcluster.cluster.launchers.ssh import SSH_OPTION_NAMES, SSHLauncher, SSHOptions
from ipcluster.errors import LauncherError


class SSHEngineLauncher(SSHLauncher):
    """*n* engines under one supervisor on one remote host."""

    kind = "engines"

    n = Integer(1, help="How many engines the supervisor on this host starts.")
    connection_file = Unicode("", help="The local connection file, copied to the host.")
    engine_args = List(Unicode(), help="Extra command-line arguments for the engine supervisor.").tag(config=True)

    @property
    def what(self) -> str:
        return "engines"

    def remote_script(self) -> str:
        remote_conn = self._remote_path("engines")
        self.remote_files = [remote_conn]
        return sshcmd.engine_script(self.remote_python, self.remote_dir, remote_conn, self.n, self.engine_args)

    def stdin_data(self) -> bytes:
        try:
            return Path(self.connection_file).read_bytes()
        except OSError as e:
            raise LauncherError(f"cannot read the connection file {self.connection_file}: {e}") from None

    def signal_engines(self, signum: int) -> None:
        """Send *signum* to the engines on this host (not to their supervisor)."""
        if self.running and self.remote_pid:
            self.run_ssh_sync(sshcmd.children_signal_script(self.remote_pid, _signal.Signals(signum).name[3:]))

    def failure(self, what: str, lines: int = 20) -> LauncherError:
        return LauncherError(f"{what} (engines on {self.hostname})", returncode=self.poll(),
                             output=self.output_tail(lines))

    @classmethod
    def state_traits(cls) -> set[str]:
        return {"n", "connection_file", "engine_args"}


class SSHEngineSetLauncher(SSHOptions, BaseLauncher):
    """Engines on several hosts: one :class:`SSHEngineLauncher` per entry of :attr:`engines`."""

    kind = "engines"
    name = "ssh"

    engines = Dict(help="Hosts and how many engines each runs: {'[user@]host[:port]': n} or "
                   "{'host': {'n': n, 'engine_args': [...], 'remote_python': ...}}.").tag(config=True)
    engine_args = List(Unicode(), help="Extra command-line arguments for every host's engine supervisor.").tag(
        config=True)
    n = Integer(0, help="Total engines (set from `engines` when they start).")
    connection_file = Unicode("", help="The local connection file, copied to each host.")
    restart_engines = Bool(False, help="Each host's supervisor starts a new engine in place of one that dies.")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.launchers: dict[str, SSHEngineLauncher] = {}

    # --- configuration ---------------------------------------------------------------------------

    def host_settings(self) -> dict[str, dict[str, Any]]:
        """Each host's launcher options, from :attr:`engines` (validated, with clear errors)."""
        if not self.engines:
            raise LauncherError("no SSH hosts to start engines on: set c.SSHEngineSetLauncher.engines, "
                                "e.g. {'user@host:22': 2}")
        hosts: dict[str, dict[str, Any]] = {}
        for spec, value in self.engines.items():
            try:
                sshcmd.parse_target(str(spec))
            except ValueError as e:
                raise LauncherError(f"c.SSHEngineSetLauncher.engines: {e}") from None
            opts: dict[str, Any]
            if isinstance(value, bool) or not isinstance(value, (int, dict)):
                raise LauncherError(f"c.SSHEngineSetLauncher.engines[{spec!r}] must be a number of engines "
                                    f"or a dict with 'n', not {value!r}")
            opts = dict(value) if isinstance(value, dict) else {"n": value}
            unknown = set(opts) - {"n", "engine_args", *SSH_OPTION_NAMES}
            if unknown:
                raise LauncherError(f"c.SSHEngineSetLauncher.engines[{spec!r}]: unknown key(s) {sorted(unknown)}")
            n = opts.get("n", 1)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise LauncherError(f"c.SSHEngineSetLauncher.engines[{spec!r}]: n must be at least 1, not {n!r}")
            hosts[str(spec)] = opts
        return hosts

    def _options_for(self, opts: dict[str, Any]) -> dict[str, Any]:
        """SSH options for one host: those configured for this set, then the host's own."""
        mine = self.config.get(type(self).__name__, {})
        out = {name: getattr(self, name) for name in SSH_OPTION_NAMES if name in mine}
        out.update({k: v for k, v in opts.items() if k in SSH_OPTION_NAMES})
        out["engine_args"] = [*(["--restart-engines"] if self.restart_engines else []), *self.engine_args,
                              *opts.get("engine_args", [])]
        out["n"] = opts.get("n", 1)
        return out

    # --- Popen-like interface --------------------------------------------------------------------

    async def start(self) -> None:
        if self.running:
            raise LauncherError(f"{self} is already running")
        hosts = self.host_settings()
        if not self.connection_file:
            raise LauncherError(f"{self}: no connection file given")
        self.launchers = {}
        for i, (spec, opts) in enumerate(hosts.items()):
            self.launchers[spec] = SSHEngineLauncher(
                parent=self, profile_dir=self.profile_dir, cluster_id=self.cluster_id,
                log_path=_host_log_path(self.log_path, i, spec), connection_file=self.connection_file,
                hostname=spec, **self._options_for(opts))
        self.n = sum(launcher.n for launcher in self.launchers.values())
        await self._wait_for_controller()
        await self._check_reachable()
        results = await asyncio.gather(*(launcher.start() for launcher in self.launchers.values()),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            if len(errors) == 1:
                raise errors[0]
            raise LauncherError("engines failed to start on several hosts:\n" + "\n".join(str(e) for e in errors))

    async def _wait_for_controller(self) -> None:
        """Wait for the controller's connection file (its content goes to the hosts)."""
        from ipcluster.cluster import readiness

        cluster = self.parent
        timeout = float(getattr(cluster, "engine_timeout", 60.0))
        controller = getattr(cluster, "controller", None)
        wait = readiness.wait_for_connection_file(Path(self.connection_file), None, time.monotonic() + timeout)
        watched = [controller] if isinstance(controller, BaseLauncher) and controller.running else []
        try:
            await readiness.watched(wait, watched, lambda _: "the controller exited before the SSH engines started")
        except TimeoutError:
            raise LauncherError(f"no connection file {self.connection_file} after {timeout:g} s: "
                                "is the controller running?") from None

    async def _check_reachable(self) -> None:
        """Refuse to start engines on other hosts when the controller only listens on loopback."""
        from ipcluster.protocol.connection import read_connection_file

        location = read_connection_file(self.connection_file).location
        bind_ip = getattr(self.parent, "controller_ip", "")
        loopback = [a for a in (location, bind_ip) if a and sshcmd.is_loopback(a)]
        if not loopback:
            return
        for spec, launcher in self.launchers.items():
            host = await launcher.resolved_host()
            if sshcmd.is_this_host(host):
                continue
            what = f"listens on {bind_ip}" if bind_ip in loopback else f"advertises {location}"
            raise LauncherError(
                f"engines on {spec} cannot reach the controller: it {what}, a loopback address of this "
                f"machine. Make it listen on an address {spec} can reach and advertise that address: "
                f"Cluster(controller_ip='0.0.0.0', controller_location='<this host's address>'), "
                f"c.Cluster.controller_ip / c.Cluster.controller_location in ipcluster_config.py, or "
                f"`ipcluster start --ip 0.0.0.0 --location <address>`. Consider enable_curve=True (--curve) "
                f"to encrypt the traffic.")

    @property
    def hosts(self) -> list[str]:
        """The hosts engines were started on (``ipcluster list`` shows them)."""
        return list(self.launchers)

    def poll(self) -> int | None:
        """``None`` while engines run on any host; then the first non-zero exit code (or 0)."""
        codes = [launcher.poll() for launcher in self.launchers.values()]
        if any(launcher.running for launcher in self.launchers.values()):
            return None
        return next((c for c in codes if c), codes[0] if codes else None)

    @property
    def running(self) -> bool:
        return any(launcher.running for launcher in self.launchers.values())

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the engines on every host have ended."""
        if not self.launchers:
            raise LauncherError(f"{self} was not started")
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(launcher.wait() for launcher in self.launchers.values()))
        return self.poll()

    def signal(self, signum: int) -> None:
        for launcher in self.launchers.values():
            launcher.signal(signum)

    def signal_engines(self, signum: int) -> None:
        for launcher in self.launchers.values():
            launcher.signal_engines(signum)

    def kill(self) -> None:
        for launcher in self.launchers.values():
            launcher.kill()

    async def stop(self, timeout: float = 5.0) -> int | None:
        results = await asyncio.gather(*(launcher.stop(timeout) for launcher in self.launchers.values()),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return self.poll()

    def output_tail(self, n: int = 20) -> str:
        parts = []
        for spec, launcher in self.launchers.items():
            tail = launcher.output_tail(n)
            if tail:
                parts.append(f"[{spec}]\n{tail}")
        return "\n".join(parts)

    def failure(self, what: str, lines: int = 20) -> LauncherError:
        ended = [spec for spec, launcher in self.launchers.items() if not launcher.running]
        where = f" (ended on {', '.join(ended)})" if ended else ""
        return LauncherError(what + where, returncode=self.poll(), output=self.output_tail(lines))

    # --- state -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(n=self.n, connection_file=self.connection_file,
                 hosts={spec: launcher.to_dict() for spec, launcher in self.launchers.items()})
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **kwargs: Any) -> "SSHEngineSetLauncher":
        launcher = cls(**{k: d[k] for k in ("profile_dir", "cluster_id", "log_path", "n", "connection_file")
                          if d.get(k) is not None}, **kwargs)
        for spec, hd in (d.get("hosts") or {}).items():
            launcher.launchers[spec] = cast(SSHEngineLauncher, SSHEngineLauncher.from_dict(hd, parent=launcher))
        return launcher

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {', '.join(self.launchers) or 'not started'}>"


def _host_log_path(base: str, index: int, spec: str) -> str:
    """Each host's log next to the set's: ``<base>-<index>-<host>.log``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
    stem = base[:-4] if base.endswith(".log") else base
    return f"{stem}-{index}-{safe}.log"


__all__ = ["SSHEngineLauncher", "SSHEngineSetLauncher"]
