"""Dask distributed as a system of the suite: the nearest equivalent of each workload.

A cluster is ``distributed.LocalCluster(n_workers=N, threads_per_worker=1, processes=True)`` (no
dashboard, scratch space in a private temporary directory) with a ``Client``.  The equivalents
(benchmarks/README.md lists them): a call on one engine is ``client.run(f, workers=[w])``, a
load-balanced task ``client.submit(f, pure=False)``, a push ``client.scatter(arr, workers=[w])``, a
pull ``client.gather(future)``.  Dask has no view bound to engines, so the direct-view ``map`` has
no equivalent here.  The scheduler of a ``LocalCluster`` runs inside the client's process.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from typing import Any, Iterator

import numpy as np

import measure as m
import procs

SYSTEM = "dask"

# The workers cannot import this module: cloudpickle ships its functions by value (distributed
# honours this registration when it pickles a task).
import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --- functions run on the workers ----------------------------------------------------------


def noop() -> None:
    return None


def noop_item(_i: int) -> None:
    return None


def identity(x: Any) -> Any:
    return x


def sleep_10ms(i: int) -> int:
    import time as _time

    _time.sleep(0.01)
    return i


def digest(a: Any) -> str:
    import hashlib

    return hashlib.blake2b(memoryview(a).cast("B")).hexdigest()


def own_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


# --- clusters ---------------------------------------------------------------------------------


@contextlib.contextmanager
def cluster(n: int, workdir: str) -> Iterator[Any]:
    """A ``Client`` of a fresh ``LocalCluster`` of *n* single-threaded worker processes, closed on
    every way out."""
    import dask
    from distributed import Client, LocalCluster

    with procs.stop_new(), dask.config.set({"temporary-directory": workdir}), warnings.catch_warnings():
        # large arrays passed as task arguments are the point of the echo workload
        warnings.filterwarnings("ignore", message=".*Large object.*")
        warnings.filterwarnings("ignore", message=".*Sending large graph.*")
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          local_directory=workdir, silence_logs=logging.ERROR) as lc, Client(lc) as client:
            client.wait_for_workers(n, timeout=120)
            yield client


def workers(client: Any) -> list[str]:
    """The workers' addresses, sorted."""
    return sorted(client.scheduler_info()["workers"])


# --- workloads --------------------------------------------------------------------------------


def wl_cold_start(quick: bool, workdir: str) -> Iterator[dict]:
    """From ``LocalCluster(...)`` to the first ``submit(noop).result()``; shutdown: closing both."""
    repeat = 2 if quick else 5
    start, stop = [], []
    pc = time.perf_counter
    for i in range(repeat + 1):  # the first round (imports, page cache) is a warm-up
        t0 = pc()
        with cluster(2, workdir) as client:
            if client.submit(noop, pure=False).result() is not None:
                raise AssertionError("noop returned something")
            t1 = pc()
        t2 = pc()  # every worker process has exited
        if i:
            start.append(t1 - t0)
            stop.append(t2 - t1)
    yield m.record(SYSTEM, "cold_start_2", "start", "s", start)
    yield m.record(SYSTEM, "cold_start_2", "shutdown", "s", stop)


def wl_apply_rtt(quick: bool, workdir: str) -> Iterator[dict]:
    """``client.run(noop, workers=[w])``: a call on one named worker, outside the task graph."""
    with cluster(2, workdir) as client:
        w0 = workers(client)[:1]
        if client.run(identity, 42, workers=w0) != {w0[0]: 42}:
            raise AssertionError("client.run returned a wrong result")
        samples = m.timeit(lambda: client.run(noop, workers=w0), m.rtt_repeat(quick), warmup=50)
    yield m.record(SYSTEM, "apply_rtt", "apply_sync", "ms", m.ms(samples), api="client.run(f, workers=[w])")


def wl_lb_rtt(quick: bool, workdir: str) -> Iterator[dict]:
    """``client.submit(noop, pure=False).result()``: one task through the scheduler."""
    with cluster(2, workdir) as client:
        if client.submit(identity, 42, pure=False).result() != 42:
            raise AssertionError("submit returned a wrong result")
        samples = m.timeit(lambda: client.submit(noop, pure=False).result(), m.rtt_repeat(quick), warmup=50)
    yield m.record(SYSTEM, "lb_rtt", "apply_sync", "ms", m.ms(samples), api="client.submit(f, pure=False).result()")


