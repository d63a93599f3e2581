"""Real OpenSSH servers for the SSH launcher tests.

* ``sshd``: a private sshd on 127.0.0.1:2222 that accepts root's default key (``.ci/sshd-up.sh``).
  An sshd already answering there (CI starts one) is used as it is; otherwise the fixture starts one
  when it can (root, ``/usr/sbin/sshd`` installed) and stops it at the end of the session.
* ``netns_hosts``: two simulated hosts, network namespaces ``ipp-h1`` / ``ipp-h2`` with their own
  hostnames, addresses 10.200.0.2 / 10.200.0.3 and sshd on port 22; this namespace is 10.200.0.1
  (``.ci/netns-up.sh``).  Files and pids are shared with them.

Without the means to run them the tests skip, saying what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import cloudpickle
import psutil
import pytest
from traitlets.config import Config

CI = Path(__file__).resolve().parents[3] / ".ci"
SSHD_DIR = os.environ.get("SSHD_DIR", "/tmp/ci-sshd")
SSHD = "127.0.0.1:2222"
HOSTS = {"h1": "10.200.0.2", "h2": "10.200.0.3"}
NAMESPACES = {"h1": "ipp-h1", "h2": "ipp-h2"}
#: Test hosts get fresh host keys: do not check or record them.
SSH_ARGS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]


def ssh_works(host: str, port: int = 22) -> bool:
    """Can we log in to *host* by key, non-interactively, right now?"""
    try:
        done = subprocess.run(["ssh", *SSH_ARGS, "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-p", str(port),
                               host, "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _run_script(name: str) -> None:
    subprocess.run(["bash", str(CI / name)], stdin=subprocess.DEVNULL, check=True, capture_output=True,
                   timeout=120, env={**os.environ, "SSHD_DIR": SSHD_DIR})


@pytest.fixture(scope="session")
def sshd() -> Iterator[str]:
    """``"127.0.0.1:2222"``: an sshd there that lets us in."""
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client (apt-get install openssh-client)")
    if ssh_works("127.0.0.1", 2222):
        yield SSHD
        return
    if not os.path.exists("/usr/sbin/sshd") or os.geteuid() != 0:
        pytest.skip("no sshd on 127.0.0.1:2222 and cannot start one (needs root and openssh-server; "
                    "CI starts it with .ci/sshd-up.sh)")
    _run_script("sshd-up.sh")
    try:
        if not ssh_works("127.0.0.1", 2222):
            pytest.fail(f"started sshd on 127.0.0.1:2222 but cannot log in (see {SSHD_DIR}/sshd.log)")
        yield SSHD
    finally:
        _run_script("sshd-down.sh")


@pytest.fixture(scope="session")
def netns_hosts(sshd) -> Iterator[dict[str, str]]:
    """``{"h1": "10.200.0.2", "h2": "10.200.0.3"}``: two simulated hosts with their own sshd."""
    if all(ssh_works(addr) for addr in HOSTS.values()):
        yield dict(HOSTS)
        return
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("no simulated hosts 10.200.0.2/3 and cannot make them (needs root, iproute2 and "
                    "util-linux; CI makes them with .ci/netns-up.sh)")
    _run_script("netns-up.sh")
    try:
        bad = [addr for addr in HOSTS.values() if not ssh_works(addr)]
        if bad:
            pytest.fail(f"made network namespaces but cannot log in to {bad}")
        yield dict(HOSTS)
    finally:
        _run_script("netns-down.sh")


@pytest.fixture(autouse=True)
def _ship_test_module_by_value(request):
    """Remote engines cannot import test modules: send their functions by value."""
    try:
        cloudpickle.register_pickle_by_value(request.module)
    except ValueError:
        pass  # already registered


@pytest.fixture
def ssh_config() -> Config:
    """Config for SSH launchers reaching the test hosts with this Python."""
    c = Config()
    c.SSHLauncher.ssh_args = list(SSH_ARGS)
    c.SSHLauncher.remote_python = sys.executable
    return c


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line mentions *text* (e.g. a test's profile directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(text in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def namespace_pids(ns: str) -> set[int]:
    """Live processes in network namespace *ns*, its sshd listener excluded."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10).stdout
    listener = Path(SSHD_DIR, f"sshd-{ns}.pid")
    skip = {int(listener.read_text())} if listener.exists() else set()
    pids = set()
    for word in out.split():
        pid = int(word)
        try:
            if pid not in skip and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                pids.add(pid)
        except psutil.NoSuchProcess:
            pass
    return pids
