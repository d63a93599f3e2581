"""Listen/advertise and Curve settings travel from the command line and Cluster to the controller."""

from __future__ import annotations

import pytest

from ipcluster.cli import _cluster_from_args, build_parser
from ipcluster.cluster.launchers.local import LocalControllerLauncher
from ipcluster.cluster.launchers.sshcontroller import SSHControllerLauncher


def test_start_options_map_to_cluster_settings(ipdir):
    args = build_parser().parse_args(["start", "--ip", "0.0.0.0", "--location", "10.0.0.1", "--curve"])
    cluster = _cluster_from_args(args)
    assert (cluster.controller_ip, cluster.controller_location, cluster.enable_curve) == ("0.0.0.0", "10.0.0.1", True)
    plain = _cluster_from_args(build_parser().parse_args(["start"]))
    assert (plain.controller_ip, plain.controller_location, plain.enable_curve) == ("127.0.0.1", "", False)


def test_controller_command_line_carries_curve_settings():
    launcher = LocalControllerLauncher(profile_dir="/p", ip="0.0.0.0", location="10.0.0.1", enable_curve=True,
                                       curve_allowed_keys=["k" * 40])
    args = launcher.build_args()
    assert args[args.index("--ip") + 1] == "0.0.0.0" and args[args.index("--location") + 1] == "10.0.0.1"
    assert "--enable-curve" in args and f"--curve-allow={'k' * 40}" in args
    assert "--enable-curve" not in LocalControllerLauncher(profile_dir="/p").build_args()


def test_controller_app_reads_curve_options():
    from controller.app import IPController

    app = IPController()
    app.parse_command_line(["--enable-curve", "--curve-allow=" + "a" * 40, "--curve-allow=" + "b" * 40])
    assert app.enable_curve and app.curve_allowed_keys == ["a" * 40, "b" * 40]


def test_bad_allowed_key_is_named():
    import logging

    import zmq

    from controller.curve import start_curve
    from ipcluster.errors import IPClusterError

    ctx = zmq.Context()
    try:
        with pytest.raises(IPClusterError, match="not a 40-character Z85 public key: 'short'"):
            start_curve(ctx, ["short"], logging.getLogger("test"))
    finally:
        ctx.term()


def test_remote_controller_on_loopback_is_refused_before_anything_starts(tmp_path):
    import asyncio
    import shutil

    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client (apt-get install openssh-client)")

    from ipcluster.errors import LauncherError

    # 192.0.2.1 (TEST-NET-1) is never this machine; ssh -G resolves it without connecting
    launcher = SSHControllerLauncher(hostname="192.0.2.1", profile_dir=str(tmp_path), log_path=str(tmp_path / "c.log"))
    with pytest.raises(LauncherError, match="controller_ip.*controller_location"):
        asyncio.run(launcher.start())
    assert launcher.process is None


def test_engine_timeout_names_a_loopback_controller_when_engines_run_elsewhere(ipdir):
    from ipcluster.cluster.cluster import Cluster
    from ipcluster.cluster.launchers.sshengines import SSHEngineSetLauncher

    cluster = Cluster(profile="hint", shutdown_atexit=False)
    cluster.engines["0"] = SSHEngineSetLauncher(parent=cluster)
    assert "controller_ip" in cluster._loopback_hint() and "ssh" in cluster._loopback_hint()
    cluster.controller_ip = "0.0.0.0"
    assert cluster._loopback_hint() == ""


def test_registration_timeout_from_config_file_and_command_line(tmp_path):
    from engines.__main__ import parse_args, resolve_settings
    from engines.controller_watch import REGISTRATION_TIMEOUT

    conn = tmp_path / "security" / "c.json"
    conn.parent.mkdir()
    assert resolve_settings(parse_args(["--file", str(conn)])).registration_timeout == REGISTRATION_TIMEOUT
    (tmp_path / "ipengine_config.py").write_text("c.IPEngine.registration_timeout = 5.0\n")
    assert resolve_settings(parse_args(["--file", str(conn)])).registration_timeout == 5.0
    args = parse_args(["--file", str(conn), "--registration-timeout", "2"])
    assert resolve_settings(args).registration_timeout == 2.0
