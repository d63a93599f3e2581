"""The controller's load-balancing policy and per-engine high-water mark, set in its config."""

from __future__ import annotations

import pytest

import ipcluster
from tests.conftest import wait_for


def _wait_file(path):
    import os
    import time
    while not os.path.exists(path):
        time.sleep(0.01)
    return os.getpid()


def test_hwm_and_policy_from_ipcontroller_config(tmp_path):
    pdir = tmp_path / "profile"
    pdir.mkdir()
    (pdir / "ipcontroller_config.py").write_text('c.IPController.task_scheme = "lru"\nc.IPController.task_hwm = 1\n')
    cluster = ipcluster.Cluster(n=2, profile_dir=str(pdir), log_level="INFO")
    rc = cluster.start_and_connect_sync()
    try:
        gate = tmp_path / "go"
        lview = rc.load_balanced_view()
        ars = [lview.apply_async(_wait_file, str(gate)) for _ in range(4)]
        # one task on each engine, the other two wait in the controller
        wait_for(lambda: _one_queued_on_each(rc), what="hwm 1 per engine")
        gate.touch()
        pids = {ar.get(timeout=20) for ar in ars}
        assert pids == set(rc[:].apply_sync(__import__("os").getpid))
        log = cluster.controller.output_tail(200)
        assert "policy lru, at most 1 per engine" in log
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def _one_queued_on_each(rc):
    status = rc.queue_status()
    return status.get("unassigned") == 2 and all(status[e]["queue"] == 1 for e in (0, 1))


def test_unknown_policy_is_a_clear_error(tmp_path):
    pdir = tmp_path / "profile"
    pdir.mkdir()
    (pdir / "ipcontroller_config.py").write_text('c.IPController.task_scheme = "fastest"\n')
    cluster = ipcluster.Cluster(n=1, profile_dir=str(pdir))
    try:
        with pytest.raises(ipcluster.errors.LauncherError) as ei:
            cluster.start_and_connect_sync()
    finally:
        cluster.stop_cluster_sync()
    assert "unknown task_scheme 'fastest'" in str(ei.value) and "leastload" in str(ei.value)
