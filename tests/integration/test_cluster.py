"""``ipcluster.Cluster`` end to end: a real controller and engines on 127.0.0.1.

Every test uses a private ``$IPYTHONDIR`` and the ``clusters`` fixture, which stops whatever a
test started (even when it fails) and then checks that no process of it is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import alive, kill_all, wait_for
from traitlets.config import Config

import ipcluster
from ipcluster.cluster.cluster import Cluster
from ipcluster.errors import AlreadyRunning, ClusterNotFound, LauncherError

ROOT = Path(ipcluster.__file__).resolve().parents[1]


def cluster_pids(cluster: Cluster) -> set[int]:
    """Controller, supervisors and engines of *cluster* that run right now."""
    pids: set[int] = set()
    for launcher in (cluster.controller, *cluster.engines.values()):
        pid = getattr(launcher, "pid", None)
        if pid and alive(pid):
            pids.add(pid)
            try:
                pids.update(p.pid for p in psutil.Process(pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    return pids


def live_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if alive(p.pid)}


class Clusters:
    """Makes clusters for a test and guarantees they are gone afterwards."""

    def __init__(self) -> None:
        self.made: list[Cluster] = []
        self.pids: set[int] = set()

    def __call__(self, **kwargs) -> Cluster:
        kwargs.setdefault("engine_timeout", 30)
        cluster = Cluster(**kwargs)
        self.made.append(cluster)
        return cluster

    def remember(self, cluster: Cluster) -> set[int]:
        """Record the pids of *cluster* so the teardown can check they are gone."""
        pids = cluster_pids(cluster)
        self.pids |= pids
        return pids

    def teardown(self) -> None:
        for cluster in self.made:
            self.pids |= cluster_pids(cluster)
            try:
                cluster.stop_cluster_sync()
            except Exception as e:  # keep cleaning up; the leak check below reports
                print(f"stopping {cluster!r} failed: {e}")
        leftover = kill_all(self.pids | live_children())
        assert not leftover, f"processes left behind: {sorted(leftover)}"


@pytest.fixture
def clusters(ipdir):
    before = live_children()
    made = Clusters()
    yield made
    made.pids -= before
    made.teardown()


def security_files(cluster: Cluster) -> list[str]:
    return sorted(p.name for p in (Path(cluster.profile_dir) / "security").iterdir())


# --- tests ---------------------------------------------------------------------------------------


def test_import_cluster_does_not_import_ipython():
    probe = ("import sys, ipcluster; ipcluster.Cluster; ipcluster.ClusterManager\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'controller', 'engines')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_start_task_stop_leaves_nothing(clusters):
    cluster = clusters(n=2)
    t0 = time.monotonic()
    with cluster as rc:
        pids = rc[:].apply_sync(os.getpid)
        first_task = time.monotonic() - t0
        assert len(rc.ids) == 2 and len(set(pids)) == 2
        started = clusters.remember(cluster)
        assert set(pids) <= started
        record = json.loads(cluster.cluster_file.read_text())
        assert record["controller"]["pid"] == cluster.controller.pid
        assert record["engines"]["0"]["n"] == 2
        assert oct(cluster.cluster_file.stat().st_mode & 0o777) == "0o600"
    print(f"cold start to the first task result: {first_task:.3f} s")
    assert first_task < 5
    assert not any(alive(pid) for pid in started)
    assert security_files(cluster) == []
    assert live_children() == set()


@pytest.mark.parametrize("ipc", [True, False])
def test_unix_sockets_on_the_controllers_host(clusters, ipc):
    """Local engines and clients use the controller's private Unix sockets (or TCP when turned
    off), including the direct client-engine route; the directory is gone after the stop."""
    cluster = clusters(n=2, controller_ipc=ipc)
    with cluster as rc:
        info = rc.connection_info
        assert info.local_ipc is ipc
        ipc_dir = info.ipc_dir
        if ipc:
            assert oct(os.stat(ipc_dir).st_mode & 0o777) == "0o700"
            assert info.url("mux_front") == f"ipc://{ipc_dir}/mux_front"
        else:
            assert ipc_dir == "" and info.url("mux_front").startswith("tcp://127.0.0.1:")
        scheme = "ipc://" if ipc else "tcp://127.0.0.1:"
        assert len(rc._direct_urls) == 2
        assert all(url.startswith(scheme) for url in rc._direct_urls.values())
        assert rc[:].apply_sync(lambda: 7) == [7, 7]
        assert rc.load_balanced_view().apply_sync(lambda: 8) == 8
    if ipc:
        assert not os.path.exists(ipc_dir)


def test_async_context_manager(clusters):
    cluster = clusters(n=1)

    async def main():
        async with cluster as rc:
            clusters.remember(cluster)
            return rc[:].apply_sync(os.getpid)

    assert len(asyncio.run(main())) == 1
    assert security_files(cluster) == []


def test_sync_api_inside_a_running_event_loop(clusters):
    # what a notebook cell does
    cluster = clusters(n=1)

    async def cell():
        rc = cluster.start_and_connect_sync()
        clusters.remember(cluster)
        ids = rc.ids
        cluster.stop_cluster_sync()
        return ids

    assert asyncio.run(cell()) == [0]


def test_shadowing_user_modules_in_cwd(clusters, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("controller", "engines"):
        (work / f"{name}.py").write_text(f"raise RuntimeError('the user {name}.py was imported')\n")
    monkeypatch.chdir(work)
    cluster = clusters(n=2)
    with cluster as rc:
        clusters.remember(cluster)
        assert rc[:].apply_sync(os.getcwd) == [str(work)] * 2


def test_already_running(clusters):
    first = clusters(n=1, cluster_id="dup")
    first.start_and_connect_sync()
    clusters.remember(first)
    second = clusters(n=1, cluster_id="dup")
    with pytest.raises(AlreadyRunning, match="ipcluster stop"):
        second.start_cluster_sync()
    assert second.controller is None and not second.engines
    assert first.cluster_file.exists() and first.connection_file.exists()
    assert first.running
    first.stop_cluster_sync()
    assert not first.cluster_file.exists()


def test_profile_config_sets_n(clusters, ipdir):
    pdir = ipdir / "profile_three"
    pdir.mkdir(parents=True)
    (pdir / "ipcluster_config.py").write_text("c.Cluster.n = 3\n")
    cluster = clusters(profile="three")
    with cluster as rc:
        clusters.remember(cluster)
        assert len(rc.ids) == 3


def test_engines_failing_to_start_are_reported(clusters):
    cfg = Config()
    cfg.LocalEngineSetLauncher.engine_args = ["--no-such-option"]
    cluster = clusters(n=2, config=cfg)
    t0 = time.monotonic()
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert time.monotonic() - t0 < 10  # noticed, not waited out
    err = info.value
    assert err.returncode == 2
    assert "engine supervisor" in str(err) and "--no-such-option" in err.output
    assert security_files(cluster) == []  # start_and_connect cleaned up


def test_bogus_connection_file_makes_the_supervisor_exit(clusters):
    cluster = clusters(n=2, cluster_id="bogus")
    cluster.connection_file.parent.mkdir(parents=True)
    cluster.connection_file.write_text("this is not a connection file")
    cluster.start_engines_sync()
    clusters.remember(cluster)
    with pytest.raises(LauncherError) as info:
        cluster.connect_client_sync()
    assert info.value.returncode not in (None, 0)
    assert info.value.output
    cluster.stop_cluster_sync()


def test_controller_failing_to_start_is_reported(clusters):
    cluster = clusters(n=1, controller_ip="256.0.0.1")
    with pytest.raises(LauncherError) as info:
        cluster.start_and_connect_sync()
    assert "controller" in str(info.value) and info.value.returncode
    assert "256.0.0.1" in info.value.output


def test_dead_controller_is_reported_at_once(clusters):
    cluster = clusters(n=1, persist=False)  # (a persistent controller that was up would be restarted)
    cluster.start_controller_sync()
    clusters.remember(cluster)
    os.kill(cluster.controller.pid, signal.SIGKILL)
    with pytest.raises(LauncherError, match="exit code -9"):
        cluster.connect_client_sync()


def test_killed_supervisor_leaves_no_engines(clusters):
    cluster = clusters(n=2)
    cluster.start_and_connect_sync()
    pids = clusters.remember(cluster)
    supervisor = cluster.engines["0"].pid
    os.kill(supervisor, signal.SIGKILL)
    cluster.stop_cluster_sync()
    assert not any(alive(pid) for pid in pids)


def test_stop_engines_then_controller(clusters):
    cluster = clusters(n=2)
    rc = cluster.start_and_connect_sync()
    clusters.remember(cluster)
    cluster.stop_engines_sync()
    assert not cluster.engines
    wait_for(lambda: not rc.ids, what="engines to unregister")
    assert json.loads(cluster.cluster_file.read_text())["engines"] == {}
    cluster.start_engines_sync(1)
    rc.wait_for_engines(1, timeout=20)
    clusters.remember(cluster)
    cluster.stop_engines_sync()
    cluster.stop_controller_sync()
    assert security_files(cluster) == []


def _mark_and_sleep(path: str) -> None:
    import os
    import time

    open(os.path.join(path, str(os.getpid())), "w").close()
    time.sleep(30)


def test_signal_engines_interrupts_tasks(clusters, tmp_path):
    cluster = clusters(n=2)
    with cluster as rc:
        clusters.remember(cluster)
        marks = tmp_path / "marks"
        marks.mkdir()
        ar = rc[:].apply_async(_mark_and_sleep, str(marks))
        wait_for(lambda: len(list(marks.iterdir())) == 2, what="tasks to start")
        cluster.signal_engines(signal.SIGINT)
        with pytest.raises(ipcluster.CompositeError, match="KeyboardInterrupt"):
            ar.get(timeout=10)


def test_from_file_attaches_and_stops(clusters):
    cluster = clusters(n=2, cluster_id="attach", shutdown_atexit=False)
    cluster.start_cluster_sync()
    pids = clusters.remember(cluster)
    attached = Cluster.from_file(cluster_id="attach")
    assert attached.status == "running" and attached.n == 2
    rc = attached.connect_client_sync()
    assert len(rc.ids) == 2
    clusters.remember(cluster)
    attached.stop_cluster_sync()
    assert not any(alive(pid) for pid in pids | clusters.pids)
    with pytest.raises(ClusterNotFound):
        Cluster.from_file(cluster_id="attach")


# --- the launcher interface on real processes ----------------------------------------------------

from traitlets import Unicode  # noqa: E402

from ipcluster.cluster.launchers.local import LocalProcessLauncher  # noqa: E402


class ScriptLauncher(LocalProcessLauncher):
    """Runs a Python snippet: the smallest local launcher."""

    kind = "engines"
    code = Unicode("")

    def build_args(self) -> list[str]:
        return [sys.executable, "-c", self.code]

    @classmethod
    def state_traits(cls) -> set[str]:
        return {"code"}

    def to_dict(self) -> dict:
        return {**super().to_dict(), "code": self.code}


IGNORE_TERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""

ORPHAN_MAKER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {child!r}])
print("child", child.pid, flush=True)
time.sleep(60)
""".format(child=IGNORE_TERM)


