"""The SSH launchers' pure helpers: host specs, ssh command lines, remote scripts."""

from __future__ import annotations

import subprocess

import pytest

from ipcluster.cluster.launchers import sshcmd
from ipcluster.cluster.launchers.sshcmd import SSHTarget, parse_target


@pytest.mark.parametrize("spec, target", [
    ("node1", SSHTarget("node1")),
    ("me@node1", SSHTarget("node1", user="me")),
    ("me@node1:2222", SSHTarget("node1", user="me", port=2222)),
    ("127.0.0.1:22", SSHTarget("127.0.0.1", port=22)),
    ("[::1]:2222", SSHTarget("::1", port=2222)),
    ("fe80::1", SSHTarget("fe80::1")),
    ("a.b@host", SSHTarget("host", user="a.b")),
])
def test_parse_target(spec, target):
    assert parse_target(spec) == target
    assert parse_target(str(target)) == target


@pytest.mark.parametrize("spec, problem", [
    ("", "empty"), ("@host", "empty user"), ("host:0", "port"), ("host:http", "port"), ("[::1", "unbalanced"),
    ("host:70000", "port"), ("two words", "no host"),
])
def test_bad_targets_are_named(spec, problem):
    with pytest.raises(ValueError, match=problem):
        parse_target(spec)


def test_user_options_come_first_so_they_win():
    argv = sshcmd.ssh_command(parse_target("me@h:2200"), ["ssh"], ["-o", "BatchMode=no"], 7.4, "true")
    assert argv[:3] == ["ssh", "-o", "BatchMode=no"]
    assert argv.index("BatchMode=no") < argv.index("BatchMode=yes")
    assert "ConnectTimeout=7" in argv
    assert argv[-3:] == ["2200", "me@h", "true"]


def test_resolved_config_is_parsed():
    assert sshcmd.parse_resolved("user root\nhostname 10.0.0.5\nport 2222\n") == ("10.0.0.5", 2222)


def test_engine_script_keeps_the_secret_off_the_command_line(tmp_path):
    script = sshcmd.engine_script("/opt/py y/bin/python", "/home/me/prof", "/home/me/prof/security/c.json", 3,
                                  ["--log-level", "DEBUG"])
    assert "cat > /home/me/prof/security/c.json" in script
    assert "umask 077" in script.splitlines()[0]
    assert "'/opt/py y/bin/python' -P -m engines --file /home/me/prof/security/c.json -n 3" in script
    # the script is valid sh, and what the login shell runs is a single quoted command
    wrapped = sshcmd.sh_wrap(script)
    assert wrapped.startswith("exec /bin/sh -c '")
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_failed_python_check_stops_the_script_with_a_message(tmp_path):
    script = sshcmd.engine_script("/nonexistent/python", str(tmp_path), str(tmp_path / "security" / "c.json"), 1)
    done = subprocess.run(["sh", "-c", script], input=b"{}", capture_output=True, timeout=30)
    assert done.returncode == 127
    assert b"remote_python /nonexistent/python cannot import the 'engines' package" in done.stderr
    assert sshcmd.STARTED_MARK.encode() not in done.stdout
    written = tmp_path / "security" / "c.json"
    assert written.read_bytes() == b"{}"
    assert written.stat().st_mode & 0o777 == 0o600


def test_started_pid():
    assert sshcmd.started_pid("noise\nipcluster-ssh: started pid 4242 on h1\nmore") == 4242
    assert sshcmd.started_pid("ssh: connect to host x port 22: Connection refused") is None


def test_loopback_and_this_host():
    assert sshcmd.is_loopback("127.0.0.1") and sshcmd.is_loopback("localhost") and sshcmd.is_loopback("::1")
    assert not sshcmd.is_loopback("10.200.0.2")
    assert sshcmd.is_this_host("127.0.0.5")
    assert not sshcmd.is_this_host("192.0.2.1")  # TEST-NET-1: never an address of this machine


def test_home_relative_remote_paths_expand_on_the_remote_host(tmp_path):
    assert sshcmd.quote_path("~/prof dir/x") == '"$HOME"/\'prof dir/x\''
    assert sshcmd.quote_path("/abs/$x") == "'/abs/$x'"
    script = sshcmd.engine_script("~/venv/bin/python", "~/p", "~/p/security/c.json", 1)
    done = subprocess.run(["sh", "-c", script], input=b"{}", capture_output=True, timeout=30,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert (tmp_path / "p" / "security" / "c.json").read_bytes() == b"{}"
    assert b"remote_python ~/venv/bin/python cannot import" in done.stderr
