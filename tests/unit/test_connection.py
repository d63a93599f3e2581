"""Connection files and profile dirs (``ipcluster.protocol.connection``), and the version handshake
(``ipcluster.protocol.versions``)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

import ipcluster
from ipcluster.errors import ConnectionFileError
from ipcluster.protocol.hostkey import host_key
from ipcluster.protocol.connection import (
    IPC_NAME_MAX,
    MAX_IPC_PATH,
    SOCKET_ROLES,
    ConnectionInfo,
    cluster_file_path,
    connection_file_path,
    make_ipc_dir,
    ipython_dir,
    profile_dir,
    read_connection_file,
    read_json,
    security_dir,
    write_connection_file,
    write_json_atomic,
)
from ipcluster.protocol.session import PROTOCOL_VERSION
from ipcluster.protocol.versions import incompatibility, local_versions

pytestmark = pytest.mark.timeout(10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def full_info(**kw) -> ConnectionInfo:
    ports = {role: 40000 + i for i, role in enumerate(SOCKET_ROLES)}
    return ConnectionInfo(key="a" * 64, ports=ports, **kw)


@pytest.fixture
def permissive_umask():
    """Make sure modes come from the code, not from a restrictive umask."""
    old = os.umask(0)
    yield
    os.umask(old)


# --- writing and reading ------------------------------------------------------------------------


def test_round_trip(tmp_path):
    info = full_info(location="10.0.0.5", cluster_id="abc", controller_pid=1234, version="0.1.0",
                     heartbeat_period=1.5)
    path = tmp_path / "security" / "ipcluster-abc-connection.json"
    write_connection_file(path, info)
    assert read_connection_file(path) == info
    assert json.loads(path.read_text())["ports"]["hub"] == 40000


def test_file_mode_is_0600(tmp_path, permissive_umask):
    path = tmp_path / "c.json"
    write_connection_file(path, full_info())
    assert mode(path) == 0o600


def test_overwriting_a_readable_file_makes_it_0600(tmp_path, permissive_umask):
    path = tmp_path / "c.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_connection_file(path, full_info())
    assert mode(path) == 0o600


def test_write_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "c.json"
    write_json_atomic(path, {"v": 1})
    inode = path.stat().st_ino
    with open(path) as reader:  # a reader holding the old file keeps seeing a whole file
        write_json_atomic(path, {"v": 2})
        assert json.load(reader) == {"v": 1}
    assert path.stat().st_ino != inode  # replaced, not rewritten in place
    assert read_json(path) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]  # no temp files left


def test_failed_write_leaves_old_file_and_no_temp_files(tmp_path):
    path = tmp_path / "c.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": object()})  # not JSON serializable, fails half-way
    assert read_json(path) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_write_creates_parent_dirs(tmp_path):
    path = tmp_path / "a" / "b" / "c.json"
    write_json_atomic(path, {"x": 1})
    assert read_json(path) == {"x": 1}


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "ipcluster-connection.json"
    with pytest.raises(ConnectionFileError) as info:
        read_connection_file(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{not json", id="syntax"),
        pytest.param("", id="empty"),
        pytest.param('{"key": "k", "ports": {', id="truncated"),
        pytest.param("[1, 2]", id="array"),
        pytest.param("null", id="null"),
    ],
)
def test_bad_json(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConnectionFileError) as info:
        read_connection_file(path)
    assert str(path) in str(info.value)


def test_undecodable_file(tmp_path):
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConnectionFileError) as info:
        read_connection_file(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConnectionFileError) as info:
        read_connection_file(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    "doc, words",
    [
        pytest.param({"key": "k"}, ["ports"], id="no-ports"),
        pytest.param({"ports": {}}, ["key"], id="no-key"),
        pytest.param({}, ["key", "ports"], id="nothing"),
        pytest.param({"key": "k", "ports": None}, ["ports"], id="ports-null"),
        pytest.param({"key": "k", "ports": [1, 2]}, ["ports"], id="ports-list"),
        pytest.param({"key": "k", "ports": {"hub": 1}}, ["mux_front", "hb_pong"], id="some-ports"),
    ],
)
def test_missing_fields(tmp_path, doc, words):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConnectionFileError) as info:
        read_connection_file(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg


def test_each_missing_role_is_named(tmp_path):
    for role in SOCKET_ROLES:
        d = full_info().to_dict()
        del d["ports"][role]
        with pytest.raises(ConnectionFileError, match=rf"\b{role}\b"):
            ConnectionInfo.from_dict(d)


def test_unknown_fields_are_ignored():
    d = full_info().to_dict()
    d["added_in_a_later_version"] = True
    assert ConnectionInfo.from_dict(d) == full_info()


def test_from_dict_rejects_non_object():
    with pytest.raises(ConnectionFileError, match="source-name"):
        ConnectionInfo.from_dict(["key"], source="source-name")  # type: ignore[arg-type]


def test_url():
    info = full_info()
    assert info.url("hub") == "tcp://127.0.0.1:40000"
    assert info.url("hb_pong") == f"tcp://127.0.0.1:{40000 + len(SOCKET_ROLES) - 1}"
    other = ConnectionInfo(key="k", location="node7.cluster", transport="tcp", ports={"iopub": 5555})
    assert other.url("iopub") == "tcp://node7.cluster:5555"
    with pytest.raises(ConnectionFileError, match="mux_front"):
        other.url("mux_front")


def test_url_uses_unix_sockets_on_the_controllers_host(tmp_path):
    info = full_info()
    info.ipc_dir, info.host_key = str(tmp_path), host_key()
    assert info.local_ipc
    assert info.url("hub") == f"ipc://{tmp_path}/hub"
    assert info.tcp_url("hub") == "tcp://127.0.0.1:40000"
    with pytest.raises(ConnectionFileError, match="nosuchrole"):
        info.url("nosuchrole")


@pytest.mark.parametrize("change", ["other host", "no directory", "no ipc"])
def test_url_falls_back_to_tcp(tmp_path, change):
    info = full_info()
    info.ipc_dir, info.host_key = str(tmp_path), host_key()
    if change == "other host":
        info.host_key = "elsewhere|boot|1"
    elif change == "no directory":
        info.ipc_dir = str(tmp_path / "gone")
    else:
        info.ipc_dir = ""
    assert not info.local_ipc
    assert info.url("hub") == "tcp://127.0.0.1:40000"


def test_ipc_dir_is_private_and_short():
    path = make_ipc_dir()
    try:
        assert path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert len(path) + 1 + IPC_NAME_MAX <= MAX_IPC_PATH
    finally:
        os.rmdir(path)


def test_no_ipc_dir_when_paths_would_be_too_long(tmp_path, monkeypatch):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(deep))
    assert make_ipc_dir() == ""
    assert list(deep.iterdir()) == []  # nothing left behind


def test_key_bytes():
    assert ConnectionInfo(key="abc123").key_bytes == b"abc123"


def test_socket_roles_match_the_docs():
    doc = (Path(ipcluster.__file__).parents[1] / "docs" / "protocol.md")
    if not doc.exists():
        pytest.skip("docs not available")
    text = doc.read_text()
    for role in SOCKET_ROLES:
        assert f"| `{role}` |" in text, role


# --- profile dirs and paths ---------------------------------------------------------------------


def test_profile_dir_honours_ipythondir(tmp_path, monkeypatch, permissive_umask):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipy"))
    assert ipython_dir() == tmp_path / "ipy"
    p = profile_dir("work")
    assert p == tmp_path / "ipy" / "profile_work"
    for sub in ("security", "log", "pid"):
        assert (p / sub).is_dir()
    assert mode(p / "security") == 0o700
    assert security_dir(p) == p / "security"


def test_profile_dir_default_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    assert profile_dir() == tmp_path / "profile_default"
    assert profile_dir("") == tmp_path / "profile_default"


def test_profile_dir_tightens_existing_security_dir(tmp_path, monkeypatch, permissive_umask):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    sec = tmp_path / "profile_default" / "security"
    sec.mkdir(parents=True)
    sec.chmod(0o755)
    profile_dir()
    assert mode(sec) == 0o700


def test_profile_dir_explicit_argument_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "env"))
    p = profile_dir("x", ipython_dir_=tmp_path / "arg")
    assert p == tmp_path / "arg" / "profile_x"
    assert not (tmp_path / "env").exists()


def test_ipython_dir_expands_user_and_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("IPYTHONDIR", "~/custom")
    assert ipython_dir() == tmp_path / "custom"
    monkeypatch.delenv("IPYTHONDIR")
    assert ipython_dir() == tmp_path / ".ipython"
    monkeypatch.setenv("IPYTHONDIR", "")
    assert ipython_dir() == tmp_path / ".ipython"


def test_file_paths(tmp_path):
    p = tmp_path / "profile_default"
    assert connection_file_path(p) == p / "security" / "ipcluster-connection.json"
    assert connection_file_path(p, "") == p / "security" / "ipcluster-connection.json"
    assert connection_file_path(p, "mycluster") == p / "security" / "ipcluster-mycluster-connection.json"
    assert cluster_file_path(p) == p / "security" / "ipcluster.json"
    assert cluster_file_path(p, "mycluster") == p / "security" / "ipcluster-mycluster.json"
    assert connection_file_path(str(p), "x") == p / "security" / "ipcluster-x-connection.json"


def test_connection_file_in_profile_round_trip(tmp_path, monkeypatch, permissive_umask):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    path = connection_file_path(profile_dir(), "c1")
    write_connection_file(path, full_info(cluster_id="c1"))
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert read_connection_file(path).cluster_id == "c1"


# --- versions -----------------------------------------------------------------------------------


def test_local_versions():
    v = local_versions()
    assert v["ipcluster"] == ipcluster.__version__
    assert v["ipcluster_path"] == ipcluster.__file__
    assert v["protocol"] == PROTOCOL_VERSION
    assert v["python"] == "%d.%d" % sys.version_info[:2]
    json.dumps(v)  # travels in a registration request


def engine_versions(**changes):
    v = local_versions()
    v["controller_path"] = "/site-packages/controller/__init__.py"
    v["engines_path"] = "/site-packages/engines/__init__.py"
    v.update(changes)
    return v


def test_equal_versions_are_compatible():
    assert incompatibility(local_versions(), local_versions()) is None
    assert incompatibility(local_versions(), engine_versions()) is None


def test_ipcluster_version_mismatch():
    msg = incompatibility(local_versions(), engine_versions(ipcluster="0.0.9", ipcluster_path="/old/ipcluster/__init__.py"))
    assert msg is not None
    assert "0.0.9" in msg and ipcluster.__version__ in msg
    assert "/old/ipcluster/__init__.py" in msg
    assert "engine" in msg


def test_python_mismatch():
    mine = local_versions()
    msg = incompatibility(mine, engine_versions(python="2.7"))
    assert msg is not None
    assert "Python 2.7" in msg and mine["python"] in msg


def test_protocol_mismatch():
    msg = incompatibility(local_versions(), engine_versions(protocol="0.1"))
    assert msg is not None and "protocol 0.1" in msg and PROTOCOL_VERSION in msg


def test_shadowed_ipcluster():
    msg = incompatibility(local_versions(), engine_versions(ipcluster=None, ipcluster_path="/home/u/ipcluster.py"))
    assert msg is not None
    assert "/home/u/ipcluster.py" in msg
    assert "shadow" in msg


@pytest.mark.parametrize("key, name", [("controller_path", "controller"), ("engines_path", "engines")])
def test_shadowed_controller_or_engines_package(key, name):
    msg = incompatibility(local_versions(), engine_versions(**{key: "/home/u/project/" + name + ".py"}))
    assert msg is not None
    assert f"{name} package shadowed" in msg
    assert f"/home/u/project/{name}.py" in msg


def test_several_problems_are_all_named():
    msg = incompatibility(local_versions(), engine_versions(python="3.9", protocol="0.1"), who="client")
    assert msg is not None
    assert "Python 3.9" in msg and "protocol 0.1" in msg
    assert "; " in msg
    assert "client" in msg
