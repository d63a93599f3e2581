"""A shorter soak: 50,000 no-op tasks with engines started and stopped; the controller's structures
stay within their bounds and empty out (sizes from ``controller_state``, not RSS timings)."""

from __future__ import annotations

import pytest

from controller.records import MAX_RECORDS
from ipcluster.protocol.session import FRESHNESS_DIGEST_HISTORY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def noop_item(_i: int) -> None:
    return None


@pytest.mark.cluster_options(n=2)
def test_50k_tasks_with_engine_churn_keep_the_controller_bounded(cluster):
    rc = cluster.rc
    lview = rc.load_balanced_view()
    extra: list[str] = []
    largest: dict[str, int] = {}
    for batch in range(10):
        lview.map(noop_item, range(5000), chunksize=1, block=True)
        if batch % 3 == 2:  # churn: one more engine, and the oldest extra one stopped
            extra.append(cluster.cluster.start_engines_sync(1))
            if len(extra) > 1:
                cluster.cluster.stop_engines_sync(extra.pop(0))
        state = rc.controller_state()
        assert state["violations"] == []
        for k, v in state["sizes"].items():
            largest[k] = max(largest.get(k, 0), v)
    sizes = rc.controller_state()["sizes"]
    # nothing in flight once every batch is done
    for name in ("pending_requests", "task_frames", "scheduler_tasks", "scheduler_waiting", "scheduler_ready",
                 "scheduler_dependents", "scheduler_external", "result_watches", "coalescing_broadcasts"):
        assert sizes[name] == 0, (name, sizes[name])
    assert largest["records"] <= MAX_RECORDS and sizes["records"] == 50_000
    assert largest["replay_guard_digests"] <= FRESHNESS_DIGEST_HISTORY
    assert largest["replay_guard_senders"] <= 50  # a handful of connections, not one per task
    assert largest["clients"] <= 5 and largest["drop_kinds"] == 0
    assert largest["engines"] <= 4 and largest["heartbeat_watched"] <= 4
