"""Cluster files: where a running cluster is recorded, and how to find and judge them.

A cluster file (``cluster_file_path(profile_dir, cluster_id)``, JSON, mode 0600, written
atomically) records what :class:`~ipcluster.cluster.Cluster` started, so another process
(``ipcluster stop``, ``Cluster.from_file()``) can find and stop it::

    {"profile": "default", "profile_dir": "...", "cluster_id": "1700000000-ab3x", "n": 4,
     "start_time": 1700000000.0, "connection_file": "...", "starter_pid": 123,
     "ipcluster_version": "0.1.0", "controller_ip": "127.0.0.1", ...,
     "controller": {"launcher": "local", "pid": 124, "args": [...], "log_path": "...", ...},
     "engines": {"0": {"launcher": "local", "pid": 125, "n": 4, "args": [...], ...}}}

This module only reads, writes and finds files; whether the recorded processes still run is the
launchers' business (``Cluster.from_file(...).running``).
"""

from __future__ import annotations

import os
import random
import shutil
import string
import time
from pathlib import Path
from typing import Any, Iterator

from ipcluster.errors import ClusterError, ClusterNotFound, ConnectionFileError
from ipcluster.protocol.connection import (
    cluster_file_path,
    connection_file_path,
    ipython_dir,
    read_json,
    write_json_atomic,
)

_ID_CHARS = string.ascii_lowercase + string.digits


def new_cluster_id() -> str:
    """A fresh cluster id, ``"<unix time>-<4 random characters>"`` (as ipyparallel makes them)."""
    return f"{int(time.time())}-{''.join(random.choice(_ID_CHARS) for _ in range(4))}"


def cluster_key(profile: str, cluster_id: str) -> str:
    """The ``"profile:cluster_id"`` key naming a cluster in ``ipcluster list`` and ClusterManager."""
    return f"{profile}:{cluster_id}"


def parse_cluster_key(key: str) -> tuple[str, str]:
    """Split ``"profile:cluster_id"`` (a key without ``:`` is a profile with cluster id ``""``)."""
    profile, _, cluster_id = key.partition(":")
    return profile or "default", cluster_id


def profile_name(profile_dir: str | os.PathLike[str]) -> str:
    """``.../profile_foo`` -> ``"foo"``; any other directory name is returned as it is."""
    name = Path(profile_dir).name
    return name[len("profile_"):] if name.startswith("profile_") else name


def resolve_profile_dir(
    profile: str | None = None,
    profile_dir: str | os.PathLike[str] | None = None,
    ipython_dir_: str | os.PathLike[str] | None = None,
) -> Path:
    """The profile directory: *profile_dir* if given, else ``$IPYTHONDIR/profile_<profile>``.

    Nothing is created; see :func:`ensure_profile_dir`.
    """
    if profile_dir:
        return Path(profile_dir).expanduser().absolute()
    base = Path(ipython_dir_).expanduser() if ipython_dir_ else ipython_dir()
    return (base / f"profile_{profile or 'default'}").absolute()


def ensure_profile_dir(path: str | os.PathLike[str]) -> Path:
    """Create the profile directory with its ``security`` (0700) and ``log`` subdirectories."""
    path = Path(path)
    for sub in ("security", "log"):
        (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path / sub, 0o700)  # the key, and task output in logs, stay private
    return path


def write_cluster_file(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    write_json_atomic(path, data)


def read_cluster_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The cluster record at *path*; :class:`ClusterNotFound` if missing, :class:`ClusterError` if bad."""
    if not Path(path).exists():
        raise ClusterNotFound(f"no cluster file at {path}")
    try:
        data = read_json(path)
    except ConnectionFileError as e:
        raise ClusterError(f"unreadable cluster file: {e}") from None
    if "ports" in data or "cluster_id" not in data:
        raise ClusterError(f"{path} is not a cluster file")
    return data


def remove_file(path: str | os.PathLike[str]) -> bool:
    """Remove *path*; ``True`` if it was there."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_connection_file(path: str | os.PathLike[str]) -> bool:
    """Remove a dead controller's connection file and its Unix-socket directory; ``True`` if the
    file was there.  (A controller that exits cleanly removes both itself; a killed one cannot.)"""
    try:
        ipc_dir = str(read_json(path).get("ipc_dir") or "")
    except ConnectionFileError:
        ipc_dir = ""
    removed = remove_file(path)
    # only a directory that is ours: private, named as make_ipc_dir names them
    if ipc_dir and os.path.basename(ipc_dir).startswith("ipcluster-") and os.path.isdir(ipc_dir) \
            and os.stat(ipc_dir).st_uid == os.getuid():
        shutil.rmtree(ipc_dir, ignore_errors=True)
    return removed


def profile_dirs(ipython_dir_: str | os.PathLike[str] | None = None, profile: str | None = None) -> list[Path]:
    """Existing profile directories under *ipython_dir_* (only *profile*'s when given)."""
    base = Path(ipython_dir_).expanduser() if ipython_dir_ else ipython_dir()
    if profile is not None:
        d = base / f"profile_{profile}"
        return [d] if d.is_dir() else []
    if not base.is_dir():
        return []
    return sorted(d for d in base.iterdir() if d.name.startswith("profile_") and d.is_dir())


def cluster_files(profile_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Cluster files in *profile_dir*'s security directory (connection files excluded)."""
    sec = Path(profile_dir) / "security"
    if not sec.is_dir():
        return
    for path in sorted(sec.glob("ipcluster*.json")):
        if path.name.endswith("-connection.json") and _is_connection_file(path):
            continue
        yield path


def connection_files(profile_dir: str | os.PathLike[str]) -> Iterator[Path]:
    sec = Path(profile_dir) / "security"
    if sec.is_dir():
        yield from sorted(p for p in sec.glob("ipcluster*-connection.json") if _is_connection_file(p))


def _is_connection_file(path: Path) -> bool:
    try:
        return "ports" in read_json(path)
    except ConnectionFileError:
        return path.name.endswith("-connection.json")


def controller_alive(connection_file: str | os.PathLike[str]) -> bool:
    """Does the controller named by *connection_file* (its ``controller_pid``) still run here?

    A live pid whose command line does not mention a controller is a recycled pid: not alive.
    """
    try:
        pid = read_json(connection_file).get("controller_pid")
    except ConnectionFileError:
        return False
    if not isinstance(pid, int):
        return False
    from ipcluster.cluster.launchers.process import pid_alive

    if not pid_alive(pid):
        return False
    import psutil

    try:
        return any("controller" in part for part in psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


__all__ = [
    "cluster_file_path", "connection_file_path", "new_cluster_id", "cluster_key",
    "parse_cluster_key", "profile_name", "resolve_profile_dir", "ensure_profile_dir",
    "write_cluster_file", "read_cluster_file", "remove_file", "profile_dirs", "cluster_files",
    "connection_files", "controller_alive",
]
