"""ipcluster benchmark suite, with its peers (ipyparallel, Dask distributed) and the floors.

    python benchmarks/run.py [--quick] [--peers ipyparallel,dask|all] [--json FILE] [--only NAME,...] [--list]

Runs each workload on ipcluster and then on each chosen peer that is installed (one system after
another), and prints one JSON object per measurement on stdout, e.g.::

    {"system": "ipcluster", "workload": "apply_rtt", "op": "apply_sync", "unit": "ms",
     "median": 0.61, "p10": 0.55, "p90": 0.72, "n": 2000}

and a human-readable table on stderr at the end, with each ipcluster figure's ratio to the best peer.
Exits 1 if any workload failed (each failure is named on stderr); a peer that is not installed, or a
figure that cannot run here (e.g. too little free memory), is reported as skipped, not as a failure.
See benchmarks/README.md for what each workload measures on each system.

Every cluster runs under a private, temporary ``$IPYTHONDIR`` (Dask: a temporary local directory);
every cluster is stopped even when a workload fails, times out or is interrupted, and child
processes still alive at the end are reported (and killed).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

# run as a script, this directory is already on sys.path; imported (e.g. by a test), it may not be
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure  # noqa: E402
import peers  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
from measure import (  # noqa: E402
    BROADCAST_MIB, MAP_ENGINES, MAP_SLEEP, MAP_TASKS, SCATTER_SIZE, MiB, Skipped, Transfer,
    apply_all_engines, check_free_memory, gbps, ms, rate, record, rtt_repeat, throughput_tasks,
    timeit, transfers,
)

# ---------------------------------------------------------------------------------------------
# Functions executed on the engines.  The engines cannot import this file: cloudpickle (ipcluster)
# ships them by value for ``__main__``, and so does ipyparallel's own function pickling; when this
# file is imported as a module, ipcluster is told explicitly (ipyparallel needs it to be __main__).


if __name__ != "__main__":
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


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


def own_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def own_shared_rss() -> int:
    """Resident pages of shared memory maps (Linux ``RssShmem``): counted in the RSS of every
    process that maps them, e.g. an engine's maps of a client's receive buffers; 0 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssShmem:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------
# Systems with ipyparallel's client API (ipcluster and ipyparallel): the same workload code runs on
# both; a system supplies its unstarted ``Cluster`` and how to recognise its controller processes.


#: The controller's log level.  Not "WARNING": Cluster accepts it, but the controller process rejects
#: it (its trait only knows "WARN") and exits at start-up.
LOG_LEVEL = "ERROR"
#: Clusters run their controller with the persistent task store (the default; --no-persist: without).
PERSIST = True


@dataclass(frozen=True)
class IppSystem:
    """A system driven through ipyparallel's API."""

    name: str
    make_cluster: Callable[[int], Any]  # n -> an unstarted Cluster
    controller_marker: str  # a substring of its controller processes' command lines


def _ipcluster_cluster(n: int) -> Any:
    import ipcluster as ipp

    return ipp.Cluster(n=n, log_level=LOG_LEVEL, persist=PERSIST)


IPCLUSTER = IppSystem("ipcluster", _ipcluster_cluster, " -m controller ")


def _ipyparallel_system() -> IppSystem:
    from peers import ipyparallel_bench

    return IppSystem("ipyparallel", ipyparallel_bench.make_cluster, ipyparallel_bench.CONTROLLER_MARKER)


@contextlib.contextmanager
def cluster(system: IppSystem, n: int) -> Iterator[Any]:
    """A client of a fresh cluster of *n* engines; the cluster is stopped on the way out whatever
    happens."""
    with procs.stop_new():
        c = system.make_cluster(n)
        rc = None
        try:
            rc = c.start_and_connect_sync()
            yield rc
        finally:
            # stop first: ipcluster's shutdown request travels over this client's control socket
            with contextlib.suppress(Exception):
                c.stop_cluster_sync()
            if rc is not None:
                with contextlib.suppress(Exception):
                    rc.close()


