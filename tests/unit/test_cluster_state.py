"""Cluster files: round trip, stale detection, AlreadyRunning, ClusterManager (no subprocesses)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import dead_pid

from ipcluster.cluster import state
from ipcluster.cluster.cluster import Cluster
from ipcluster.cluster.launchers.local import LocalControllerLauncher, LocalEngineSetLauncher
from ipcluster.cluster.launchers.process import ProcessHandle
from ipcluster.cluster.manager import ClusterManager
from ipcluster.errors import AlreadyRunning, ClusterError, ClusterNotFound
from ipcluster.protocol.connection import write_json_atomic




def attach(launcher, pid: int, create_time: float | None = None):
    launcher.process = ProcessHandle.attach(pid, create_time=create_time, pgid=None)
    launcher.args = ["python", "-m", "something"]
    return launcher


def recorded_cluster(pid: int, engine_pid: int | None = None, cluster_id: str = "abc", **kw) -> Cluster:
    """A Cluster whose launchers are attached to *pid* (no process is started)."""
    cluster = Cluster(n=2, cluster_id=cluster_id, shutdown_atexit=False, **kw)
    state.ensure_profile_dir(cluster.profile_dir)
    common = dict(parent=cluster, profile_dir=cluster.profile_dir, cluster_id=cluster_id)
    cluster.controller = attach(LocalControllerLauncher(log_path="/nonexistent/c.log", **common), pid)
    engines = LocalEngineSetLauncher(log_path="/nonexistent/e.log", n=2,
                                     connection_file=str(cluster.connection_file), **common)
    cluster.engines["0"] = attach(engines, engine_pid or pid)
    cluster.start_time = time.time()
    cluster.update_cluster_file()
    return cluster


def test_new_cluster_id_looks_like_ipyparallel():
    a, b = state.new_cluster_id(), state.new_cluster_id()
    stamp, _, suffix = a.partition("-")
    assert abs(int(stamp) - time.time()) < 5
    assert len(suffix) == 4 and suffix.isalnum()
    assert a != b or True  # collisions are possible but irrelevant


def test_cluster_key_round_trip():
    assert state.cluster_key("default", "") == "default:"
    assert state.parse_cluster_key("default:") == ("default", "")
    assert state.parse_cluster_key("p:1-abcd") == ("p", "1-abcd")
    assert state.parse_cluster_key("p") == ("p", "")
    assert state.profile_name("/x/profile_foo") == "foo"
    assert state.profile_name("/x/elsewhere") == "elsewhere"


def test_default_cluster_id_and_empty_id(ipdir):
    assert Cluster().cluster_id != ""
    assert Cluster(cluster_id="").cluster_id == ""
    assert Cluster(cluster_id="").cluster_file.name == "ipcluster.json"
    assert Cluster(cluster_id="x").connection_file.name == "ipcluster-x-connection.json"


def test_profile_dir_resolution(ipdir, tmp_path):
    c = Cluster(profile="foo")
    assert c.profile_dir == str(ipdir / "profile_foo")
    assert not (ipdir / "profile_foo").exists()  # nothing created before starting
    c = Cluster(profile_dir=tmp_path / "profile_bar")
    assert c.profile == "bar" and c.profile_dir == str(tmp_path / "profile_bar")


def test_cluster_file_round_trip(ipdir):
    me = psutil.Process()
    cluster = recorded_cluster(me.pid, cluster_id="rt")
    path = cluster.cluster_file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = state.read_cluster_file(path)
    for key in ("profile", "profile_dir", "cluster_id", "n", "start_time", "connection_file"):
        assert key in data
    assert data["controller"]["pid"] == me.pid
    assert data["controller"]["args"] == ["python", "-m", "something"]
    assert data["controller"]["log_path"] == "/nonexistent/c.log"
    assert data["engines"]["0"]["n"] == 2

    loaded = Cluster.from_file(cluster_id="rt")
    assert loaded.to_dict()["controller"] == data["controller"]
    assert loaded.to_dict()["engines"] == data["engines"]
    assert loaded.cluster_id == "rt" and loaded.n == 2
    assert loaded.running and loaded.status == "running"
    assert loaded.controller.pid == me.pid and loaded.controller.running


def test_missing_cluster_file_is_not_found(ipdir):
    with pytest.raises(ClusterNotFound):
        Cluster.from_file(cluster_id="nope")


def test_malformed_cluster_file(ipdir):
    cluster = Cluster(cluster_id="bad")
    state.ensure_profile_dir(cluster.profile_dir)
    cluster.cluster_file.write_text("{not json")
    with pytest.raises(ClusterError):
        Cluster.from_file(cluster_id="bad")


def test_stale_cluster_file_detected(ipdir):
    recorded_cluster(dead_pid(), cluster_id="stale")
    with pytest.raises(ClusterNotFound, match="not running"):
        Cluster.from_file(cluster_id="stale")
    stopped = Cluster.from_file(cluster_id="stale", allow_stopped=True)
    assert not stopped.running and stopped.status == "stopped"


def test_recycled_pid_is_not_alive(ipdir):
    me = psutil.Process()
    cluster = recorded_cluster(me.pid, cluster_id="recycled")
    data = state.read_cluster_file(cluster.cluster_file)
    data["controller"]["create_time"] = me.create_time() - 1000
    data["engines"]["0"]["create_time"] = me.create_time() - 1000
    write_json_atomic(cluster.cluster_file, data)
    with pytest.raises(ClusterNotFound):
        Cluster.from_file(cluster_id="recycled")


def test_partial_status(ipdir):
    recorded_cluster(os.getpid(), engine_pid=dead_pid(), cluster_id="half")
    assert Cluster.from_file(cluster_id="half").status == "engines stopped"


def test_already_running_is_refused(ipdir):
    recorded_cluster(os.getpid(), cluster_id="busy")
    with pytest.raises(AlreadyRunning, match="ipcluster stop"):
        Cluster(cluster_id="busy")._check_not_running()


def test_stale_files_are_removed_before_start(ipdir):
    old = recorded_cluster(dead_pid(), cluster_id="old")
    write_json_atomic(old.connection_file, {"key": "k", "ports": {}, "controller_pid": dead_pid()})
    Cluster(cluster_id="old")._check_not_running()
    assert not old.cluster_file.exists()
    assert not old.connection_file.exists()


def test_connection_file_of_live_controller_is_refused(ipdir, monkeypatch):
    c = Cluster(cluster_id="live")
    state.ensure_profile_dir(c.profile_dir)
    write_json_atomic(c.connection_file, {"key": "k", "ports": {}, "controller_pid": os.getpid()})
    monkeypatch.setattr(psutil.Process, "cmdline", lambda self: ["python", "-m", "controller"])
    with pytest.raises(AlreadyRunning):
        c._check_not_running()


def test_connection_file_with_recycled_pid_is_stale(ipdir):
    # our own pid is alive, but this process is no controller
    c = Cluster(cluster_id="reused")
    state.ensure_profile_dir(c.profile_dir)
    write_json_atomic(c.connection_file, {"key": "k", "ports": {}, "controller_pid": os.getpid()})
    assert not state.controller_alive(c.connection_file)


def test_failed_start_does_not_remove_another_clusters_file(ipdir):
    other = recorded_cluster(os.getpid(), cluster_id="mine")
    intruder = Cluster(cluster_id="mine", shutdown_atexit=False)
    with pytest.raises(AlreadyRunning):
        intruder.start_controller_sync()
    intruder.stop_cluster_sync()  # what start_and_connect does on failure
    assert other.cluster_file.exists()


def test_manager_lists_and_cleans(ipdir, monkeypatch):
    recorded_cluster(os.getpid(), cluster_id="up")
    recorded_cluster(dead_pid(), cluster_id="down")
    recorded_cluster(dead_pid(), cluster_id="elsewhere", profile="other")
    orphan = state.connection_file_path(state.resolve_profile_dir("other"), "orphan")
    write_json_atomic(orphan, {"key": "k", "ports": {}, "controller_pid": dead_pid()})

    mgr = ClusterManager()
    assert sorted(mgr.list_clusters()) == ["default:down", "default:up", "other:elsewhere"]
    assert mgr.list_clusters(running_only=True) == ["default:up"]
    assert mgr.list_clusters(profile="other") == ["other:elsewhere"]
    assert mgr.get_cluster("default:up").cluster_id == "up"
    with pytest.raises(ClusterNotFound):
        mgr.get_cluster("default:down")

    removed = {p.name for p in mgr.clean()}
    assert removed == {"ipcluster-down.json", "ipcluster-elsewhere.json", "ipcluster-orphan-connection.json"}
    assert mgr.list_clusters() == ["default:up"]


def test_cluster_file_named_like_a_connection_file(ipdir):
    # cluster id "connection" gives ipcluster-connection.json, the connection file name of id ""
    recorded_cluster(os.getpid(), cluster_id="connection")
    assert ClusterManager().list_clusters() == ["default:connection"]


def test_removing_a_dead_controllers_connection_file_removes_its_socket_directory(tmp_path):
    from ipcluster.protocol.connection import make_ipc_dir

    ipc_dir = make_ipc_dir()
    (Path(ipc_dir) / "hub").write_text("")
    conn = tmp_path / "ipcluster-connection.json"
    conn.write_text(json.dumps({"key": "k", "ports": {}, "ipc_dir": ipc_dir}))
    assert state.remove_connection_file(conn)
    assert not conn.exists() and not os.path.exists(ipc_dir)


@pytest.mark.parametrize("named", ["not-ours", ""])
def test_only_socket_directories_named_as_ours_are_removed(tmp_path, named):
    other = tmp_path / "somedir"
    other.mkdir()
    conn = tmp_path / "ipcluster-connection.json"
    conn.write_text(json.dumps({"key": "k", "ports": {}, "ipc_dir": str(other) if named else ""}))
    assert state.remove_connection_file(conn)
    assert other.is_dir()
    assert not state.remove_connection_file(conn)  # already gone: False, no error