@pytest.fixture
def launchers(tmp_path):
    made: list[LocalProcessLauncher] = []

    def make(code: str) -> LocalProcessLauncher:
        launcher = ScriptLauncher(code=code, log_path=str(tmp_path / f"script-{len(made)}.log"))
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        asyncio.run(launcher.stop(1))
    assert live_children() == set()


def test_launcher_interface(launchers):
    launcher = launchers("import sys; print('hello'); sys.stdout.flush(); sys.exit(3)")

    async def main():
        await launcher.start()
        return await launcher.wait(20)

    assert asyncio.run(main()) == 3
    assert launcher.poll() == 3 and not launcher.running
    assert launcher.output_tail(5) == "hello"
    failure = launcher.failure("it exited")
    assert failure.returncode == 3 and "hello" in str(failure)


def test_launcher_wait_timeout_and_signal(launchers):
    launcher = launchers("import time; time.sleep(60)")

    async def main():
        await launcher.start()
        with pytest.raises(TimeoutError):
            await launcher.wait(0.05)
        assert launcher.poll() is None and launcher.running
        launcher.signal(signal.SIGTERM)
        return await launcher.wait(20)

    assert asyncio.run(main()) == -signal.SIGTERM


def test_launcher_stop_escalates_to_kill(launchers):
    launcher = launchers(IGNORE_TERM)

    async def main():
        await launcher.start()
        wait_for(lambda: "ready" in launcher.output_tail(), what="the SIGTERM handler")
        return await launcher.stop(timeout=0.3)

    assert asyncio.run(main()) == -signal.SIGKILL