def skipped(system: IppSystem, workload: str, reason: str) -> dict:
    """A record saying that *workload* did not run on *system* here, and why."""
    return {"system": system.name, "workload": workload, "skipped": reason}


# ---------------------------------------------------------------------------------------------
# Workloads.  Each is a generator of records; ``quick`` selects smaller sizes / fewer repeats.
# Each checks its results once, untimed.


def wl_cold_start(system: IppSystem, quick: bool) -> Iterator[dict]:
    """From ``Cluster(n=2)`` to the first result, and from there until every process has exited."""
    repeat = 2 if quick else 5
    start, stop = [], []
    pc = time.perf_counter
    for i in range(repeat + 1):  # the first round (imports, page cache) is a warm-up
        with procs.stop_new():
            t0 = pc()
            with system.make_cluster(2) as rc:
                if rc[0].apply_sync(noop) is not None:
                    raise AssertionError("noop returned something")
                t1 = pc()
        t2 = pc()  # every process of the cluster has exited
        if i:
            start.append(t1 - t0)
            stop.append(t2 - t1)
    yield record(system.name, "cold_start_2", "start", "s", start)
    yield record(system.name, "cold_start_2", "shutdown", "s", stop)


def wl_apply_rtt(system: IppSystem, quick: bool) -> Iterator[dict]:
    """``rc[0].apply_sync(noop)`` round trips on a 2-engine cluster."""
    with cluster(system, 2) as rc:
        v = rc[0]
        if v.apply_sync(identity, 42) != 42:
            raise AssertionError("apply_sync returned a wrong result")
        samples = timeit(lambda: v.apply_sync(noop), rtt_repeat(quick), warmup=50)
    yield record(system.name, "apply_rtt", "apply_sync", "ms", ms(samples))


def wl_apply_all(system: IppSystem, quick: bool) -> Iterator[dict]:
    """``rc[:].apply_sync(noop)`` on 2, 8 and (full run) 32 engines, a fresh cluster each."""
    for n in apply_all_engines(quick):
        repeat = 100 if quick else 1000
        with cluster(system, n) as rc:
            if len(rc.ids) != n:
                raise AssertionError(f"expected {n} engines, got {rc.ids}")
            dv = rc[:]
            if dv.apply_sync(identity, 1) != [1] * n:
                raise AssertionError("apply_sync on all engines returned wrong results")
            samples = timeit(lambda: dv.apply_sync(noop), repeat, warmup=20)
        yield record(system.name, f"apply_all_{n}", "apply_sync", "ms", ms(samples), engines=n)
    if quick:
        yield skipped(system, "apply_all_32", "not in --quick")


def wl_push_pull(system: IppSystem, quick: bool) -> Iterator[dict]:
    """push / pull / echo of each array size to engine 0; a size that does not fit is skipped."""
    with cluster(system, 2) as rc:
        v = rc[0]
        for size in transfers(quick):
            wl = f"push_pull_{size.label}"
            try:
                check_free_memory(size.mib * MiB)
            except Skipped as e:
                yield skipped(system, wl, str(e))
                continue
            yield from _push_pull_one(system, v, size, wl)
            v.execute("a = b = None", block=True)  # free the engine's copy before the next size


