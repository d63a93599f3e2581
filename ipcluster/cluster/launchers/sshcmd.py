"""Pure helpers of the SSH launchers: host specs, ``ssh`` command lines, remote shell scripts.

Nothing here starts a process, so all of it is unit-testable.  The launchers themselves are in
:mod:`ipcluster.cluster.launchers.ssh`.

Remote commands are POSIX ``sh`` scripts run as ``exec /bin/sh -c '<script>'`` by the remote login
shell.  Without a terminal, sshd makes each session's command a process-group leader, and the
scripts ``exec`` the Python process, so the pid a script reports is also the process group of
everything it starts: one ``kill -- -PGID`` reaches the engines a supervisor forked.

Secrets never travel on a command line: a connection file is written by ``cat`` from the ssh
session's standard input (or read back with ``cat`` on its standard output) into a file created
under ``umask 077``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
from dataclasses import dataclass
from typing import Sequence

#: The line a remote script prints once its checks passed, just before it execs Python.
STARTED_MARK = "ipcluster-ssh: started pid"
_STARTED_RE = re.compile(r"^ipcluster-ssh: started pid (\d+)", re.MULTILINE)

#: Options every ssh command gets after the user's own (ssh keeps the first value it is given for
#: each option, so ``ssh_args`` and ``~/.ssh/config`` still decide everything else).
#: BatchMode: never prompt (no terminal to answer on); -T: no terminal (engines' output stays
#: byte-exact and a dropped connection does not HUP them); -x: no X11 forwarding.
BASE_OPTIONS = ["-T", "-x", "-o", "BatchMode=yes"]


@dataclass(frozen=True)
class SSHTarget:
    """Where to ssh to: ``[user@]host[:port]`` as the user wrote it.

    *host* may be an alias from ``~/.ssh/config``; ssh resolves it (see :func:`resolve_command`).
    """

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """``user@host`` or ``host``: what ssh is given (the port goes to ``-p``)."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port else text


def parse_target(spec: str) -> SSHTarget:
    """Parse ``[user@]host[:port]`` (an IPv6 host in brackets: ``[::1]:22``).

    Raises :class:`ValueError` naming the spec when it is malformed.
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty SSH host")
    user: str | None = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise ValueError(f"bad SSH host {spec!r}: empty user name")
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad SSH host {spec!r}: unbalanced [...]")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad SSH host {spec!r}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"bad SSH host {spec!r}: no host name")
    return SSHTarget(host=host, user=user, port=port)


def ssh_command(target: SSHTarget, ssh_cmd: Sequence[str], ssh_args: Sequence[str],
                connect_timeout: float, remote_command: str | None = None) -> list[str]:
    """The argv of ``ssh`` to *target* running *remote_command* (a shell command line)."""
    args = [*ssh_cmd, *ssh_args, *BASE_OPTIONS, "-o", f"ConnectTimeout={max(1, round(connect_timeout))}"]
    if target.port:
        args += ["-p", str(target.port)]
    args.append(target.destination)
    if remote_command is not None:
        args.append(remote_command)
    return args


def resolve_command(target: SSHTarget, ssh_cmd: Sequence[str], ssh_args: Sequence[str]) -> list[str]:
    """``ssh -G``: print the configuration ssh would use for *target* (no connection is made)."""
    args = [*ssh_cmd, *ssh_args, "-G"]
    if target.port:
        args += ["-p", str(target.port)]
    return [*args, target.destination]


def parse_resolved(output: str) -> tuple[str, int]:
    """``(hostname, port)`` from ``ssh -G`` output."""
    host, port = "", 22
    for line in output.splitlines():
        key, _, value = line.partition(" ")
        if key == "hostname":
            host = value.strip()
        elif key == "port" and value.strip().isdigit():
            port = int(value.strip())
    return host, port


def quote_path(path: str) -> str:
    """*path* quoted for sh, with a leading ``~/`` still meaning the remote home directory."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _argv(args: Sequence[str]) -> str:
    """A command line for sh; arguments that are ``~/`` paths keep meaning the remote home."""
    return " ".join(quote_path(a) if a.startswith("~") else shlex.quote(a) for a in args)


def sh_wrap(script: str) -> str:
    """*script* as one command line for the remote login shell."""
    return "exec /bin/sh -c " + shlex.quote(script)


