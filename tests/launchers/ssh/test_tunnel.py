"""``Client(sshserver=...)``: reach a controller that listens only on another host's loopback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ipcluster
from ipcluster.errors import ControllerError
from tests.conftest import wait_for
from tests.launchers.ssh.conftest import NAMESPACES, SSH_ARGS, namespace_pids

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster_on_h1(tmp_path, netns_hosts):
    """A controller and 2 engines in h1's namespace, listening on h1's own 127.0.0.1 only."""
    pdir = tmp_path / "profile"
    conn = pdir / "security" / "ipcluster-tun-connection.json"
    ns = ["ip", "netns", "exec", NAMESPACES["h1"]]
    log = open(tmp_path / "h1.log", "ab")
    procs = [subprocess.Popen([*ns, sys.executable, "-P", "-m", "controller", "--profile-dir", str(pdir),
                               "--cluster-id", "tun", "--ip", "127.0.0.1"],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)]
    try:
        wait_for(conn.exists, timeout=20, watch=procs, what="the controller's connection file")
        procs.append(subprocess.Popen([*ns, sys.executable, "-P", "-m", "engines", "--file", str(conn), "-n", "2"],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        yield conn
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        wait_for(lambda: not namespace_pids(NAMESPACES["h1"]), timeout=15, what="h1 to be idle")


def test_client_tunnels_through_ssh_to_a_loopback_controller(cluster_on_h1, netns_hosts):
    # without the tunnel, 127.0.0.1 here is not h1's loopback: nobody answers
    with pytest.raises(ControllerError):
        ipcluster.Client(url_file=cluster_on_h1, timeout=1)
    rc = ipcluster.Client(url_file=cluster_on_h1, sshserver=f"root@{netns_hosts['h1']}", ssh_args=SSH_ARGS,
                          sshkey="~/.ssh/id_ed25519", timeout=20)
    tunnel = rc._tunnel
    try:
        rc.wait_for_engines(2, timeout=30)
        here = os.readlink("/proc/self/ns/net")
        where = rc[:].apply_sync(lambda: __import__("os").readlink("/proc/self/ns/net"))
        assert len(set(where)) == 1 and where[0] != here  # the engines run in h1's network namespace
        assert rc.load_balanced_view().map_sync(lambda x: x + 100, range(5)) == [100, 101, 102, 103, 104]
        assert tunnel.running and rc.connection_info.location == "127.0.0.1"
        assert set(rc.connection_info.ports.values()) == set(tunnel.forwards.values())
    finally:
        rc.close()
    assert not tunnel.running  # torn down with the client
    ssh_pid = tunnel.popen.pid
    wait_for(lambda: not _alive(ssh_pid), timeout=10, what="the tunnel's ssh to exit")


def test_tunnel_to_a_refusing_server_names_it(cluster_on_h1):
    with pytest.raises(ControllerError, match="through 127.0.0.1:2223"):
        ipcluster.Client(url_file=cluster_on_h1, sshserver="127.0.0.1:2223", ssh_args=SSH_ARGS, timeout=5)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