def test_launcher_stop_kills_what_it_left_behind(launchers):
    launcher = launchers(ORPHAN_MAKER)

    async def main():
        await launcher.start()
        wait_for(lambda: "child" in launcher.output_tail() and "ready" in launcher.output_tail(),
                   what="the grandchild")
        child = int(launcher.output_tail().split("child ")[1].split()[0])
        await launcher.stop(timeout=0.3)
        return child

    child = asyncio.run(main())
    assert not alive(child)


def test_attached_launcher_waits_and_stops(launchers):
    launcher = launchers("import time; time.sleep(60)")
    asyncio.run(launcher.start())
    attached = ScriptLauncher.from_dict(launcher.to_dict())
    assert attached.running and attached.process.popen is None

    async def main():
        with pytest.raises(TimeoutError):
            await attached.wait(0.05)
        await attached.stop(5)

    asyncio.run(main())
    assert not attached.running and attached.poll() is None  # exit code of a non-child: unknown
    assert launcher.poll() == -signal.SIGTERM


@pytest.mark.parametrize("level", ["WARNING", "WARN", "DEBUG", "ERROR"])
def test_every_log_level_spelling_starts(tmp_path, level):
    with ipcluster.Cluster(n=1, profile_dir=str(tmp_path / "p"), log_level=level) as rc:
        assert rc.ids == [0]
