"""A cluster whose engines run over ssh on 127.0.0.1:2222 (a real sshd)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import ipcluster
from ipcluster.cluster.launchers.ssh import SSHLauncher
from ipcluster.cluster.launchers.sshengines import SSHEngineSetLauncher
from ipcluster.errors import LauncherError
from tests.conftest import wait_for
from tests.launchers.ssh.conftest import SSH_ARGS, processes_mentioning

pytestmark = pytest.mark.timeout(120)


def _cluster(tmp_path, ssh_config, hosts, **kwargs) -> ipcluster.Cluster:
    ssh_config.SSHEngineSetLauncher.engines = hosts
    return ipcluster.Cluster(engine_launcher_class="ssh", profile_dir=str(tmp_path / "profile"),
                             config=ssh_config, cluster_id="ssh", **kwargs)


def _assert_nothing_left(tmp_path) -> None:
    wait_for(lambda: not processes_mentioning(str(tmp_path)), timeout=15, what="remote processes to end")
    leftovers = sorted(p.name for p in (tmp_path / "profile" / "security").glob("ssh-*"))
    assert not leftovers, f"remote connection files left: {leftovers}"


def test_engines_over_ssh_run_tasks_and_stop_cleanly(tmp_path, sshd, ssh_config):
    cluster = _cluster(tmp_path, ssh_config, {sshd: 2})
    try:
        rc = cluster.start_and_connect_sync()
        assert len(rc.ids) == 2
        pids = rc[:].apply_sync(os.getpid)
        # the engines were started by sshd, not by us
        for pid in pids:
            assert pid not in {p.pid for p in psutil.Process().children(recursive=True)}
        assert rc.load_balanced_view().map_sync(lambda x: x * x, range(10)) == [x * x for x in range(10)]
        rc[:].push({"a": 5}, block=True)
        rc[:].execute("b = a + 1", block=True)
        assert rc[:].pull("b", block=True) == [6, 6]
        # the remote output is streamed back into the local log
        launcher = cluster.engines["0"]
        assert isinstance(launcher, SSHEngineSetLauncher)
        wait_for(lambda: "registered as engine" in launcher.output_tail(50), what="the engines' log lines")
        # the connection file was shipped into a private file, never on a command line
        conn = json.loads(cluster.connection_file.read_text())
        remote_files = [f for sub in launcher.launchers.values() for f in sub.remote_files]
        assert remote_files and all(oct(os.stat(f).st_mode & 0o777) == "0o600" for f in remote_files)
        for proc in processes_mentioning(str(tmp_path)):
            assert conn["key"] not in " ".join(proc.cmdline())
        assert conn["key"] not in launcher.output_tail(1000)
    finally:
        cluster.stop_cluster_sync()
    _assert_nothing_left(tmp_path)


def test_interrupt_reaches_remote_engines(tmp_path, sshd, ssh_config):
    cluster = _cluster(tmp_path, ssh_config, {sshd: 1})
    try:
        rc = cluster.start_and_connect_sync()
        flag = tmp_path / "started"

        def sleeper(path: str) -> None:
            import time

            open(path, "w").close()
            time.sleep(60)

        ar = rc[0].apply_async(sleeper, str(flag))
        wait_for(flag.exists, timeout=20, what="the task to start")
        cluster.signal_engines(signal.SIGINT)
        with pytest.raises(ipcluster.RemoteError, match="KeyboardInterrupt"):
            ar.get(timeout=20)
        assert rc[0].apply_sync(lambda: 42) == 42  # the engine survived the interrupt
    finally:
        cluster.stop_cluster_sync()
    _assert_nothing_left(tmp_path)


def test_ipcluster_stop_from_another_process(tmp_path, sshd, ssh_config):
    ipdir = tmp_path / "ipython"
    pdir = ipdir / "profile_sshp"
    pdir.mkdir(parents=True)
    (pdir / "ipcluster_config.py").write_text(
        "c.Cluster.engine_launcher_class = 'ssh'\n"
        f"c.SSHEngineSetLauncher.engines = {{{sshd!r}: 2}}\n"
        f"c.SSHLauncher.remote_python = {sys.executable!r}\n"
        f"c.SSHLauncher.ssh_args = {SSH_ARGS!r}\n")
    env = {**os.environ, "IPYTHONDIR": str(ipdir)}
    cli = [sys.executable, "-c", "import sys, ipcluster.cli as c; sys.exit(c.main())"]
    started = subprocess.run([*cli, "start", "--profile", "sshp", "--daemonize", "--timeout", "60"],
                             env=env, capture_output=True, text=True, timeout=90)
    try:
        assert started.returncode == 0, started.stderr
        assert "2 engines" in started.stdout
        listed = subprocess.run([*cli, "list", "--json"], env=env, capture_output=True, text=True, timeout=30)
        (entry,) = [c for c in json.loads(listed.stdout) if c.get("profile") == "sshp"]
        assert entry["engine_sets"][0]["hosts"] == [sshd] and entry["engine_sets"][0]["launcher"] == "ssh"
        table = subprocess.run([*cli, "list", "--profile", "sshp"], env=env, capture_output=True, text=True,
                               timeout=30).stdout
        assert f"engines=on {sshd}" in table
        rc = ipcluster.Client(profile="sshp", profile_dir=str(pdir))
        try:
            rc.wait_for_engines(2, timeout=30)
            assert rc.load_balanced_view().apply_sync(lambda: 7) == 7
        finally:
            rc.close()
    finally:
        stopped = subprocess.run([*cli, "stop", "--profile", "sshp"], env=env, capture_output=True, text=True,
                                 timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert entry
    wait_for(lambda: not processes_mentioning(str(pdir)), timeout=15, what="remote processes to end")
    assert not list((pdir / "security").glob("ssh-*"))


class _StubbornRemote(SSHLauncher):
    """A remote process that ignores SIGTERM, to check that stop() goes on to SIGKILL."""

    kind = "engines"

    def remote_script(self) -> str:
        return ("trap '' TERM\n"
                'echo "ipcluster-ssh: started pid $$ on $(hostname)"\n'
                f"exec {sys.executable} -c 'import time; time.sleep(300)' ipcluster-stubborn-{self.token}\n")


def test_stop_escalates_from_terminate_to_kill(tmp_path, sshd, ssh_config):
    import asyncio

    launcher = _StubbornRemote(config=ssh_config, hostname=sshd, log_path=str(tmp_path / "stubborn.log"),
                               profile_dir=str(tmp_path))

    async def run() -> tuple[float, int | None]:
        await launcher.start()
        assert launcher.running and launcher.remote_pid
        wait_for(lambda: processes_mentioning(f"ipcluster-stubborn-{launcher.token}"), what="the remote process")
        t0 = time.monotonic()
        rc = await launcher.stop(timeout=1.0)
        return time.monotonic() - t0, rc

    elapsed, rc = asyncio.run(run())
    assert not launcher.running
    assert elapsed < 10
    assert not processes_mentioning(f"ipcluster-stubborn-{launcher.token}")
    assert rc != 0  # killed, not a clean exit


def test_host_that_refuses_gives_a_clear_error_in_bounded_time(tmp_path, sshd, ssh_config):
    cluster = _cluster(tmp_path, ssh_config, {"127.0.0.1:2223": 1})
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_cluster_sync()
    assert time.monotonic() - t0 < 20
    text = str(info.value)
    assert "127.0.0.1:2223" in text and "ssh" in text
    assert "refused" in text.lower()
    assert not cluster.running
    _assert_nothing_left(tmp_path)


def test_wrong_remote_python_gives_a_clear_error(tmp_path, sshd, ssh_config):
    ssh_config.SSHLauncher.remote_python = "/nonexistent/bin/python3"
    cluster = _cluster(tmp_path, ssh_config, {sshd: 1})
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_cluster_sync()
    assert time.monotonic() - t0 < 20
    text = str(info.value)
    assert sshd in text
    assert "/nonexistent/bin/python3" in text
    assert not cluster.running
    _assert_nothing_left(tmp_path)


def test_python_without_ipcluster_gives_a_clear_error(tmp_path, sshd, ssh_config):
    # /usr/bin/python3 is the system Python, without ipcluster installed
    if not os.path.exists("/usr/bin/python3") or os.path.realpath("/usr/bin/python3") == os.path.realpath(
            sys.executable):
        pytest.skip("needs a second Python without ipcluster at /usr/bin/python3")
    if subprocess.run(["/usr/bin/python3", "-P", "-c", "import engines"], capture_output=True, cwd="/").returncode == 0:
        pytest.skip("/usr/bin/python3 has ipcluster installed")
    ssh_config.SSHLauncher.remote_python = "/usr/bin/python3"
    cluster = _cluster(tmp_path, ssh_config, {sshd: 1})
    with pytest.raises(LauncherError) as info:
        cluster.start_cluster_sync()
    assert "cannot import the 'engines' package" in str(info.value)
    assert sshd in str(info.value)
    _assert_nothing_left(tmp_path)


def test_bad_engines_setting_is_named(tmp_path, sshd, ssh_config):
    cluster = _cluster(tmp_path, ssh_config, {sshd: 0})
    with pytest.raises(LauncherError, match="n must be at least 1"):
        cluster.start_cluster_sync()
    cluster = _cluster(tmp_path, ssh_config, {})
    with pytest.raises(LauncherError, match="SSHEngineSetLauncher.engines"):
        cluster.start_cluster_sync()
    _assert_nothing_left(tmp_path)


def test_host_aliases_from_an_ssh_config_file_are_used(tmp_path, sshd, ssh_config):
    """Names are resolved by ssh itself (``-F`` here; ``~/.ssh/config`` by default)."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host ipcluster-test-alias\n  HostName 127.0.0.1\n  Port 2222\n  User root\n"
                   "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    ssh_config.SSHLauncher.ssh_args = ["-F", str(cfg)]
    # the alias resolves to this machine, so a controller on 127.0.0.1 is fine for it
    cluster = _cluster(tmp_path, ssh_config, {"ipcluster-test-alias": 1})
    try:
        rc = cluster.start_and_connect_sync()
        assert rc[0].apply_sync(lambda: 6 * 7) == 42
    finally:
        cluster.stop_cluster_sync()
    _assert_nothing_left(tmp_path)
