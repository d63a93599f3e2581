"""The ``ipcluster`` command end to end: start (foreground and --daemonize), list, stop, clean.

Each test runs the command in subprocesses with a private ``$IPYTHONDIR``; the ``cli`` fixture
remembers every pid it saw and kills whatever is left at the end, failing the test if anything was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import alive, kill_all, wait_for


class CLI:
    def __init__(self, ipdir: Path, cwd: Path):
        self.env = dict(os.environ, IPYTHONDIR=str(ipdir), PYTHONUNBUFFERED="1")
        self.cwd = cwd
        self.procs: list[subprocess.Popen] = []
        self.pids: set[int] = set()

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ipcluster.cli", *args]

    def run(self, *args: str, timeout: float = 40) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env, cwd=self.cwd, capture_output=True,
                              text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv(*args), env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def clusters(self) -> list[dict]:
        out = self.run("list", "--json")
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        for c in listed:
            self.pids |= cluster_pids(c)
        return listed

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.clusters()
        self.run("stop", "--all")
        leftover = kill_all(self.pids)
        assert not leftover, f"processes left behind: {sorted(leftover)}"


def cluster_pids(summary: dict) -> set[int]:
    """Controller, supervisor and engine pids of a ``list --json`` entry."""
    pids = {summary["controller"]["pid"]} if summary["controller"] else set()
    pids |= {es["pid"] for es in summary["engine_sets"] if es["pid"]}
    for pid in list(pids):
        try:
            pids.update(p.pid for p in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.fixture
def ipdir(tmp_path):
    d = tmp_path / "ipython"
    d.mkdir()
    return d


@pytest.fixture
def cli(ipdir, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    c = CLI(ipdir, work)
    yield c
    c.cleanup()


def test_version(cli):
    out = cli.run("--version")
    assert out.returncode == 0 and "ipcluster" in out.stdout


def test_bad_option_is_a_usage_error(cli):
    out = cli.run("start", "--no-such-option")
    assert out.returncode == 2 and "usage:" in out.stderr


def test_daemonize_list_stop(cli, ipdir):
    # run from a directory whose controller.py / engines.py would break the cluster if imported
    for name in ("controller", "engines"):
        (cli.cwd / f"{name}.py").write_text(f"raise RuntimeError('the user {name}.py was imported')\n")
    out = cli.run("start", "-n", "2", "--daemonize", "--cluster-id", "d1")
    assert out.returncode == 0, out.stderr
    assert "2 engines" in out.stdout and "d1" in out.stdout

    [summary] = cli.clusters()
    assert summary["key"] == "default:d1" and summary["state"] == "running" and summary["n"] == 2
    pids = cluster_pids(summary)
    assert len(pids) == 4 and all(alive(pid) for pid in pids)  # controller, supervisor, 2 engines

    table = cli.run("list")
    assert table.returncode == 0 and "d1" in table.stdout and "running" in table.stdout

    out = cli.run("stop", "--cluster-id", "d1")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: not any(alive(pid) for pid in pids), what="the cluster's processes to exit")
    assert cli.clusters() == []
    assert list((ipdir / "profile_default" / "security").iterdir()) == []


def test_already_running(cli):
    assert cli.run("start", "-n", "1", "--daemonize").returncode == 0
    cli.clusters()
    out = cli.run("start", "-n", "1", "--daemonize")
    assert out.returncode == 1
    assert "already running" in out.stderr and "ipcluster stop" in out.stderr
    [summary] = cli.clusters()
    assert summary["state"] == "running"
    assert cli.run("stop").returncode == 0


def test_foreground_stops_on_sigint(cli, ipdir):
    proc = cli.popen("start", "-n", "2", "--profile", "fg")
    line = proc.stdout.readline()
    assert "2 engines" in line, proc.stderr.read() if proc.poll() is not None else line
    [summary] = cli.clusters()
    pids = cluster_pids(summary)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert not any(alive(pid) for pid in pids)
    assert list((ipdir / "profile_fg" / "security").iterdir()) == []


def test_foreground_ends_when_stopped_elsewhere(cli):
    proc = cli.popen("start", "-n", "1", "--cluster-id", "fg2")
    assert "1 engine" in proc.stdout.readline()
    cli.clusters()
    assert cli.run("stop", "--cluster-id", "fg2").returncode == 0
    assert proc.wait(20) == 0
    assert cli.clusters() == []


def test_engines_failing_reported_with_their_output(cli, ipdir):
    pdir = ipdir / "profile_broken"
    pdir.mkdir()
    (pdir / "ipcluster_config.py").write_text("c.LocalEngineSetLauncher.engine_args = ['--no-such-option']\n")
    out = cli.run("start", "-n", "2", "--profile", "broken", "--daemonize")
    assert out.returncode == 1
    assert "exit code 2" in out.stderr and "--no-such-option" in out.stderr
    assert cli.clusters() == []


def test_stop_not_found(cli):
    out = cli.run("stop", "--cluster-id", "nope")
    assert out.returncode == 1 and "no cluster" in out.stderr


def test_clean_after_a_crash(cli, ipdir):
    assert cli.run("start", "-n", "1", "--daemonize", "--cluster-id", "crash").returncode == 0
    [summary] = cli.clusters()
    pids = cluster_pids(summary)
    for pid in pids:  # a crash: everything killed, files left behind
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in pids), what="the killed processes to go")
    [summary] = cli.clusters()
    assert summary["state"] == "stopped"
    [conn] = (ipdir / "profile_default" / "security").glob("ipcluster-crash-connection.json")
    ipc_dir = json.loads(conn.read_text())["ipc_dir"]
    assert ipc_dir and os.path.isdir(ipc_dir)  # the killed controller could not remove it
    out = cli.run("clean")
    assert out.returncode == 0
    assert "ipcluster-crash.json" in out.stdout and "ipcluster-crash-connection.json" in out.stdout
    assert cli.clusters() == []
    assert not os.path.exists(ipc_dir)


def test_the_installed_ipcluster_command_is_this_one(tmp_path):
    """ipyparallel (a benchmark peer) installs a command of the same name: ours must be the one
    installed beside this Python (pip installs a package's dependencies first, so ours wins)."""
    import shutil

    exe = Path(sys.executable).parent / "ipcluster"
    if not exe.exists():
        found = shutil.which("ipcluster")
        if found is None:
            pytest.skip("no ipcluster command installed (the package is used from a source tree)")
        exe = Path(found)
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, IPYTHONDIR=str(tmp_path)))
    import ipcluster

    assert out.returncode == 0, out.stderr
    assert ipcluster.__version__ in out.stdout + out.stderr, (exe, out.stdout, out.stderr)
    assert "ipyparallel" not in exe.read_text(errors="replace")