def wl_apply_all(quick: bool, workdir: str) -> Iterator[dict]:
    """``client.run(noop)`` on every worker of a 2-, 8- (and 32-) worker cluster."""
    for n in m.apply_all_engines(quick):
        repeat = 100 if quick else 1000
        with cluster(n, workdir) as client:
            got = client.run(identity, 1)
            if len(got) != n or set(got.values()) != {1}:
                raise AssertionError(f"expected {n} answers of 1, got {got}")
            samples = m.timeit(lambda: client.run(noop), repeat, warmup=20)
        yield m.record(SYSTEM, f"apply_all_{n}", "apply_sync", "ms", m.ms(samples), engines=n, api="client.run(f)")
    if quick:
        yield skipped("apply_all_32", "not in --quick")


def wl_push_pull(quick: bool, workdir: str) -> Iterator[dict]:
    """push: ``client.scatter(arr, workers=[w], hash=False)``; pull: ``client.gather(future)``;
    echo: ``client.submit(identity, arr, workers=[w], pure=False).result()``."""
    with cluster(2, workdir) as client:
        w0 = workers(client)[:1]
        for size in m.transfers(quick):
            wl = f"push_pull_{size.label}"
            try:
                m.check_free_memory(size.mib * m.MiB)
            except m.Skipped as e:
                yield skipped(wl, str(e))
                continue
            yield from _push_pull_one(client, w0, size, wl)


