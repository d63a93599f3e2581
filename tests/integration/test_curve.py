"""CurveZMQ: an encrypted cluster works; keys not on the allow-list (or no Curve at all) cannot connect."""

from __future__ import annotations

import json
import os
import time

import pytest
import zmq

import ipcluster
from ipcluster.errors import ControllerError
from ipcluster.protocol import curve

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE support")]


@pytest.fixture(scope="module")
def own_keys() -> tuple[str, str]:
    return curve.new_keypair()


@pytest.fixture(scope="module")
def curve_cluster(tmp_path_factory, own_keys):
    cluster = ipcluster.Cluster(n=2, profile_dir=str(tmp_path_factory.mktemp("profile")), enable_curve=True,
                                curve_allowed_keys=[own_keys[0]])
    cluster.start_and_connect_sync()
    try:
        yield cluster
    finally:
        cluster.stop_cluster_sync()


def test_encrypted_cluster_runs_direct_and_load_balanced_work(curve_cluster):
    info = json.loads(curve_cluster.connection_file.read_text())
    assert all(curve.valid_key(info[k]) for k in ("curve_serverkey", "curve_publickey", "curve_secretkey"))
    rc = ipcluster.Client(url_file=curve_cluster.connection_file)
    try:
        rc.wait_for_engines(2, timeout=30)
        assert sorted(rc[:].apply_sync(os.getpid)) == sorted(set(rc[:].apply_sync(os.getpid)))
        assert rc.load_balanced_view().map_sync(lambda x: x * 3, range(8)) == [x * 3 for x in range(8)]
        rc[:].push({"blob": b"x" * 100_000}, block=True)
        assert rc[:].pull("blob", block=True) == [b"x" * 100_000] * 2
        # every connection is a CURVE one, and nothing takes the unencrypted same-host route
        assert all(ch.sock.mechanism == zmq.CURVE for name, ch in rc._io.channels.items()
                   if name in ("hub", "mux", "control"))
        assert not rc._direct_urls
    finally:
        rc.close()


def test_a_key_on_the_allow_list_connects(curve_cluster, own_keys):
    public, secret = own_keys
    rc = ipcluster.Client(url_file=curve_cluster.connection_file, curve_publickey=public, curve_secretkey=secret)
    try:
        rc.wait_for_engines(2, timeout=30)
        assert rc[0].apply_sync(lambda: "allowed") == "allowed"
    finally:
        rc.close()


def test_an_unknown_key_is_refused_with_a_clear_error(curve_cluster):
    _, secret = curve.new_keypair()
    t0 = time.monotonic()
    with pytest.raises(ControllerError, match="refused this client.s CurveZMQ key"):
        ipcluster.Client(url_file=curve_cluster.connection_file, curve_secretkey=secret, timeout=10)
    assert time.monotonic() - t0 < 10


def test_a_client_without_curve_gets_nothing(curve_cluster, tmp_path):
    info = json.loads(curve_cluster.connection_file.read_text())
    for k in ("curve_serverkey", "curve_publickey", "curve_secretkey"):
        info[k] = ""
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(info))
    with pytest.raises(ControllerError, match="refused the connection in the security handshake"):
        ipcluster.Client(url_file=plain, timeout=10)


def test_a_raw_socket_with_an_unknown_key_gets_no_reply(curve_cluster):
    """Below the client: the controller's ZAP handler refuses the handshake, nothing is delivered."""
    info = json.loads(curve_cluster.connection_file.read_text())
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        public, secret = curve.new_keypair()
        sock.curve_serverkey = info["curve_serverkey"].encode()
        sock.curve_publickey, sock.curve_secretkey = public.encode(), secret.encode()
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(f"tcp://{info['location']}:{info['ports']['hub']}")
        sock.send_multipart([b"", b"hello"])
        assert monitor.poll(10_000), "no handshake event within 10 s"
        from zmq.utils.monitor import recv_monitor_message

        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert not sock.poll(500)
        monitor.close(linger=0)
        sock.close()
    finally:
        ctx.term()


def test_curve_setting_reaches_the_controller_from_the_command_line(curve_cluster):
    from ipcluster.cluster.launchers.local import LocalControllerLauncher

    launcher = curve_cluster.controller
    assert isinstance(launcher, LocalControllerLauncher)
    assert "--enable-curve" in launcher.args
