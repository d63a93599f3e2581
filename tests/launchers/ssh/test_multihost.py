"""Engines (and a controller) on simulated hosts h1/h2: their own network namespaces, addresses and sshd."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

import ipcluster
from ipcluster.errors import LauncherError
from tests.conftest import wait_for
from tests.launchers.ssh.conftest import NAMESPACES, namespace_pids, processes_mentioning

pytestmark = pytest.mark.timeout(120)


def _assert_nothing_left(tmp_path) -> None:
    wait_for(lambda: not processes_mentioning(str(tmp_path)), timeout=15, what="remote processes to end")
    wait_for(lambda: not any(namespace_pids(ns) for ns in NAMESPACES.values()), timeout=15,
             what="the simulated hosts to be idle")
    assert not list((tmp_path / "profile" / "security").glob("ssh-*"))


def test_engines_on_two_hosts_reach_a_controller_on_the_bridge(tmp_path, netns_hosts, ssh_config):
    ssh_config.SSHEngineSetLauncher.engines = {netns_hosts["h1"]: 1, netns_hosts["h2"]: {"n": 2}}
    cluster = ipcluster.Cluster(engine_launcher_class="ssh", profile_dir=str(tmp_path / "profile"),
                                config=ssh_config, controller_ip="10.200.0.1", engine_timeout=60)
    try:
        rc = cluster.start_and_connect_sync()
        hosts = rc[:].apply_sync(socket.gethostname)
        assert sorted(hosts) == ["h1", "h2", "h2"]
        lview = rc.load_balanced_view()
        assert sorted(set(lview.map_sync(lambda _: __import__("socket").gethostname(), range(30)))) <= ["h1", "h2"]
        assert lview.map_sync(lambda x: x + 1, range(20)) == list(range(1, 21))
        assert json.loads(cluster.connection_file.read_text())["location"] == "10.200.0.1"
    finally:
        cluster.stop_cluster_sync()
    _assert_nothing_left(tmp_path)


def test_loopback_controller_with_remote_engines_says_what_to_set(tmp_path, netns_hosts, ssh_config):
    ssh_config.SSHEngineSetLauncher.engines = {netns_hosts["h1"]: 1}
    cluster = ipcluster.Cluster(engine_launcher_class="ssh", profile_dir=str(tmp_path / "profile"),
                                config=ssh_config)  # controller_ip defaults to 127.0.0.1
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_cluster_sync()
    assert time.monotonic() - t0 < 20
    text = str(info.value)
    assert netns_hosts["h1"] in text and "127.0.0.1" in text
    assert "controller_ip" in text and "controller_location" in text
    assert not cluster.running
    _assert_nothing_left(tmp_path)


def test_advertised_loopback_is_refused_too(tmp_path, netns_hosts, ssh_config):
    ssh_config.SSHEngineSetLauncher.engines = {netns_hosts["h2"]: 1}
    cluster = ipcluster.Cluster(engine_launcher_class="ssh", profile_dir=str(tmp_path / "profile"),
                                config=ssh_config, controller_ip="0.0.0.0", controller_location="127.0.0.1")
    with pytest.raises(LauncherError, match="advertises 127.0.0.1"):
        cluster.start_cluster_sync()
    _assert_nothing_left(tmp_path)


def test_controller_and_engines_on_remote_hosts(tmp_path, netns_hosts, ssh_config):
    ssh_config.SSHControllerLauncher.controller_hostname = netns_hosts["h1"]
    ssh_config.SSHEngineSetLauncher.engines = {netns_hosts["h2"]: 2}
    cluster = ipcluster.Cluster(controller_launcher_class="ssh", engine_launcher_class="ssh",
                                profile_dir=str(tmp_path / "profile"), config=ssh_config,
                                controller_ip="10.200.0.2", engine_timeout=60)
    try:
        rc = cluster.start_and_connect_sync()
        assert rc[:].apply_sync(socket.gethostname) == ["h2", "h2"]
        assert rc.load_balanced_view().apply_sync(lambda: 3 * 7) == 21
        info = json.loads(cluster.connection_file.read_text())
        assert info["location"] == "10.200.0.2"
        pid = info["controller_pid"]
        # the controller runs in h1's network namespace
        ns_of = os.readlink(f"/proc/{pid}/ns/net")
        assert ns_of != os.readlink("/proc/self/ns/net")
    finally:
        cluster.stop_cluster_sync()
    _assert_nothing_left(tmp_path)
    assert not cluster.connection_file.exists()


def test_engine_that_cannot_reach_the_controller_names_the_address(tmp_path, netns_hosts):
    """A controller bound to this machine's loopback, advertised on the bridge: h1 cannot reach it.

    The engine gives up after its registration timeout with a message naming the address.
    """
    pdir = tmp_path / "profile"
    conn = pdir / "security" / "ipcluster-unreach-connection.json"
    controller = subprocess.Popen(
        [sys.executable, "-P", "-m", "controller", "--profile-dir", str(pdir), "--cluster-id", "unreach",
         "--ip", "127.0.0.1", "--location", "10.200.0.1"], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(conn.exists, timeout=20, watch=[controller], what="the connection file")
        engine = subprocess.run(
            ["ip", "netns", "exec", NAMESPACES["h1"], sys.executable, "-P", "-m", "engines", "--file", str(conn),
             "--registration-timeout", "3"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    finally:
        controller.terminate()
        controller.wait(10)
    assert engine.returncode != 0
    assert "tcp://10.200.0.1:" in engine.stderr
    assert "registration" in engine.stderr and "within 3 s" in engine.stderr


def test_encrypted_cluster_across_hosts(tmp_path, netns_hosts, ssh_config):
    """The recommended set-up for a network: listen everywhere, advertise the bridge, Curve on."""
    ssh_config.SSHEngineSetLauncher.engines = {netns_hosts["h1"]: 1, netns_hosts["h2"]: 1}
    cluster = ipcluster.Cluster(engine_launcher_class="ssh", profile_dir=str(tmp_path / "profile"),
                                config=ssh_config, controller_ip="0.0.0.0", controller_location="10.200.0.1",
                                enable_curve=True, engine_timeout=60)
    try:
        rc = cluster.start_and_connect_sync()
        assert sorted(rc[:].apply_sync(socket.gethostname)) == ["h1", "h2"]
        assert rc.load_balanced_view().map_sync(lambda x: -x, range(6)) == [0, -1, -2, -3, -4, -5]
        info = json.loads(cluster.connection_file.read_text())
        assert info["location"] == "10.200.0.1" and info["curve_serverkey"]
    finally:
        cluster.stop_cluster_sync()
    _assert_nothing_left(tmp_path)


def test_host_that_does_not_answer_fails_within_the_connect_timeout(tmp_path, netns_hosts, ssh_config):
    ssh_config.SSHLauncher.connect_timeout = 2.0
    ssh_config.SSHEngineSetLauncher.engines = {"10.200.0.99": 1, netns_hosts["h1"]: 1}  # nobody has .99
    cluster = ipcluster.Cluster(engine_launcher_class="ssh", profile_dir=str(tmp_path / "profile"),
                                config=ssh_config, controller_ip="10.200.0.1")
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_cluster_sync()
    assert time.monotonic() - t0 < 15
    assert "ssh to 10.200.0.99 failed" in str(info.value)
    assert not cluster.running
    _assert_nothing_left(tmp_path)  # the engines that did start on h1 were stopped again


def test_loopback_check_follows_ssh_config_aliases(tmp_path, netns_hosts, ssh_config):
    """An alias whose HostName is another host counts as remote, whatever its name looks like."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host localhost-but-not-really\n  HostName {netns_hosts['h1']}\n"
                   "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    ssh_config.SSHLauncher.ssh_args = ["-F", str(cfg)]
    ssh_config.SSHEngineSetLauncher.engines = {"localhost-but-not-really": 1}
    cluster = ipcluster.Cluster(engine_launcher_class="ssh", profile_dir=str(tmp_path / "profile"),
                                config=ssh_config)
    with pytest.raises(LauncherError, match="cannot reach the controller"):
        cluster.start_cluster_sync()
    _assert_nothing_left(tmp_path)
