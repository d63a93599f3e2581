"""The ``ipcluster`` command line: parsing, exit codes, list/stop/clean on recorded files.

No processes are started: clusters are cluster files pointing at this test process (running) or
at a pid nobody has (stopped).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import dead_pid

from ipcluster import __version__
from ipcluster.cli import _cluster_from_args, build_parser, main
from ipcluster.cluster import state
from ipcluster.cluster.cluster import Cluster
from ipcluster.cluster.launchers.local import LocalControllerLauncher, LocalEngineSetLauncher
from ipcluster.cluster.launchers.process import ProcessHandle
from ipcluster.protocol.connection import write_json_atomic




def record(pid: int, cluster_id: str = "", profile: str = "default") -> Cluster:
    cluster = Cluster(n=2, profile=profile, cluster_id=cluster_id, shutdown_atexit=False)
    state.ensure_profile_dir(cluster.profile_dir)
    common = dict(parent=cluster, profile_dir=cluster.profile_dir, cluster_id=cluster_id, log_path="/x.log")
    cluster.controller = LocalControllerLauncher(**common)
    cluster.controller.process = ProcessHandle.attach(pid, pgid=None)
    cluster.engines["0"] = LocalEngineSetLauncher(n=2, **common)
    cluster.engines["0"].process = ProcessHandle.attach(pid, pgid=None)
    cluster.start_time = time.time()
    cluster.update_cluster_file()
    return cluster


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["bogus"], ["start", "-n", "0"], ["start", "-n", "x"],
                                  ["start", "--log-level", "LOUD"], ["stop", "--nope"], ["list", "extra"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_start_arguments():
    args = build_parser().parse_args(
        ["start", "-n", "3", "--profile", "p", "--cluster-id", "c", "--daemonize", "--ip", "0.0.0.0",
         "--log-level", "debug"])
    assert (args.n, args.profile, args.cluster_id, args.daemonize, args.ip, args.log_level) == (
        3, "p", "c", True, "0.0.0.0", "DEBUG")
    defaults = build_parser().parse_args(["start"])
    assert defaults.n is None and defaults.cluster_id == "" and not defaults.daemonize


def test_start_builds_the_cluster_a_user_would(ipdir):
    args = build_parser().parse_args(["start", "-n", "3", "--profile", "p", "--ip", "0.0.0.0"])
    c = _cluster_from_args(args)
    assert (c.n, c.profile, c.cluster_id, c.controller_ip) == (3, "p", "", "0.0.0.0")
    assert c.shutdown_atexit
    daemon = _cluster_from_args(build_parser().parse_args(["start", "--daemonize"]))
    assert not daemon.shutdown_atexit  # a daemonized cluster outlives the command


def test_start_leaves_n_to_the_profile_config(ipdir):
    pdir = ipdir / "profile_cfg"
    pdir.mkdir(parents=True)
    (pdir / "ipcluster_config.py").write_text("c.Cluster.n = 5\n")
    assert _cluster_from_args(build_parser().parse_args(["start", "--profile", "cfg"])).n == 5


def test_list_empty(ipdir, capsys):
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["list"]) == 0
    assert "no clusters" in capsys.readouterr().out


def test_list_shows_running_and_stopped(ipdir, capsys):
    record(os.getpid(), "up")
    record(dead_pid(), "down", profile="other")
    assert main(["list", "--json"]) == 0
    listed = {c["key"]: c for c in json.loads(capsys.readouterr().out)}
    assert set(listed) == {"default:up", "other:down"}
    up = listed["default:up"]
    assert up["state"] == "running" and up["n"] == 2
    assert up["controller"]["pid"] == os.getpid() and up["controller"]["running"]
    assert up["engine_sets"][0]["pid"] == os.getpid()
    assert listed["other:down"]["state"] == "stopped"

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["PROFILE", "CLUSTER", "ID"]
    assert any("up" in line and "running" in line and f"controller={os.getpid()}" in line for line in lines)


def test_stop_not_found(ipdir, capsys):
    assert main(["stop"]) == 1
    assert "no cluster 'default:'" in capsys.readouterr().err


def test_stop_not_found_names_running_clusters(ipdir, capsys):
    record(os.getpid(), "1234-abcd")
    assert main(["stop"]) == 1
    assert "default:1234-abcd" in capsys.readouterr().err


def test_stop_stale_removes_files(ipdir, capsys):
    c = record(dead_pid(), "gone")
    assert main(["stop", "--cluster-id", "gone"]) == 1
    assert "not running" in capsys.readouterr().err
    assert not c.cluster_file.exists()


def test_stop_all_with_nothing_running(ipdir, capsys):
    record(dead_pid(), "gone")
    assert main(["stop", "--all"]) == 0
    assert "no running clusters" in capsys.readouterr().out


def test_clean(ipdir, capsys):
    up = record(os.getpid(), "up")
    down = record(dead_pid(), "down")
    orphan = state.connection_file_path(up.profile_dir, "orphan")
    write_json_atomic(orphan, {"key": "k", "ports": {}, "controller_pid": dead_pid()})
    assert main(["clean"]) == 0
    out = capsys.readouterr().out
    assert str(down.cluster_file) in out and str(orphan) in out
    assert up.cluster_file.exists() and not down.cluster_file.exists() and not orphan.exists()
    assert main(["clean", "--profile", "default"]) == 0
    assert "nothing to clean" in capsys.readouterr().out
