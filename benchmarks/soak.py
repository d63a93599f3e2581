"""Soak run: many no-op load-balanced tasks plus engine churn; is the controller's memory flat?

    python benchmarks/soak.py                       # 1,000,000 tasks (minutes), JSON lines on stdout
    python benchmarks/soak.py --tasks 50000 --batch 5000

Runs a 2-engine cluster (a private temporary ``$IPYTHONDIR``, default settings: the task store is
on), submits ``--tasks`` no-op tasks (one message each, ``lview.map(chunksize=1)``) in batches of
``--batch``, and after every ``--churn`` batches starts one more engine and stops the oldest extra
one.  After each batch it prints the controller's RSS (MiB) as it is (``rss_mib``) and after the
controller collected its garbage and gave free heap pages back (``rss_kept_mib``, through
``Client.controller_state(objects=True)``: the memory the controller really holds).  At the end it
prints a summary: the medians of ``rss_kept_mib`` over the five batches around the middle and the
last five, their difference (the growth over the second half), the slope of a least-squares line
through the second half (MiB per 100,000 tasks), and the largest size of each controller structure
over the run.  Not part of ``benchmarks/run.py``: it takes minutes.  Exit status 1 if the second
half grew more than ``--max-growth`` MiB or if the controller reported broken invariants.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
                rss = ctl.memory_info().rss
                state = rc.controller_state(objects=True, timeout=60)
                for k, v in state["sizes"].items():
                    largest[k] = max(largest.get(k, 0), v)
                violations += state["violations"]
                sample = {"tasks": done, "s": round(time.monotonic() - t0, 1), "rss_mib": round(rss / 2**20, 1),
                          "rss_kept_mib": round(ctl.memory_info().rss / 2**20, 1), "engines": len(rc.ids)}
                samples.append(sample)
                report(json.dumps(sample))
        finally:
            cluster.stop_cluster_sync()
    kept = [x["rss_kept_mib"] for x in samples]
    mid = len(samples) // 2
    second = samples[mid:]
    middle, end = statistics.median(kept[max(0, mid - 2):mid + 3]), statistics.median(kept[-5:])
    summary = {
        "tasks": tasks, "seconds": samples[-1]["s"], "tasks_per_s": round(tasks / max(samples[-1]["s"], 1e-9)),
        "rss_kept_mib_middle": middle, "rss_kept_mib_end": end, "growth_second_half_mib": round(end - middle, 1),
        "slope_second_half_mib_per_100k": round(_slope([x["tasks"] for x in second],
                                                       [x["rss_kept_mib"] for x in second]) * 100_000, 2),
        "rss_mib_max": max(x["rss_mib"] for x in samples), "largest_sizes": largest, "violations": violations[:10],
    }
    report(json.dumps(summary))
    return summary


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of *ys* over *xs* (0 for fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--churn", type=int, default=5, help="start/stop an engine every this many batches (0: never)")
    ap.add_argument("--max-growth", type=float, default=10.0, help="MiB allowed over the second half")
    args = ap.parse_args(argv)
    summary = soak(args.tasks, args.batch, args.churn)
    ok = summary["growth_second_half_mib"] <= args.max_growth and not summary["violations"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
