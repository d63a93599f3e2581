"""Controller behaviour seen from outside: its profile config, heartbeats, registration checks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ipcluster
from ipcluster import errors
from tests.conftest import wait_for

FAKE = Path(__file__).parents[1] / "fakes" / "fake_engine.py"


@pytest.fixture
def fast_heartbeat_cluster(tmp_path):
    """A 1-engine cluster whose profile's ipcontroller_config.py sets a 0.2 s heartbeat."""
    pdir = tmp_path / "profile"
    pdir.mkdir()
    (pdir / "ipcontroller_config.py").write_text(
        "c.IPController.heartbeat_period = 0.2\nc.IPController.heartbeat_misses = 2\n")
    cluster = ipcluster.Cluster(n=1, profile_dir=str(pdir))
    rc = cluster.start_and_connect_sync()
    procs: list[subprocess.Popen] = []
    try:
        yield cluster, rc, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        rc.close()
        cluster.stop_cluster_sync()


def _fake(cluster, procs, *args):
    p = subprocess.Popen([sys.executable, str(FAKE), str(cluster.connection_file), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def test_profile_config_is_honoured(fast_heartbeat_cluster):
    cluster, rc, _ = fast_heartbeat_cluster
    info = json.loads(Path(cluster.connection_file).read_text())
    assert info["heartbeat_period"] == 0.2


def test_engine_without_heartbeat_is_unregistered_and_its_work_fails(fast_heartbeat_cluster):
    cluster, rc, procs = fast_heartbeat_cluster
    _fake(cluster, procs, "--mode", "noheart")
    wait_for(lambda: len(rc.ids) == 2, what="the fake engine to register")
    fake_id = max(rc.ids)
    with ipcluster.Client(url_file=cluster.connection_file, direct=False) as c:
        ar = c[fake_id].apply_async(time.sleep, 60)  # the fake engine runs it, never heartbeats
        t0 = time.monotonic()
        with pytest.raises(errors.EngineError):
            ar.get(timeout=10)
        # (misses + 1) x period = 0.6 s, plus one tick of slack
        assert time.monotonic() - t0 < 2.0
    wait_for(lambda: rc.ids == [0], what="the silent engine to be unregistered")
    assert rc[0].apply_sync(lambda: "real engine unaffected") == "real engine unaffected"


def test_busy_real_engine_keeps_heartbeating(fast_heartbeat_cluster):
    """The heartbeat is echoed by libzmq, not Python: a task holding the GIL is not 'dead'."""
    _, rc, _ = fast_heartbeat_cluster

    def spin(seconds):
        import time

        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:  # pure Python: holds the GIL
            n += 1
        return n

    assert rc[0].apply_async(spin, 2.0).get(timeout=20) > 0  # 10 heartbeat periods
    assert rc.ids == [0]


def test_version_mismatch_is_refused_with_a_clear_error(fast_heartbeat_cluster):
    cluster, rc, procs = fast_heartbeat_cluster
    p = _fake(cluster, procs, "--version", "0.0.1-other")
    out, err = p.communicate(timeout=20)
    assert p.returncode == 3
    assert "version mismatch" in err and "0.0.1-other" in err and "ipcluster" in err
    assert rc.ids == [0]
