"""A cluster for engine-failure tests: fast heartbeats, a short interrupt grace, optional restarts.

``engine_cluster(tmp_path, ...)`` starts it and yields a connected client; on the way out it checks
the controller's invariants (``controller_state()["violations"]``: no task both pending and done,
every pending task on a live engine, counts agree), stops the cluster and checks that no process it
started is left behind.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from traitlets.config import Config

import ipcluster
from tests.conftest import _children, assert_children_gone, wait_for

#: Heartbeat period (s) and misses: a stopped engine is unregistered within (3 + 1) x 0.2 s.
HEARTBEAT_PERIOD = 0.2
HEARTBEAT_MISSES = 3
#: Seconds between interrupting a request (time limit, cancel) and killing its engine.
INTERRUPT_GRACE = 1.0


@contextlib.contextmanager
def engine_cluster(tmp_path: Path, n: int = 2, restart_engines: bool = False, startup_command: str = "",
                   max_engine_deaths: int | None = None, grace: float = INTERRUPT_GRACE,
                   ) -> Iterator[tuple[ipcluster.Cluster, ipcluster.Client]]:
    pdir = tmp_path / "profile"
    pdir.mkdir(parents=True, exist_ok=True)
    if startup_command:
        (pdir / "ipengine_config.py").write_text(f"c.IPEngine.startup_command = {startup_command!r}\n")
    c = Config()
    args = [f"--heartbeat-period={HEARTBEAT_PERIOD}", f"--heartbeat-misses={HEARTBEAT_MISSES}"]
    if max_engine_deaths is not None:
        args.append(f"--max-engine-deaths={max_engine_deaths}")
    c.LocalControllerLauncher.controller_args = args
    c.LocalEngineSetLauncher.engine_args = ["--interrupt-grace", str(grace)]
    before = _children()
    cluster = ipcluster.Cluster(n=n, profile_dir=str(pdir), log_level="INFO", config=c,
                                restart_engines=restart_engines)
    rc = None
    try:
        rc = cluster.start_and_connect_sync()
        rc.wait_for_engines(n, timeout=30)
        yield cluster, rc
        # the controller's bookkeeping must agree with itself after whatever the test broke
        # (asked through a new client: the test's may hold failed state)
        checker = ipcluster.Client(url_file=cluster.connection_file, timeout=10)
        try:
            violations = checker.controller_state()["violations"]
        finally:
            checker.close()
        assert not violations, f"controller invariants broken: {violations}"
    finally:
        if rc is not None:
            rc.close()
        cluster.stop_cluster_sync()
        assert_children_gone(before, "engine-failure cluster")


def engine_pids(rc: ipcluster.Client) -> dict[int, int]:
    """``{engine id: pid}`` of the registered engines (asked of each engine)."""
    import os

    return rc[:].apply_async(os.getpid).get_dict(timeout=10)


def wait_for_ids(rc: ipcluster.Client, ids: list[int], timeout: float = 15, what: str = "") -> Any:
    return wait_for(lambda: rc.ids == ids, timeout=timeout, what=what or f"engine ids {ids}")


__all__ = ["engine_cluster", "engine_pids", "wait_for_ids", "HEARTBEAT_PERIOD", "HEARTBEAT_MISSES",
           "INTERRUPT_GRACE"]
