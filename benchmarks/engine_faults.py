"""How fast engine deaths, engine restarts and time limits take effect.

    python benchmarks/engine_faults.py              # 5 kills per route, 10 time limits
    python benchmarks/engine_faults.py --kills 3 --limits 20

Starts a 2-engine cluster (private temporary profile, ``restart_engines=True``, 1 s interrupt
grace) and measures, printing one JSON line per figure (milliseconds):

* ``death_lb`` / ``death_direct``: from ``os.kill(engine, SIGKILL)`` while it runs a task to the
  ``EngineError`` in the client, for a load-balanced task and a DirectView request;
* ``restart``: from that SIGKILL to the engine's id being back in ``rc.ids`` (first restart of
  each engine only: later ones are backed off on purpose);
* ``limit_overshoot``: how long after its ``time_limit`` (0.5 s) a sleeping task's
  ``TaskTimeout`` arrives.

Not part of ``benchmarks/run.py`` (it kills engines).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from typing import Any


def _hang(path: str) -> None:
    import os
    import time

    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(60)


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)  # polling interval of a deadline-bounded wait
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=5, help="engine kills per route")
    p.add_argument("--limits", type=int, default=10, help="time-limited tasks")
    args = p.parse_args(argv)

    import ipcluster
    from traitlets.config import Config

    c = Config()
    c.LocalEngineSetLauncher.engine_args = ["--interrupt-grace", "1"]
    tmp = tempfile.mkdtemp(prefix="ipcluster-faults-")
    # one engine set per kill round would be slow: with two engines and a 5-per-minute restart
    # budget, the rounds are spread over fresh clusters instead
    results: dict[str, list[float]] = {"death_lb": [], "death_direct": [], "restart": [], "limit_overshoot": []}
    rounds = max(1, args.kills)
    for r in range(rounds):
        cluster = ipcluster.Cluster(n=2, profile_dir=os.path.join(tmp, f"p{r}"), config=c, restart_engines=True)
        rc = cluster.start_and_connect_sync()
        try:
            rc.wait_for_engines(2, timeout=60)
            for route in ("death_lb", "death_direct"):
                path = os.path.join(tmp, f"pid-{r}-{route}")
                view = rc.load_balanced_view() if route == "death_lb" else rc[1]
                ar = view.apply_async(_hang, path)
                if not _wait(lambda: os.path.exists(path), 30):
                    raise SystemExit("the task did not start")
                pid = int(open(path).read())
                before = dict(rc._engines)
                t0 = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                try:
                    ar.get(30)
                except ipcluster.EngineError:
                    pass
                results[route].append(time.monotonic() - t0)
                back = _wait(lambda: len(rc.ids) == 2 and rc._engines != before, 30)
                if back and route == "death_lb":
                    results["restart"].append(time.monotonic() - t0)
            if r == 0:
                lview = rc.load_balanced_view()
                lview.set_flags(time_limit=0.5)
                for _ in range(args.limits):
                    t0 = time.monotonic()
                    try:
                        lview.apply_sync(_sleep, 5)
                    except ipcluster.TaskTimeout:
                        pass
                    results["limit_overshoot"].append(time.monotonic() - t0 - 0.5)
        finally:
            cluster.stop_cluster_sync()
            rc.close()
    for name, values in results.items():
        if values:
            print(json.dumps({"figure": name, "n": len(values), "median_ms": round(statistics.median(values) * 1000, 1),
                              "max_ms": round(max(values) * 1000, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