def _check_python(python: str, module: str) -> str:
    """Shell lines that fail early, with a message, when *python* cannot import *module*."""
    q = quote_path(python)
    msg = shlex.quote(f"ipcluster-ssh: remote_python {python} cannot import the '{module}' package "
                      "(is ipcluster installed for that Python?) on host ")
    return (
        f"{q} -P -c {shlex.quote('import ' + module)} </dev/null\n"
        "rc=$?\n"
        f'if [ $rc -ne 0 ]; then echo {msg}"$(hostname)" >&2; exit $rc; fi\n'
    )


def engine_script(python: str, profile_dir: str, connection_file: str, n: int,
                  engine_args: Sequence[str] = ()) -> str:
    """Remote script: store the connection file read from stdin, check Python, exec the supervisor."""
    pdir, conn = quote_path(profile_dir), quote_path(connection_file)
    argv = _argv([python, "-P", "-m", "engines", "--file", connection_file, "-n", str(n),
                  "--profile-dir", profile_dir, *engine_args])
    return (
        "umask 077\n"
        f"mkdir -p {pdir}/security {pdir}/log || exit 1\n"
        f"cat > {conn} || exit 1\n"
        + _check_python(python, "engines")
        + f'echo "{STARTED_MARK} $$ on $(hostname)"\n'
        f"exec {argv} </dev/null\n"
    )


def controller_script(python: str, profile_dir: str, connection_file: str,
                      controller_args: Sequence[str]) -> str:
    """Remote script: check Python, exec the controller (which writes *connection_file* there)."""
    pdir = quote_path(profile_dir)
    argv = _argv([python, "-P", "-m", "controller", "--profile-dir", profile_dir,
                  "--connection-file", connection_file, *controller_args])
    return (
        "umask 077\n"
        f"mkdir -p {pdir}/security {pdir}/log || exit 1\n"
        + _check_python(python, "controller")
        + f'echo "{STARTED_MARK} $$ on $(hostname)"\n'
        f"exec {argv} </dev/null\n"
    )


def fetch_file_script(path: str, timeout: float) -> str:
    """Remote script: wait up to *timeout* seconds for *path* to be non-empty, then print it."""
    q = quote_path(path)
    tries = max(1, int(timeout / 0.05))
    return (
        "i=0\n"
        f"while [ ! -s {q} ]; do\n"
        f"  i=$((i + 1)); if [ $i -gt {tries} ]; then echo 'ipcluster-ssh: no file {path}' >&2; exit 3; fi\n"
        "  sleep 0.05\n"
        "done\n"
        f"cat {q}\n"
    )


def signal_script(pgid: int, signame: str) -> str:
    """Remote script: send SIG*signame* to process group *pgid* (no error if it is gone).

    ``kill -SIG -PGID`` is the spelling both dash and bash accept (dash rejects ``--`` there).
    """
    return f"kill -{signame} -{int(pgid)} 2>/dev/null; exit 0"


def children_signal_script(pid: int, signame: str) -> str:
    """Remote script: send SIG*signame* to the children of *pid* (a supervisor's engines)."""
    return f"pkill -{signame} -P {int(pid)} 2>/dev/null; exit 0"


def remove_files_script(paths: Sequence[str]) -> str:
    return "rm -f -- " + " ".join(quote_path(p) for p in paths)


def started_pid(text: str) -> int | None:
    """The pid a remote script reported in *text* (its output so far), if it has."""
    m = _STARTED_RE.search(text)
    return int(m.group(1)) if m else None


# --- addresses ---------------------------------------------------------------------------------


def resolve_addresses(host: str) -> list[str]:
    """IP addresses of *host* (``[]`` when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def is_loopback(host: str) -> bool:
    """Is *host* (a name or an address) a loopback address?  Names resolving to one count too."""
    if host in ("localhost", ""):
        return True
    addrs = resolve_addresses(host)
    return bool(addrs) and all(ipaddress.ip_address(a).is_loopback for a in addrs)


def local_addresses() -> set[str]:
    """This machine's addresses (every interface of this network namespace)."""
    import psutil

    addrs = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                addrs.add(entry.address.split("%")[0])
    return addrs


def is_this_host(host: str) -> bool:
    """Does *host* name this machine, in this network namespace (so 127.0.0.1 reaches us from it)?"""
    if is_loopback(host):
        return True
    addrs = resolve_addresses(host)
    return bool(addrs) and all(a in local_addresses() for a in addrs)
