"""SSH tunnels for a client that cannot reach the controller directly: ``Client(sshserver=...)``.

One ``ssh -N`` process forwards a local port (on 127.0.0.1) to each of the controller's ports, as
seen from the SSH server; the client then connects to the local ends.  The real OpenSSH client
is used, so ``~/.ssh/config`` (keys, users, ports, jump hosts) applies, and it never prompts
(``BatchMode``).  The tunnel is closed with the client, and at interpreter exit at the latest.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import tempfile
import time
import weakref
from typing import Sequence

from ipcluster.errors import ControllerError
from ipcluster.protocol.connection import ConnectionInfo

#: Attempts with fresh local ports when another program took one first.
_ATTEMPTS = 3


def _free_ports(n: int) -> list[int]:
    """*n* distinct ports that are free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _end(popen: subprocess.Popen[bytes]) -> None:
    """Terminate the ssh process, then kill it if it lingers."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)


class SSHTunnel:
    """Forward the ports of *info* through *server* (``[user@]host[:port]``).

    Parameters
    ----------
    server:
        The SSH server that can reach the controller.
    sshkey:
        A private key file for ssh (``-i``); default: whatever ssh would use.
    ssh_args:
        More arguments for ssh (before the built-in ones, so they win).
    timeout:
        Seconds to wait for the tunnel to be up.
    """

    def __init__(self, server: str, sshkey: str | None = None, ssh_args: Sequence[str] = (),
                 timeout: float = 15.0, ssh_cmd: Sequence[str] = ("ssh",)):
        from ipcluster.cluster.launchers.sshcmd import parse_target

        try:
            self.target = parse_target(server)
        except ValueError as e:
            raise ControllerError(f"sshserver: {e}") from None
        self.server = server
        self.sshkey = os.path.expanduser(sshkey) if sshkey else None
        self.ssh_args = list(ssh_args)
        self.ssh_cmd = list(ssh_cmd)
        self.timeout = timeout
        self.popen: subprocess.Popen[bytes] | None = None
        self.forwards: dict[int, int] = {}  # remote port -> local port
        self._finalizer: weakref.finalize | None = None

    def argv(self, remote_host: str, forwards: dict[int, int]) -> list[str]:
        args = [*self.ssh_cmd, *self.ssh_args, "-N", "-T", "-x", "-o", "BatchMode=yes",
                "-o", "ExitOnForwardFailure=yes", "-o", f"ConnectTimeout={max(1, round(self.timeout))}"]
        if self.sshkey:
            args += ["-i", self.sshkey, "-o", "IdentitiesOnly=yes"]
        if self.target.port:
            args += ["-p", str(self.target.port)]
        host = f"[{remote_host}]" if ":" in remote_host else remote_host
        for remote, local in forwards.items():
            args += ["-L", f"127.0.0.1:{local}:{host}:{remote}"]
        return [*args, self.target.destination]

    def open(self, info: ConnectionInfo) -> ConnectionInfo:
        """Start the forwards; return *info* rewritten to connect through them."""
        remote_ports = sorted(set(info.ports.values()))
        last_error = ""
        for _ in range(_ATTEMPTS):
            forwards = dict(zip(remote_ports, _free_ports(len(remote_ports))))
            error = self._start(info.location, forwards)
            if error is None:
                self.forwards = forwards
                ports = {role: forwards[port] for role, port in info.ports.items()}
                return dataclasses.replace(info, location="127.0.0.1", ports=ports, ipc_dir="")
            last_error = error
            if "forward" not in error.lower() and "address already in use" not in error.lower():
                break  # not a port clash: trying other ports will not help
        raise ControllerError(f"cannot open an SSH tunnel through {self.server} to the controller at "
                              f"{info.location}: {last_error}")

    def _start(self, remote_host: str, forwards: dict[int, int]) -> str | None:
        """Run ssh and wait until every local end listens; ``None``, or why it failed."""
        with tempfile.TemporaryFile() as err:
            try:
                popen = subprocess.Popen(self.argv(remote_host, forwards), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            except OSError as e:
                return f"cannot run {self.ssh_cmd[0]!r}: {e}"
            deadline = time.monotonic() + self.timeout + 5
            interval = 0.01
            pending = list(forwards.values())
            while pending:
                if popen.poll() is not None:
                    err.seek(0)
                    text = err.read().decode(errors="replace").strip()
                    return f"ssh exited with code {popen.returncode}: {text or 'no message'}"
                if time.monotonic() > deadline:
                    _end(popen)
                    return f"the forwards were not up within {self.timeout + 5:.0f} s"
                pending = [port for port in pending if not _listening(port)]
                if pending:
                    time.sleep(interval)  # polling interval of a deadline-bounded wait
                    interval = min(interval * 2, 0.1)
        self.popen = popen
        self._finalizer = weakref.finalize(self, _end, popen)
        return None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def close(self) -> None:
        """End the ssh process (and with it every forward)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None

    def __repr__(self) -> str:
        return f"<SSHTunnel via {self.server} {'open' if self.running else 'closed'}>"


__all__ = ["SSHTunnel"]