def _push_pull_one(system: IppSystem, v: Any, size: Transfer, wl: str) -> Iterator[dict]:
    """push, pull and echo (apply of a function returning its argument) of one array size."""
    arr = np.random.default_rng(0).random(size.mib * MiB // 8)
    nbytes = arr.nbytes
    push = timeit(lambda: v.push({"a": arr}, block=True), size.repeat, size.warmup)
    pull = timeit(lambda: v.pull("a", block=True), size.repeat, size.warmup)
    back = v.pull("a", block=True)
    if not (isinstance(back, np.ndarray) and back.dtype == arr.dtype and np.array_equal(back, arr)):
        raise AssertionError(f"pulled {size.label} array differs from the pushed one")
    del back
    echo = timeit(lambda: v.apply_sync(identity, arr), size.repeat, size.warmup)
    if not np.array_equal(v.apply_sync(identity, arr), arr):
        raise AssertionError(f"echoed {size.label} array differs from the sent one")
    # the dict-style spelling goes the same way; check it once, untimed
    v["b"] = arr[:16]
    if not np.array_equal(v["b"], arr[:16]):
        raise AssertionError("rc[0]['b'] differs from what was assigned")
    for op, samples in (("push", push), ("pull", pull), ("echo", echo)):
        yield record(system.name, wl, op, "GB/s", gbps(nbytes, samples), bytes=nbytes)


def wl_broadcast(system: IppSystem, quick: bool) -> Iterator[dict]:
    """``rc[:].push`` of a 100 MiB array to both engines of a 2-engine cluster."""
    arr = np.random.default_rng(0).random(BROADCAST_MIB * MiB // 8)
    repeat = 3 if quick else 7
    with cluster(system, 2) as rc:
        dv = rc[:]
        samples = timeit(lambda: dv.push({"a": arr}, block=True), repeat, warmup=1)
        dv.execute("import hashlib; _d = hashlib.blake2b(memoryview(a).cast('B')).hexdigest()", block=True)
        if dv.pull("_d", block=True) != [hashlib.blake2b(arr.data.cast("B")).hexdigest()] * 2:
            raise AssertionError("an engine's copy of the broadcast array differs")
    yield record(system.name, f"broadcast_{BROADCAST_MIB}MiB", "push_all", "ms", ms(samples),
                 bytes=arr.nbytes, engines=2)


def wl_scatter_gather(system: IppSystem, quick: bool) -> Iterator[dict]:
    """``rc[:].scatter`` then ``rc[:].gather`` of a 10^7 (quick 10^6) float64 array over 2 engines."""
    size = SCATTER_SIZE[quick]
    with cluster(system, 2) as rc:
        dv = rc[:]
        arr = np.arange(size, dtype=np.float64)
        scatter = timeit(lambda: dv.scatter("x", arr, block=True), 5, warmup=1)
        gather = timeit(lambda: dv.gather("x", block=True), 5, warmup=1)
        back = np.asarray(dv.gather("x", block=True))
        if not np.array_equal(back, arr):
            raise AssertionError("gathered array differs from the scattered one")
    wl = f"scatter_gather_1e{len(str(size)) - 1}"
    yield record(system.name, wl, "scatter", "ms", ms(scatter), bytes=arr.nbytes, engines=2)
    yield record(system.name, wl, "gather", "ms", ms(gather), bytes=arr.nbytes, engines=2)


def _efficiency_records(system: IppSystem, wl: str, samples: list[float], wall: bool) -> Iterator[dict]:
    ideal = MAP_TASKS * MAP_SLEEP / MAP_ENGINES
    if wall:
        yield record(system.name, wl, "wall", "s", samples, engines=MAP_ENGINES)
    yield record(system.name, wl, "efficiency", "ratio", [ideal / s for s in samples],
                 engines=MAP_ENGINES, ideal_s=ideal)


def wl_map(system: IppSystem, quick: bool) -> Iterator[dict]:
    """``rc[:].map_sync`` of 200 x 10 ms sleeps on 2 engines: wall time and efficiency."""
    with cluster(system, MAP_ENGINES) as rc:
        dv = rc[:]
        if dv.map_sync(sleep_10ms, range(MAP_TASKS)) != list(range(MAP_TASKS)):
            raise AssertionError("map returned wrong results")
        samples = timeit(lambda: dv.map_sync(sleep_10ms, range(MAP_TASKS)), 1 if quick else 3, warmup=0)
    yield from _efficiency_records(system, "map_200x10ms", samples, wall=True)


# --- load-balanced tasks ----------------------------------------------------------------------


def wl_lb_rtt(system: IppSystem, quick: bool) -> Iterator[dict]:
    """Load-balanced ``apply_sync(noop)`` round trips on a 2-engine cluster."""
    with cluster(system, 2) as rc:
        lv = rc.load_balanced_view()
        if lv.apply_sync(identity, 42) != 42:
            raise AssertionError("apply_sync returned a wrong result")
        samples = timeit(lambda: lv.apply_sync(noop), rtt_repeat(quick), warmup=50)
    yield record(system.name, "lb_rtt", "apply_sync", "ms", ms(samples))


def wl_lb_throughput(system: IppSystem, quick: bool) -> Iterator[dict]:
    """Tasks per second: ``map_sync`` of 10,000 no-ops (default chunking), and 10,000
    ``apply_async`` calls then waiting for all of them."""
    ntasks = throughput_tasks(quick)
    # peers run at a few hundred tasks/s here: fewer repeats keep the run within minutes
    repeat = 2 if quick else (5 if system is IPCLUSTER else 3)
    with cluster(system, 2) as rc:
        lv = rc.load_balanced_view()

        def run_map() -> list[Any]:
            return lv.map_sync(noop_item, range(ntasks))

        def run_apply() -> list[Any]:
            ars = [lv.apply_async(noop) for _ in range(ntasks)]
            return [ar.get() for ar in ars]

        # the first (untimed) runs are the warm-up and the check
        if list(run_map()) != [None] * ntasks or run_apply() != [None] * ntasks:
            raise AssertionError("wrong results from map / apply_async")
        map_s = timeit(run_map, repeat, warmup=0)
        apply_s = timeit(run_apply, repeat, warmup=0)
        if system is IPCLUSTER:
            # one message per item, as the peers' default map sends (ipyparallel's default chunksize is 1)
            chunk1_s = timeit(lambda: lv.map_sync(noop_item, range(ntasks), chunksize=1), repeat, warmup=1)
    yield record(system.name, "lb_map_10k", "map_sync", "tasks/s", rate(ntasks, map_s), tasks=ntasks)
    if system is IPCLUSTER:
        yield record(system.name, "lb_map_10k", "map_sync_chunksize1", "tasks/s", rate(ntasks, chunk1_s),
                     tasks=ntasks)
    yield record(system.name, "lb_apply_async_10k", "apply_async", "tasks/s", rate(ntasks, apply_s),
                 tasks=ntasks)


def wl_lb_map_efficiency(system: IppSystem, quick: bool) -> Iterator[dict]:
    """Load-balanced ``map_sync`` of 200 x 10 ms sleeps on 2 engines: efficiency."""
    with cluster(system, MAP_ENGINES) as rc:
        lv = rc.load_balanced_view()
        if lv.map_sync(sleep_10ms, range(MAP_TASKS)) != list(range(MAP_TASKS)):
            raise AssertionError("map returned wrong results")
        samples = timeit(lambda: lv.map_sync(sleep_10ms, range(MAP_TASKS)), 1 if quick else 3, warmup=0)
    yield from _efficiency_records(system, "lb_map_200x10ms", samples, wall=False)


# --- memory -----------------------------------------------------------------------------------


def wl_memory(system: IppSystem, quick: bool) -> Iterator[dict]:
    """RSS of the controller (its processes summed) and of one engine after a fixed mix: round
    trips, a load-balanced map, 1 MiB pushes and pulls."""
    with cluster(system, 2) as rc:
        v, lv = rc[0], rc.load_balanced_view()
        for _ in range(rtt_repeat(quick)):
            lv.apply_sync(noop)
        lv.map_sync(noop_item, range(throughput_tasks(quick)))
        arr = np.ones(MiB // 8)
        for _ in range(10):
            v.push({"a": arr}, block=True)
            v.pull("a", block=True)
        engine_rss = v.apply_sync(own_rss)
        engine_shared = v.apply_sync(own_shared_rss)
        rss, uss, nproc = _controller_memory(system)
    yield record(system.name, "memory", "controller", "MiB", [rss / MiB], processes=nproc,
                 uss_mib=round(uss / MiB, 2))
    yield record(system.name, "memory", "engine", "MiB", [engine_rss / MiB],
                 shared_mib=round(engine_shared / MiB, 2))


def _controller_memory(system: IppSystem) -> tuple[int, int, int]:
    """Summed RSS, summed USS (pages no other process shares) and count of this process's
    descendants that are the system's controller (ipyparallel's is several processes)."""
    import psutil

    rss, uss, count = 0, 0, 0
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if system.controller_marker in " ".join(p.cmdline()) + " ":
                mem = p.memory_full_info()
                rss += mem.rss
                uss += mem.uss
                count += 1
    if not count:
        raise AssertionError(f"no process matching {system.controller_marker!r} found")
    return rss, uss, count


# --- the transport floor ----------------------------------------------------------------------

_ECHO_SERVER = r"""
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.LINGER, 0)
port = s.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
blobs = {}
while True:
    ident, cmd, *rest = s.recv_multipart(copy=False)
    cmd = cmd.bytes
    if cmd == b"ping":                 # echo
        s.send_multipart([ident, b"pong"])
    elif cmd == b"put":                # the client sends a payload, we answer with a tiny ack
        s.send_multipart([ident, b"ok"])
    elif cmd == b"get":                # the client asks for a payload of n bytes
        n = int(rest[0].bytes)
        if n not in blobs:
            blobs[n] = bytearray(b"x" * n)
        s.send_multipart([ident, blobs[n]], copy=False)
    else:
        break
s.close()
ctx.term()
"""


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip():
            raise RuntimeError(f"echo server did not start (exit code {proc.poll()})")
        yield int(line)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wl_floor_zmq(quick: bool) -> Iterator[dict]:
    """One TCP hop on 127.0.0.1, no serialization: the floor under apply_rtt and push/pull."""
    import zmq

    repeat = 300 if quick else 2000
    big_mib, big_repeat = (32, 5) if quick else (100, 7)
    ctx = zmq.Context()
    try:
        with echo_server() as port:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(f"tcp://127.0.0.1:{port}")
            try:
                def rtt() -> None:
                    s.send(b"ping")
                    s.recv()

                samples = timeit(rtt, repeat, warmup=100)
                yield record("pyzmq", "zmq_rtt", "dealer_router_echo", "ms", ms(samples))

                for mib, rep, warm in ((1, 100 if not quick else 30, 5), (big_mib, big_repeat, 1)):
                    payload = np.random.default_rng(0).random(mib * MiB // 8)
                    nbytes = payload.nbytes

                    def put() -> None:
                        s.send(b"put", zmq.SNDMORE)
                        s.send(payload.data, copy=False)
                        s.recv()

                    def get() -> None:
                        s.send_multipart([b"get", str(nbytes).encode()])
                        s.recv(copy=False)

                    wl = f"zmq_bulk_{mib}MiB"
                    yield record("pyzmq", wl, "send", "GB/s", gbps(nbytes, timeit(put, rep, warm)),
                                 bytes=nbytes)
                    yield record("pyzmq", wl, "recv", "GB/s", gbps(nbytes, timeit(get, rep, warm)),
                                 bytes=nbytes)
                s.send(b"quit")
            finally:
                s.close()
    finally:
        ctx.term()


def wl_floor_memcpy(quick: bool) -> Iterator[dict]:
    """``np.copyto`` of 100 MiB: the memory-bandwidth ceiling for anything that copies."""
    src = np.random.default_rng(0).random(100 * MiB // 8)
    dst = np.empty_like(src)
    samples = timeit(lambda: np.copyto(dst, src), 10 if quick else 20, warmup=2)
    yield record("numpy", "memcpy_100MiB", "copyto", "GB/s", gbps(src.nbytes, samples), bytes=src.nbytes)


@dataclass(frozen=True)
class Workload:
    """A workload: its ipyparallel-API implementation (ipcluster, ipyparallel) or its floor
    function, and its time limit per system in a full run (--quick: a third of it)."""

    timeout: float
    ipp: Callable[[IppSystem, bool], Iterator[dict]] | None = None
    floor: Callable[[bool], Iterator[dict]] | None = None


WORKLOADS: dict[str, Workload] = {
    "floor_memcpy": Workload(60, floor=wl_floor_memcpy),
    "floor_zmq": Workload(120, floor=wl_floor_zmq),
    "cold_start_2": Workload(240, wl_cold_start),
    "apply_rtt": Workload(180, wl_apply_rtt),
    "apply_all": Workload(600, wl_apply_all),
    "push_pull": Workload(600, wl_push_pull),
    "broadcast": Workload(180, wl_broadcast),
    "scatter_gather": Workload(180, wl_scatter_gather),
    "map_200x10ms": Workload(180, wl_map),
    "lb_rtt": Workload(180, wl_lb_rtt),
    "lb_throughput": Workload(600, wl_lb_throughput),
    "lb_map_200x10ms": Workload(180, wl_lb_map_efficiency),
    "memory": Workload(180, wl_memory),
}


@dataclass(frozen=True)
class Run:
    """One workload on one system."""

    name: str
    system: str
    fn: Callable[[bool], Iterator[dict]]
    timeout: float

    @property
    def label(self) -> str:
        """How failures name it: the workload alone for ipcluster and the floors."""
        return self.name if self.system in ("ipcluster", "floor") else f"{self.name}[{self.system}]"


def plan(names: list[str], chosen_peers: list[str], workdir: str) -> tuple[list[Run], list[dict]]:
    """Runs in order (each workload on ipcluster, then on each peer) and the skips known up front
    (a peer without an equivalent of a workload)."""
    runs: list[Run] = []
    skips: list[dict] = []
    for name in names:
        wl = WORKLOADS[name]
        if wl.floor is not None:
            runs.append(Run(name, "floor", wl.floor, wl.timeout))
            continue
        assert wl.ipp is not None
        runs.append(Run(name, "ipcluster", functools.partial(wl.ipp, IPCLUSTER), wl.timeout))
        for peer in chosen_peers:
            run = _peer_run(name, peer, wl, workdir)
            if run is None:
                skips.append({"system": peer, "workload": name, "skipped": "no equivalent"})
            else:
                runs.append(run)
    return runs, skips


def _peer_run(name: str, peer: str, wl: Workload, workdir: str) -> Run | None:
    # peers are slower than ipcluster on most workloads: twice the time limit
    if peer == "ipyparallel":
        assert wl.ipp is not None
        return Run(name, peer, functools.partial(wl.ipp, _ipyparallel_system()), 2 * wl.timeout)
    from peers import dask_bench

    fn = dask_bench.WORKLOADS.get(name)
    if fn is None:
        return None
    dask_dir = os.path.join(workdir, "dask")
    os.makedirs(dask_dir, exist_ok=True)
    return Run(name, peer, functools.partial(fn, workdir=dask_dir), 2 * wl.timeout)


# ---------------------------------------------------------------------------------------------
# Runner


class WorkloadTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise WorkloadTimeout("workload timed out")


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def select(only: str | None) -> list[str]:
    """Workload names chosen by ``--only`` (names or prefixes), in the suite's order."""
    if not only:
        return list(WORKLOADS)
    chosen = []
    for name in (x.strip() for x in only.split(",")):
        if not name:
            continue
        matches = [w for w in WORKLOADS if w == name or w.startswith(name)]
        if not matches:
            raise SystemExit(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
        chosen += [m for m in matches if m not in chosen]
    return [w for w in WORKLOADS if w in chosen]


def select_peers(arg: str | None) -> tuple[list[str], list[dict]]:
    """Peers chosen by ``--peers`` (names, ``all`` = every known peer, default: none) that are
    installed, and a skip for each chosen one that is not."""
    if not arg or arg == "none":
        return [], []
    names = list(peers.PEERS) if arg == "all" else [x.strip() for x in arg.split(",") if x.strip()]
    unknown = [n for n in names if n not in peers.PEERS]
    if unknown:
        raise SystemExit(f"unknown peer {unknown[0]!r}; known: {', '.join(peers.PEERS)}, all, none")
    chosen, skips = [], []
    for name in names:
        if peers.installed(name):
            chosen.append(name)
        else:
            skips.append({"system": name, "workload": "*",
                          "skipped": f"not installed (pip install '{peers.PEERS[name][1]}')"})
    return chosen, skips


def machine_info(chosen_peers: list[str]) -> dict[str, Any]:
    """Date, CPU, load and the versions of everything measured."""
    import platform

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import zmq

    import ipcluster

    info = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ipcluster_source": _source_of(ipcluster.__file__),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "ipcluster": ipcluster.__version__,
    }
    for peer in chosen_peers:
        info[peer] = peers.version(peer)
    return info


def _source_of(package_file: str) -> str:
    """Where the measured ipcluster comes from: its directory, and its git commit (``+dirty`` if
    the tree has uncommitted changes to it) when it is a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(package_file)))
    try:
        out = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty=+dirty", "--exclude", "*"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return root
    return f"{root} @ {out.stdout.strip()}" if out.returncode == 0 else root


def execute(run: Run, quick: bool, records: list[dict], skips: list[dict], failed: dict[str, str]) -> None:
    """Run one workload on one system under its time limit; its records go to stdout and
    *records*, its skips to *skips*, a failure to *failed*."""
    print(f"# {run.name} on {run.system} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    signal.alarm(max(1, int(run.timeout / 3 if quick else run.timeout)))
    gen = run.fn(quick)
    try:
        for rec in gen:
            if "skipped" in rec:
                skips.append(rec)
                print(f"# skipped {rec['system']} {rec['workload']}: {rec['skipped']}", file=sys.stderr)
                continue
            records.append(rec)
            print(json.dumps(rec), flush=True)
    except (Exception, WorkloadTimeout) as e:
        failed[run.label] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        print(f"# {run.label} FAILED:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
    finally:
        signal.alarm(0)
        close = getattr(gen, "close", None)
        if close is not None:
            close()  # a workload stopped mid-way stops its cluster now, not at GC
    print(f"# {run.name} on {run.system} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes")
    ap.add_argument("--json", metavar="FILE", help="also write machine info and all records to FILE")
    ap.add_argument("--only", metavar="NAME,...", help="run only these workloads (prefixes allowed)")
    ap.add_argument("--peers", metavar="NAME,...",
                    help="also run each workload on these peers: ipyparallel, dask, all (every "
                         "installed one) or none (the default)")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--no-persist", action="store_true", help="controllers without the persistent task store")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown on stderr")
    args = ap.parse_args(argv)
    global PERSIST
    PERSIST = not args.no_persist
    if args.list:
        print("\n".join(WORKLOADS))
        return 0
    names = select(args.only)
    chosen_peers, skips = select_peers(args.peers)

    procs.become_subreaper()
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)  # even when started with SIGINT ignored (e.g. in the background)
    signal.signal(signal.SIGALRM, _on_alarm)
    records: list[dict] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ipcluster-bench-") as workdir:
        ipdir = os.path.join(workdir, "ipython")
        os.mkdir(ipdir)
        os.environ["IPYTHONDIR"] = ipdir  # ipcluster and ipyparallel profiles: private and temporary
        info = machine_info(chosen_peers)
        print("# " + "  ".join(f"{k}={v}" for k, v in info.items()) + f"  quick={args.quick}", file=sys.stderr)
        for s in skips:
            print(f"# skipped {s['system']}: {s['skipped']}", file=sys.stderr)
        try:
            runs, more_skips = plan(names, chosen_peers, workdir)
            skips += more_skips
            for run in runs:
                execute(run, args.quick, records, skips, failed)
        except KeyboardInterrupt as e:
            failed["interrupted"] = str(e) or "KeyboardInterrupt"
        finally:
            signal.alarm(0)
            leaked = procs.reap(set(), timeout=10)
            if leaked:
                failed["leaked_processes"] = "; ".join(leaked)

    report.print_table(records, skips, failed, sys.stderr)
    if args.markdown:
        print("\n" + report.markdown(records), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": args.quick, "peers": chosen_peers, "results": records,
                       "skipped": skips, "failed": failed, **report.summary(records)}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
