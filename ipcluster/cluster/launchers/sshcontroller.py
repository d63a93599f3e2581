"""The controller on another host, started over ssh (see :mod:`.ssh`).

Its connection file is written there and copied back here over the ssh session's standard output
into a 0600 file, so local engines and clients (and ``ipcluster stop``) find it where they expect.
A controller on another host that would listen on or advertise a loopback address is refused with
a message saying what to set.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from traitlets import Unicode

from ipcluster.cluster.launchers.controlleropts import ControllerOptions
from ipcluster.cluster.launchers import sshcmd
from ipcluster.cluster.launchers.ssh import SSHLauncher
from ipcluster.errors import LauncherError


class SSHControllerLauncher(ControllerOptions, SSHLauncher):
    """The controller on a remote host; its connection file is copied back here over ssh."""

    kind = "controller"

    controller_hostname = Unicode("", help="Where the controller runs: [user@]host[:port].").tag(config=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if not self.hostname:
            self.hostname = self.controller_hostname

    @property
    def what(self) -> str:
        return "the controller"

    @property
    def local_connection_file(self) -> Path:
        from ipcluster.protocol.connection import connection_file_path

        return connection_file_path(self.profile_dir, self.cluster_id)

    def remote_script(self) -> str:
        remote_conn = self._remote_path("controller")
        self.remote_files = [remote_conn]
        return sshcmd.controller_script(self.remote_python, self.remote_dir, remote_conn,
                                        ["--cluster-id", self.cluster_id, *self.controller_options()])

    async def start(self) -> None:
        if not self.hostname:
            raise LauncherError("no host for the controller: set c.SSHControllerLauncher.controller_hostname")
        host = await self.resolved_host()
        if not sshcmd.is_this_host(host) and sshcmd.is_loopback(self.location or self.ip):
            raise LauncherError(
                f"the controller on {self.hostname} would listen on and advertise {self.location or self.ip}, "
                f"a loopback address that engines and clients elsewhere cannot reach; set "
                f"c.Cluster.controller_ip (e.g. '0.0.0.0') and c.Cluster.controller_location (an address of "
                f"{self.hostname} the others can reach), or ipcluster start --ip ... --location ...")
        await super().start()
        try:
            await self._fetch_connection_file()
        except BaseException:
            await self.stop()
            raise

    async def _fetch_connection_file(self) -> None:
        """Copy the remote connection file here (over the ssh session's stdout, into a 0600 file)."""
        from ipcluster.protocol.connection import ConnectionInfo, write_connection_file

        assert self.remote_files
        fetch = asyncio.ensure_future(self.run_ssh(sshcmd.fetch_file_script(self.remote_files[0], self.start_timeout),
                                                   timeout=self.start_timeout + self.connect_timeout + 5))
        exited = asyncio.ensure_future(self.wait())
        try:
            done, _ = await asyncio.wait({fetch, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if fetch not in done:
            fetch.cancel()
            raise self.failure(f"the controller on {self.hostname} exited before writing its connection file")
        rc, out, err = fetch.result()
        if rc:
            raise LauncherError(f"cannot fetch the controller's connection file from {self.hostname}: "
                                f"{err.decode(errors='replace').strip()}", returncode=rc, output=self.output_tail())
        try:
            info = ConnectionInfo.from_dict(json.loads(out), source=f"connection file on {self.hostname}")
        except ValueError as e:
            raise LauncherError(f"bad connection file from {self.hostname}: {e}") from None
        write_connection_file(self.local_connection_file, info)

    def failure(self, what: str, lines: int = 20) -> LauncherError:
        return LauncherError(f"{what} (host {self.hostname})", returncode=self.poll(), output=self.output_tail(lines))



__all__ = ["SSHControllerLauncher"]
