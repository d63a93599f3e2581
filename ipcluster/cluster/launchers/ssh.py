"""Launchers that start the controller or engines on other hosts over OpenSSH.

Configured as in IPython Parallel, e.g. in a profile's ``ipcluster_config.py``::

    c.Cluster.engine_launcher_class = "ssh"
    c.SSHEngineSetLauncher.engines = {"user@node1:2222": 2, "node2": 4,
                                      "node3": {"n": 2, "engine_args": ["--log-level", "DEBUG"]}}
    c.SSHLauncher.remote_python = "/opt/venv/bin/python"
    c.SSHLauncher.ssh_args = ["-i", "~/.ssh/cluster_key"]
    c.Cluster.controller_ip = "0.0.0.0"            # listen where the hosts can reach it
    c.Cluster.controller_location = "10.0.0.1"     # and tell them this address

How it works:

* the real ``ssh`` client runs each remote command, so ``~/.ssh/config`` (aliases, ports, keys,
  jump hosts, ControlMaster) applies; ``ssh_args`` come first and so win over it;
* the connection file (it holds the cluster's HMAC key) is written on the remote host from the ssh
  session's standard input into a file created under ``umask 077`` — never on a command line, never
  in a log; it is deleted when the engines stop;
* the remote processes' output is streamed back over the ssh session into the local log file
  (``output_tail`` and error messages use it);
* a remote script reports its pid (a process group: see :mod:`.sshcmd`) before it starts Python, so
  ``signal`` and ``stop`` reach the remote processes with ``kill`` over a second ssh session:
  SIGTERM to the group, then SIGKILL, and only then the local ssh client;
* before engines start on a host that is not this machine, the launcher checks that the controller
  does not listen on or advertise a loopback address, which that host could not reach.

The controller launcher is in :mod:`.sshcontroller`, the engine launchers in :mod:`.sshengines`
(an engine set holds one launcher per host).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal as _signal
import subprocess
import time
from pathlib import Path
from typing import Any

from traitlets import Float, List, Unicode
from traitlets.config import LoggingConfigurable

from ipcluster.cluster.launchers import sshcmd
from ipcluster.cluster.launchers.base import BaseLauncher
from ipcluster.cluster.launchers.process import ProcessHandle, tail_file
from ipcluster.errors import LauncherError

#: Seconds the options below allow, by default, for an ssh connection to be set up.
CONNECT_TIMEOUT = 10.0
#: Polling interval bounds while waiting for a remote script to report (seconds).
_POLL_MIN, _POLL_MAX = 0.005, 0.05

#: The traits of :class:`SSHOptions`, which an engine set hands to its host launchers.
SSH_OPTION_NAMES = ("ssh_cmd", "ssh_args", "remote_python", "remote_profile_dir", "connect_timeout",
                    "start_timeout")


class SSHOptions(LoggingConfigurable):
    """How to reach remote hosts and what to run there (shared by every SSH launcher)."""

    ssh_cmd = List(Unicode(), default_value=["ssh"], help="The ssh client command.").tag(config=True)
    ssh_args = List(Unicode(), help="Extra arguments for ssh, before the built-in ones (so they win), "
                    "e.g. ['-i', '/path/key', '-o', 'StrictHostKeyChecking=accept-new'].").tag(config=True)
    remote_python = Unicode("python3", help="The Python on the remote hosts that has ipcluster installed "
                            "(an absolute path is safest: remote shells have their own PATH).").tag(config=True)
    remote_profile_dir = Unicode("", help="The profile directory on the remote hosts (created if missing; "
                                 "default: the same path as here). The remote connection file and the "
                                 "engines' ipengine_config.py are looked up there.").tag(config=True)
    connect_timeout = Float(CONNECT_TIMEOUT, help="Seconds ssh may take to connect.").tag(config=True)
    start_timeout = Float(30.0, help="Seconds a remote start may take (connecting, checking the remote "
                          "Python) before it counts as failed.").tag(config=True)


class SSHLauncher(SSHOptions, BaseLauncher):
    """One remote process, started by ``ssh host 'script'``; subclasses provide the script."""

    name = "ssh"

    hostname = Unicode("", help="Where to run: [user@]host[:port], or a ~/.ssh/config alias.")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.process: ProcessHandle | None = None  # the local ssh client
        self.remote_pid: int | None = None  # also the remote process group
        self.remote_files: list[str] = []  # removed on stop
        self.token = ""

    # --- what subclasses provide -----------------------------------------------------------------

    def remote_script(self) -> str:
        raise NotImplementedError

    def stdin_data(self) -> bytes | None:
        """What to write to the ssh session's standard input (then closed)."""
        return None

    @property
    def what(self) -> str:
        """What this starts, for messages (``"engines"``, ``"the controller"``)."""
        return "process"

    # --- helpers ---------------------------------------------------------------------------------

    @property
    def target(self) -> sshcmd.SSHTarget:
        try:
            return sshcmd.parse_target(self.hostname)
        except ValueError as e:
            raise LauncherError(str(e)) from None

    @property
    def remote_dir(self) -> str:
        return self.remote_profile_dir or self.profile_dir

    def _remote_path(self, kind: str) -> str:
        cid = f"{self.cluster_id}-" if self.cluster_id else ""
        return f"{self.remote_dir}/security/ssh-{cid}{self.token}-{kind}.json"

    def ssh_argv(self, script: str | None) -> list[str]:
        remote = sshcmd.sh_wrap(script) if script is not None else None
        return sshcmd.ssh_command(self.target, self.ssh_cmd, self.ssh_args, self.connect_timeout, remote)

    async def run_ssh(self, script: str, timeout: float | None = None,
                      input: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run a short remote *script*; return ``(exit code, stdout, stderr)``.

        Raises :class:`LauncherError` naming the host after *timeout* seconds (default: the
        connection timeout plus 10 s).
        """
        limit = timeout if timeout is not None else self.connect_timeout + 10
        proc = await asyncio.create_subprocess_exec(
            *self.ssh_argv(script), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), limit)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise LauncherError(f"ssh to {self.hostname} did not finish within {limit:.0f} s") from None
        assert proc.returncode is not None
        return proc.returncode, out, err

    def run_ssh_sync(self, script: str, timeout: float | None = None) -> int:
        """Blocking :meth:`run_ssh` without input (for the synchronous ``signal``)."""
        limit = timeout if timeout is not None else self.connect_timeout + 10
        try:
            done = subprocess.run(self.ssh_argv(script), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=limit, start_new_session=True)
        except subprocess.TimeoutExpired:
            self.log.warning("ssh to %s did not finish within %.0f s", self.hostname, limit)
            return 255
        if done.returncode:
            self.log.warning("ssh to %s: %s", self.hostname, done.stderr.decode(errors="replace").strip())
        return done.returncode

    async def resolved_host(self) -> str:
        """The host name ssh really connects to (``HostName`` from ``~/.ssh/config`` applied)."""
        argv = sshcmd.resolve_command(self.target, self.ssh_cmd, self.ssh_args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 10)
        except FileNotFoundError:
            raise LauncherError(f"ssh client {self.ssh_cmd[0]!r} not found (c.SSHLauncher.ssh_cmd)") from None
        except TimeoutError:
            raise LauncherError(f"`{' '.join(argv)}` did not answer within 10 s") from None
        if proc.returncode:
            raise LauncherError(f"ssh cannot use host {self.hostname!r}: {err.decode(errors='replace').strip()}")
        host, _ = sshcmd.parse_resolved(out.decode(errors="replace"))
        return host or self.target.host

    # --- Popen-like interface --------------------------------------------------------------------

    async def start(self) -> None:
        if self.process is not None and self.process.running:
            raise LauncherError(f"{self} is already running")
        if not self.log_path:
            raise LauncherError(f"{self}: no log_path to write the output to")
        self.target  # noqa: B018 - a malformed host spec fails here, before anything starts
        self.token = secrets.token_hex(6)
        script = self.remote_script()
        argv = self.ssh_argv(script)
        Path(self.log_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        data = self.stdin_data()
        # 0600 from the start: the output may hold task data
        with open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            try:
                popen = subprocess.Popen(argv, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         close_fds=True)
            except OSError as e:
                raise LauncherError(f"{self}: cannot run {argv[0]!r}: {e}") from e
        self.process = ProcessHandle(popen.pid, popen=popen, pgid=popen.pid)
        if data is not None:
            assert popen.stdin is not None
            try:
                popen.stdin.write(data)
            except BrokenPipeError:
                pass  # ssh already failed; its exit is reported below
            finally:
                try:
                    popen.stdin.close()
                except BrokenPipeError:
                    pass
        self.log.debug("started %s: ssh pid %d, output in %s", self, popen.pid, self.log_path)
        try:
            await self._wait_started(offset)
        except BaseException:
            await self._abandon()
            raise

    async def _wait_started(self, offset: int) -> None:
        """Wait until the remote script reports its pid; a clear error when it fails instead."""
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        interval = _POLL_MIN
        while True:
            pid = sshcmd.started_pid(_read_from(self.log_path, offset))
            if pid is not None:
                self.remote_pid = pid
                return
            if not self.process.running:
                rc = self.process.poll()
                output = _read_from(self.log_path, offset).strip()[-4000:]
                if rc == 255:
                    why = f"ssh to {self.hostname} failed"
                    if "ssh: connect to host" in output or "Could not resolve hostname" in output:
                        self.remote_files = []  # never connected: nothing to clean up there
                else:
                    why = f"cannot start {self.what} on {self.hostname}"
                raise LauncherError(why, returncode=rc, output=output)
            if time.monotonic() > deadline:
                raise LauncherError(
                    f"{self.what} on {self.hostname} did not start within {self.start_timeout:g} s "
                    "(c.SSHLauncher.start_timeout)", output=_read_from(self.log_path, offset).strip()[-4000:])
            await asyncio.sleep(interval)  # polling interval of a deadline-bounded wait
            interval = min(interval * 2, _POLL_MAX)

    async def _abandon(self) -> None:
        """After a failed start: end the local ssh and remove what reached the remote host."""
        if self.process is not None and self.process.running:
            self.process.kill_group(_signal.SIGKILL)
            try:
                await self.process.wait(5)
            except TimeoutError:
                pass
        await self._cleanup_remote()

    @property
    def hosts(self) -> list[str]:
        """Where this runs (``ipcluster list`` shows it)."""
        return [self.hostname]

    @property
    def ssh_pid(self) -> int | None:
        """The local ssh client's pid."""
        return self.process.pid if self.process is not None else None

    def poll(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    async def wait(self, timeout: float | None = None) -> int | None:
        if self.process is None:
            raise LauncherError(f"{self} was not started")
        return await self.process.wait(timeout)

    def signal(self, signum: int) -> None:
        """Send *signum* to the remote process group (over a separate ssh session)."""
        if self.running and self.remote_pid:
            self.run_ssh_sync(sshcmd.signal_script(self.remote_pid, _signal.Signals(signum).name[3:]))

    def kill(self) -> None:
        self.signal(_signal.SIGKILL)
        if self.process is not None:
            self.process.kill_group(_signal.SIGKILL)

    async def _remote_signal(self, signame: str) -> bool:
        """Signal the remote process group; False when the host could not be reached."""
        if not self.remote_pid:
            return False
        try:
            rc, _, err = await self.run_ssh(sshcmd.signal_script(self.remote_pid, signame))
        except LauncherError as e:
            self.log.warning("%s: %s", self, e)
            return False
        if rc:
            self.log.warning("%s: cannot signal the remote processes: %s", self, err.decode(errors="replace").strip())
        return rc == 0

    async def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the remote processes, wait, SIGKILL them, wait; then end ssh and clean up."""
        if self.process is None:
            return None
        try:
            for signame in ("TERM", "KILL"):
                if not self.running:
                    break
                if await self._remote_signal(signame):
                    try:
                        await self.wait(timeout)
                    except TimeoutError:
                        if signame == "TERM":
                            self.log.warning("%s still running %.1f s after SIGTERM; killing it", self, timeout)
            if self.running:  # the host is unreachable, or the remote processes ignore even SIGKILL
                self.log.warning("%s: ending the ssh session; remote processes may be left on %s",
                                 self, self.hostname)
                self.process.kill_group(_signal.SIGKILL)
                try:
                    await self.process.wait(timeout)
                except TimeoutError:
                    raise LauncherError(f"{self}: the ssh client survived SIGKILL for {timeout:.1f} s") from None
            return self.poll()
        finally:
            await self._cleanup_remote()

    async def _cleanup_remote(self) -> None:
        if not self.remote_files:
            return
        try:
            rc, _, err = await self.run_ssh(sshcmd.remove_files_script(self.remote_files))
        except LauncherError as e:
            self.log.warning("%s: cannot remove %s: %s", self, ", ".join(self.remote_files), e)
            return
        if rc:
            self.log.warning("%s: cannot remove %s on %s: %s", self, ", ".join(self.remote_files), self.hostname,
                             err.decode(errors="replace").strip())
        else:
            self.remote_files = []

    def output_tail(self, n: int = 20) -> str:
        return tail_file(self.log_path, n)

    # --- state -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update({name: getattr(self, name) for name in SSH_OPTION_NAMES})
        d.update(hostname=self.hostname, remote_pid=self.remote_pid, remote_files=list(self.remote_files),
                 token=self.token, ssh_process=self.process.to_dict() if self.process is not None else None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **kwargs: Any) -> "SSHLauncher":
        names = {"profile_dir", "cluster_id", "log_path", "hostname", *SSH_OPTION_NAMES, *cls.state_traits()}
        launcher = cls(**{k: d[k] for k in names if d.get(k) is not None}, **kwargs)
        launcher.remote_pid = d.get("remote_pid")
        launcher.remote_files = list(d.get("remote_files") or [])
        launcher.token = d.get("token") or ""
        proc = d.get("ssh_process")
        if proc and proc.get("pid"):
            launcher.process = ProcessHandle.attach(int(proc["pid"]), proc.get("create_time"), proc.get("pgid"))
        return launcher

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.hostname}>"


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(256 * 1024).decode("utf-8", "replace")
    except OSError:
        return ""


__all__ = ["SSHLauncher", "SSHOptions", "SSH_OPTION_NAMES"]