def _push_pull_one(client: Any, w0: list[str], size: m.Transfer, wl: str) -> Iterator[dict]:
    arr = np.random.default_rng(0).random(size.mib * m.MiB // 8)
    nbytes = arr.nbytes
    held: list[Any] = [None]

    def push() -> None:
        held[0] = None  # release the previous copy first, as a push into the same name would
        held[0] = client.scatter(arr, workers=w0, hash=False)

    def echo() -> None:
        client.submit(identity, arr, workers=w0, pure=False).result()

    push_s = m.timeit(push, size.repeat, size.warmup)
    pull_s = m.timeit(lambda: client.gather(held[0]), size.repeat, size.warmup)
    if not np.array_equal(client.gather(held[0]), arr):
        raise AssertionError(f"gathered {size.label} array differs from the scattered one")
    held[0] = None
    echo_s = m.timeit(echo, size.repeat, size.warmup)
    if not np.array_equal(client.submit(identity, arr, workers=w0, pure=False).result(), arr):
        raise AssertionError(f"echoed {size.label} array differs")
    for op, samples in (("push", push_s), ("pull", pull_s), ("echo", echo_s)):
        yield m.record(SYSTEM, wl, op, "GB/s", m.gbps(nbytes, samples), bytes=nbytes)


def wl_broadcast(quick: bool, workdir: str) -> Iterator[dict]:
    """``client.scatter(arr, broadcast=True, hash=False)`` of 100 MiB to both workers."""
    arr = np.random.default_rng(0).random(m.BROADCAST_MIB * m.MiB // 8)
    repeat = 3 if quick else 7
    with cluster(2, workdir) as client:
        held: list[Any] = [None]

        def bcast() -> None:
            held[0] = None
            held[0] = client.scatter(arr, broadcast=True, hash=False)

        samples = m.timeit(bcast, repeat, warmup=1)
        holders = client.who_has(held[0])[held[0].key]
        if len(holders) != 2:
            raise AssertionError(f"broadcast array held by {holders}, expected both workers")
        digests = [client.submit(digest, held[0], workers=[w], pure=False).result() for w in holders]
        if digests != [digest(arr)] * 2:
            raise AssertionError("a worker's copy of the broadcast array differs")
    yield m.record(SYSTEM, f"broadcast_{m.BROADCAST_MIB}MiB", "push_all", "ms", m.ms(samples),
                   bytes=arr.nbytes, engines=2)


def wl_scatter_gather(quick: bool, workdir: str) -> Iterator[dict]:
    """scatter: ``client.scatter(np.array_split(arr, 2), hash=False)`` (one part per worker);
    gather: ``np.concatenate(client.gather(futures))``."""
    size = m.SCATTER_SIZE[quick]
    arr = np.arange(size, dtype=np.float64)
    with cluster(2, workdir) as client:
        held: list[Any] = [None]

        def scatter() -> None:
            held[0] = None
            held[0] = client.scatter(np.array_split(arr, 2), hash=False)

        scatter_s = m.timeit(scatter, 5, warmup=1)
        gather_s = m.timeit(lambda: np.concatenate(client.gather(held[0])), 5, warmup=1)
        if not np.array_equal(np.concatenate(client.gather(held[0])), arr):
            raise AssertionError("gathered array differs from the scattered one")
        spread = {w for f in held[0] for w in client.who_has(f)[f.key]}
        if len(spread) != 2:
            raise AssertionError(f"parts landed on {spread}, expected both workers")
    wl = f"scatter_gather_1e{len(str(size)) - 1}"
    yield m.record(SYSTEM, wl, "scatter", "ms", m.ms(scatter_s), bytes=arr.nbytes, engines=2)
    yield m.record(SYSTEM, wl, "gather", "ms", m.ms(gather_s), bytes=arr.nbytes, engines=2)


def wl_lb_throughput(quick: bool, workdir: str) -> Iterator[dict]:
    """``client.gather(client.map(noop_item, range(n), pure=False))`` and n x
    ``client.submit(noop, pure=False)`` then ``client.gather`` of all of them."""
    ntasks = m.throughput_tasks(quick)
    repeat = 2 if quick else 3
    with cluster(2, workdir) as client:
        client.gather(client.map(noop_item, range(100), pure=False))  # warm-up

        def run_map() -> list[Any]:
            return client.gather(client.map(noop_item, range(ntasks), pure=False))

        def run_submit() -> list[Any]:
            return client.gather([client.submit(noop, pure=False) for _ in range(ntasks)])

        if run_map() != [None] * ntasks or run_submit() != [None] * ntasks:
            raise AssertionError("wrong results from map / submit")
        map_s = m.timeit(run_map, repeat, warmup=0)
        submit_s = m.timeit(run_submit, repeat, warmup=0)
    yield m.record(SYSTEM, "lb_map_10k", "map_sync", "tasks/s", m.rate(ntasks, map_s), tasks=ntasks,
                   api="client.map")
    yield m.record(SYSTEM, "lb_apply_async_10k", "apply_async", "tasks/s", m.rate(ntasks, submit_s),
                   tasks=ntasks, api="client.submit")


def wl_lb_map_efficiency(quick: bool, workdir: str) -> Iterator[dict]:
    """``client.gather(client.map(sleep_10ms, range(200), pure=False))`` on 2 workers."""
    repeat = 1 if quick else 3
    ideal = m.MAP_TASKS * m.MAP_SLEEP / m.MAP_ENGINES
    with cluster(m.MAP_ENGINES, workdir) as client:
        def run() -> list[Any]:
            return client.gather(client.map(sleep_10ms, range(m.MAP_TASKS), pure=False))

        if run() != list(range(m.MAP_TASKS)):
            raise AssertionError("map returned wrong results")
        samples = m.timeit(run, repeat, warmup=0)
    yield m.record(SYSTEM, "lb_map_200x10ms", "efficiency", "ratio", [ideal / s for s in samples],
                   engines=m.MAP_ENGINES, ideal_s=ideal)


def wl_memory(quick: bool, workdir: str) -> Iterator[dict]:
    """RSS of one worker, and of the client's process (which holds the scheduler), after a mix."""
    with cluster(2, workdir) as client:
        w0 = workers(client)[:1]
        for _ in range(m.rtt_repeat(quick)):
            client.submit(noop, pure=False).result()
        client.gather(client.map(noop_item, range(m.throughput_tasks(quick)), pure=False))
        arr = np.ones(m.MiB // 8)
        for _ in range(10):
            client.gather(client.scatter(arr, workers=w0, hash=False))
        worker_rss = client.run(own_rss, workers=w0)[w0[0]]
        sched_rss = client.run_on_scheduler(own_rss)
    yield m.record(SYSTEM, "memory", "engine", "MiB", [worker_rss / m.MiB])
    yield m.record(SYSTEM, "memory", "scheduler_in_client", "MiB", [sched_rss / m.MiB],
                   note="LocalCluster runs the scheduler inside the client's process")


def skipped(workload: str, reason: str) -> dict:
    """A record saying that *workload* did not run on Dask here, and why."""
    return {"system": SYSTEM, "workload": workload, "skipped": reason}


#: workload name (as in run.py) -> function(quick, workdir)
WORKLOADS = {
    "cold_start_2": wl_cold_start,
    "apply_rtt": wl_apply_rtt,
    "apply_all": wl_apply_all,
    "push_pull": wl_push_pull,
    "broadcast": wl_broadcast,
    "scatter_gather": wl_scatter_gather,
    "lb_rtt": wl_lb_rtt,
    "lb_throughput": wl_lb_throughput,
    "lb_map_200x10ms": wl_lb_map_efficiency,
    "memory": wl_memory,
}
