"""Connection files and the IPython-style profile directory they live in.

A cluster is named by ``(profile, cluster_id)``.  Its files live in
``$IPYTHONDIR/profile_<profile>/security/`` (mode 0700):

* ``ipcluster-<cluster_id>-connection.json`` — written by the controller once every socket is bound
  (mode 0600, atomically: temp file then ``os.replace``); read by engines and clients.
* ``ipcluster-<cluster_id>.json`` — written by whoever started the cluster (``Cluster``): pids,
  launcher state, so ``ipcluster list/stop`` and ``Cluster.from_file()`` can find it.

With an empty cluster id the names are ``ipcluster-connection.json`` / ``ipcluster.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ipcluster.errors import ConnectionFileError
from ipcluster.protocol.hostkey import host_key

#: Longest Unix socket path we create (``sun_path`` holds 108 bytes on Linux, 104 on macOS).
MAX_IPC_PATH = 100
#: Longest socket name inside an ipc directory (roles, and ``e-<12 hex>`` for engines).
IPC_NAME_MAX = 16

#: Socket roles a controller binds, in connection-file order.
SOCKET_ROLES = ("hub", "mux_front", "mux_back", "control_front", "control_back",
                "iopub", "hb_ping", "hb_pong")


def ipython_dir() -> Path:
    """``$IPYTHONDIR`` or ``~/.ipython``."""
    env = os.environ.get("IPYTHONDIR")
    return Path(env).expanduser() if env else Path.home() / ".ipython"


def profile_dir(profile: str | None = None, ipython_dir_: str | os.PathLike[str] | None = None) -> Path:
    """The directory of *profile* (default ``"default"``), created if missing."""
    base = Path(ipython_dir_).expanduser() if ipython_dir_ else ipython_dir()
    path = base / f"profile_{profile or 'default'}"
    for sub in ("", "security", "log", "pid"):
        d = path / sub
        d.mkdir(mode=0o700 if sub in ("security", "log") else 0o777, parents=True, exist_ok=True)
    # the key (security) and task output (log) stay private even in a directory made earlier
    os.chmod(path / "security", 0o700)
    os.chmod(path / "log", 0o700)
    return path


def security_dir(profile_path: str | os.PathLike[str]) -> Path:
    return Path(profile_path) / "security"


def _suffix(cluster_id: str) -> str:
    return f"-{cluster_id}" if cluster_id else ""


def connection_file_path(profile_path: str | os.PathLike[str], cluster_id: str = "") -> Path:
    return security_dir(profile_path) / f"ipcluster{_suffix(cluster_id)}-connection.json"


def cluster_file_path(profile_path: str | os.PathLike[str], cluster_id: str = "") -> Path:
    return security_dir(profile_path) / f"ipcluster{_suffix(cluster_id)}.json"


@dataclass
class ConnectionInfo:
    """Everything a process needs to join a cluster.

    ``location`` is the address others connect to (the advertised address); ``ports`` maps each
    role in :data:`SOCKET_ROLES` to the port the controller bound.  The ``curve_*`` keys are set
    when the controller uses CurveZMQ (see :mod:`ipcluster.protocol.curve`), else empty.
    """

    key: str
    location: str = "127.0.0.1"
    transport: str = "tcp"
    ports: dict[str, int] = field(default_factory=dict)
    cluster_id: str = ""
    signature_scheme: str = "hmac-sha256"
    controller_pid: int | None = None
    version: str = ""
    heartbeat_period: float = 3.0
    #: Largest frame data sockets accept, cluster-wide (-1: no limit); see ipcluster.protocol.limits.
    max_message_size: int = 4 << 30
    #: Seconds a message may be older than its receiver's clock where staleness is checked.
    max_message_age: float = 600.0
    curve_serverkey: str = ""
    curve_publickey: str = ""
    curve_secretkey: str = ""
    #: A 0700 directory where the controller also listens on Unix domain sockets (one per role),
    #: and :func:`~ipcluster.protocol.hostkey.host_key` of the controller's process: processes
    #: with the same host key use these sockets instead of TCP (about 20 µs less per message).
    ipc_dir: str = ""
    host_key: str = ""

    def url(self, role: str) -> str:
        """Where to connect for *role*: the Unix socket on the controller's host, else TCP."""
        if self.local_ipc:
            if role not in self.ports:
                raise ConnectionFileError(f"connection info has no port for socket {role!r}")
            return ipc_url(self.ipc_dir, role)
        return self.tcp_url(role)

    def tcp_url(self, role: str) -> str:
        try:
            port = self.ports[role]
        except KeyError:
            raise ConnectionFileError(f"connection info has no port for socket {role!r}") from None
        return f"{self.transport}://{self.location}:{port}"

    @property
    def local_ipc(self) -> bool:
        """Whether this process reaches the controller through its Unix sockets."""
        return bool(self.ipc_dir) and self.host_key == host_key() and os.path.isdir(self.ipc_dir)

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("ascii")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "connection info") -> "ConnectionInfo":
        if not isinstance(d, dict):
            raise ConnectionFileError(f"{source}: expected a JSON object")
        missing = [k for k in ("key", "ports") if k not in d]
        if missing:
            raise ConnectionFileError(f"{source}: missing field(s) {', '.join(missing)}")
        if not isinstance(d["ports"], dict):
            raise ConnectionFileError(f"{source}: 'ports' must be a JSON object")
        known = {f for f in cls.__dataclass_fields__}
        info = cls(**{k: v for k, v in d.items() if k in known})
        absent = [r for r in SOCKET_ROLES if r not in info.ports]
        if absent:
            raise ConnectionFileError(f"{source}: no port for socket(s) {', '.join(absent)}")
        return info


def ipc_url(ipc_dir: str, name: str) -> str:
    return f"ipc://{ipc_dir}/{name}"


def make_ipc_dir() -> str:
    """A fresh private (0700) directory for Unix sockets, or ``""`` where they cannot be used.

    Under the temporary directory, not the profile: socket paths must stay short.
    """
    if os.name != "posix":
        return ""
    try:
        path = tempfile.mkdtemp(prefix="ipcluster-")  # created 0700
    except OSError:
        return ""
    if len(path) + 1 + IPC_NAME_MAX > MAX_IPC_PATH:
        os.rmdir(path)
        return ""
    return path


def write_json_atomic(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write *data* as JSON to *path* with mode 0600, atomically (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConnectionFileError(f"connection file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise ConnectionFileError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConnectionFileError(f"{path}: expected a JSON object")
    return data


def write_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> None:
    write_json_atomic(path, info.to_dict())


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    return ConnectionInfo.from_dict(read_json(path), source=str(path))
