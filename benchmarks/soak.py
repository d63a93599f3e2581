"""Soak run: many no-op load-balanced tasks plus engine churn; is the controller's memory flat?

    python benchmarks/soak.py                       # 1,000,000 tasks (minutes), JSON lines on stdout
    python benchmarks/soak.py --tasks 50000 --batch 5000

Runs a 2-engine cluster (a private temporary ``$IPYTHONDIR``), submits ``--tasks`` no-op tasks
(one message each, ``lview.map(chunksize=1)``) in batches of ``--batch``, and after every
``--churn`` batches starts one more engine and stops the oldest extra one.  After each batch it
prints the controller's RSS (MiB) and the sizes from ``Client.controller_state()``.  At the end it
prints a summary: RSS at the middle and at the end, the growth over the second half, and the
largest size of each controller structure over the run.  Not part of ``benchmarks/run.py``: it takes
minutes.  Exit status 1 if the second half grew more than ``--max-growth`` MiB or if the controller
reported broken invariants.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import psutil


def noop_item(_i: int) -> None:
    return None


def controller_process(cluster: Any) -> psutil.Process:
    pid = json.loads(open(cluster.connection_file).read())["controller_pid"]
    return psutil.Process(pid)


def soak(tasks: int, batch: int, churn: int, report: Any = print) -> dict[str, Any]:
    """Run the soak; returns the summary (also printed through *report*)."""
    import cloudpickle

    import ipcluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    samples: list[dict[str, Any]] = []
    largest: dict[str, int] = {}
    violations: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IPYTHONDIR"] = tmp
        cluster = ipcluster.Cluster(n=2, profile_dir=os.path.join(tmp, "profile"), log_level="WARNING")
        rc = cluster.start_and_connect_sync()
        try:
            rc.wait_for_engines(2, timeout=60)
            ctl = controller_process(cluster)
            lview = rc.load_balanced_view()
            extra: list[str] = []
            done, t0, nbatch = 0, time.monotonic(), 0
            while done < tasks:
                n = min(batch, tasks - done)
                lview.map(noop_item, range(n), chunksize=1, block=True)
                done += n
                nbatch += 1
                if churn and nbatch % churn == 0:
                    extra.append(cluster.start_engines_sync(1))
                    if len(extra) > 1:
                        cluster.stop_engines_sync(extra.pop(0))
                state = rc.controller_state()
                for k, v in state["sizes"].items():
                    largest[k] = max(largest.get(k, 0), v)
                violations += state["violations"]
                sample = {"tasks": done, "s": round(time.monotonic() - t0, 1),
                          "rss_mib": round(ctl.memory_info().rss / 2**20, 1), "engines": len(rc.ids)}
                samples.append(sample)
                report(json.dumps(sample))
        finally:
            cluster.stop_cluster_sync()
    half = samples[len(samples) // 2]
    summary = {
        "tasks": tasks, "seconds": samples[-1]["s"], "tasks_per_s": round(tasks / max(samples[-1]["s"], 1e-9)),
        "rss_mib_first": samples[0]["rss_mib"], "rss_mib_middle": half["rss_mib"], "rss_mib_end": samples[-1]["rss_mib"],
        "rss_mib_max_second_half": max(s["rss_mib"] for s in samples[len(samples) // 2:]),
        "growth_second_half_mib": round(samples[-1]["rss_mib"] - half["rss_mib"], 1),
        "largest_sizes": largest, "violations": violations[:10],
    }
    report(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--churn", type=int, default=5, help="start/stop an engine every this many batches (0: never)")
    ap.add_argument("--max-growth", type=float, default=20.0, help="MiB allowed over the second half")
    args = ap.parse_args(argv)
    summary = soak(args.tasks, args.batch, args.churn)
    ok = summary["growth_second_half_mib"] <= args.max_growth and not summary["violations"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
