"""restart_engines and interrupt grace reach the engine supervisor's command line (no processes)."""

from __future__ import annotations

import pytest

from ipcluster.cli import _cluster_from_args, build_parser
from ipcluster.cluster.launchers.local import LocalEngineSetLauncher


def test_ipcluster_start_restart_engines_sets_the_cluster_trait(ipython_dir):
    args = build_parser().parse_args(["start", "--restart-engines", "-n", "2"])
    assert _cluster_from_args(args).restart_engines is True
    args = build_parser().parse_args(["start", "-n", "2"])
    assert _cluster_from_args(args).restart_engines is False


def test_engine_launcher_passes_restart_engines(tmp_path):
    kw = dict(profile_dir=str(tmp_path), cluster_id="", log_path=str(tmp_path / "e.log"),
              connection_file=str(tmp_path / "c.json"), n=2)
    assert "--restart-engines" in LocalEngineSetLauncher(restart_engines=True, **kw).build_args()
    assert "--restart-engines" not in LocalEngineSetLauncher(**kw).build_args()


def test_engine_command_line_options():
    from engines.__main__ import parse_args

    args = parse_args(["--file", "c.json", "-n", "2", "--restart-engines", "--interrupt-grace", "0.5"])
    assert args.restart_engines is True and args.interrupt_grace == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--file", "c.json", "-n", "2", "--interrupt-grace", "-1"])


def test_ssh_engine_sets_pass_restart_engines_to_each_host():
    from ipcluster.cluster.launchers.sshengines import SSHEngineSetLauncher

    common = dict(engines={"localhost": 2}, connection_file="/c.json", log_path="/tmp/e.log")
    on = SSHEngineSetLauncher(restart_engines=True, engine_args=["--log-level", "DEBUG"], **common)
    assert on._options_for({"n": 2})["engine_args"] == ["--restart-engines", "--log-level", "DEBUG"]
    assert "--restart-engines" not in SSHEngineSetLauncher(**common)._options_for({"n": 2})["engine_args"]
