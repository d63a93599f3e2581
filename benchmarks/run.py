"""ipcluster benchmark suite.

    python benchmarks/run.py [--quick] [--json FILE] [--only NAME,...] [--list]

Prints one JSON object per measurement on stdout, e.g.::

    {"system": "ipcluster", "workload": "apply_rtt", "op": "apply_sync", "unit": "ms",
     "median": 0.61, "p10": 0.55, "p90": 0.72, "n": 2000}

and a human-readable table on stderr at the end.  Exits 1 if any workload failed (each failure is
named on stderr).  See benchmarks/README.md for what each workload measures.

Every cluster runs under a private, temporary ``$IPYTHONDIR``; every cluster is stopped even when a
workload fails or times out, and child processes still alive at the end are reported (and killed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Iterator

import numpy as np

MiB = 1 << 20
GB = 1e9

# ---------------------------------------------------------------------------------------------
# Functions executed on the engines.  The engines cannot import this file, so cloudpickle must ship
# them by value: it does for ``__main__``; when this file is imported as a module, say so explicitly.


if __name__ != "__main__":
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def noop() -> None:
    return None


def sleep_10ms(_i: int) -> None:
    import time as _time

    _time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# Measurement helpers


def stats(samples: list[float]) -> dict[str, Any]:
    """median / p10 / p90 / n of *samples* (already in the reported unit)."""
    if len(samples) >= 2:
        deciles = statistics.quantiles(samples, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = samples[0]
    return {
        "median": _round(statistics.median(samples)),
        "p10": _round(p10),
        "p90": _round(p90),
        "n": len(samples),
    }


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def timeit(fn: Callable[[], Any], repeat: int, warmup: int) -> list[float]:
    """Seconds per call of *fn*, *repeat* samples after *warmup* untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    pc = time.perf_counter
    for _ in range(repeat):
        t0 = pc()
        fn()
        out.append(pc() - t0)
    return out


def record(system: str, workload: str, op: str, unit: str, samples: list[float], **extra: Any) -> dict:
    rec = {"system": system, "workload": workload, "op": op, "unit": unit, **stats(samples)}
    rec.update(extra)
    return rec


def ms(samples: list[float]) -> list[float]:
    return [s * 1e3 for s in samples]


def gbps(nbytes: int, samples: list[float]) -> list[float]:
    return [nbytes / s / GB for s in samples]


# ---------------------------------------------------------------------------------------------
# Clusters


#: The controller's log level.  Not "WARNING": Cluster accepts it, but the controller process rejects
#: it (its trait only knows "WARN") and exits at start-up.
LOG_LEVEL = "ERROR"
#: Clusters run their controller with the persistent task store (the default; --no-persist: without).
PERSIST = True


@contextlib.contextmanager
def cluster(n: int) -> Iterator[Any]:
    """A fresh cluster of *n* engines; stopped on the way out whatever happens."""
    import ipcluster as ipp

    c = ipp.Cluster(n=n, log_level=LOG_LEVEL, persist=PERSIST)
    try:
        rc = c.start_and_connect_sync()
        yield rc
    finally:
        with contextlib.suppress(Exception):
            c.stop_cluster_sync()


# ---------------------------------------------------------------------------------------------
# Workloads.  Each is a generator of records; ``quick`` selects smaller sizes / fewer repeats.


def wl_cold_start(quick: bool) -> Iterator[dict]:
    import ipcluster as ipp

    repeat = 2 if quick else 5
    start, stop = [], []
    for i in range(repeat + 1):  # the first round (imports, page cache) is a warm-up
        pc = time.perf_counter
        t0 = pc()
        with ipp.Cluster(n=2, log_level=LOG_LEVEL) as rc:
            rc[0].apply_sync(noop)
            t1 = pc()
        t2 = pc()
        if i:
            start.append(t1 - t0)
            stop.append(t2 - t1)
    yield record("ipcluster", "cold_start_2", "start", "s", start)
    yield record("ipcluster", "cold_start_2", "shutdown", "s", stop)


def wl_apply_rtt(quick: bool) -> Iterator[dict]:
    repeat = 300 if quick else 2000
    with cluster(2) as rc:
        v = rc[0]
        samples = timeit(lambda: v.apply_sync(noop), repeat, warmup=50)
    yield record("ipcluster", "apply_rtt", "apply_sync", "ms", ms(samples))


def wl_apply_all(quick: bool) -> Iterator[dict]:
    for n in (2, 8):
        repeat = 100 if quick else 1000
        with cluster(n) as rc:
            assert len(rc.ids) == n, f"expected {n} engines, got {rc.ids}"
            dv = rc[:]
            samples = timeit(lambda: dv.apply_sync(noop), repeat, warmup=20)
        yield record("ipcluster", f"apply_all_{n}", "apply_sync", "ms", ms(samples), engines=n)


def wl_push_pull(quick: bool) -> Iterator[dict]:
    sizes = [(1, 30, 3), (32, 5, 1)] if quick else [(1, 100, 5), (100, 7, 2)]
    with cluster(2) as rc:
        v = rc[0]
        for mib, repeat, warmup in sizes:
            arr = np.random.default_rng(0).random(mib * MiB // 8)
            nbytes = arr.nbytes
            push = timeit(lambda: v.push({"a": arr}, block=True), repeat, warmup)
            pull = timeit(lambda: v.pull("a", block=True), repeat, warmup)
            back = v.pull("a", block=True)
            if not (isinstance(back, np.ndarray) and back.dtype == arr.dtype and np.array_equal(back, arr)):
                raise AssertionError(f"pulled {mib} MiB array differs from the pushed one")
            # the dict-style spelling goes the same way; check it once, untimed
            v["b"] = arr[:16]
            if not np.array_equal(v["b"], arr[:16]):
                raise AssertionError("rc[0]['b'] differs from what was assigned")
            wl = f"push_pull_{mib}MiB"
            yield record("ipcluster", wl, "push", "GB/s", gbps(nbytes, push), bytes=nbytes)
            yield record("ipcluster", wl, "pull", "GB/s", gbps(nbytes, pull), bytes=nbytes)
            del arr, back
            v.execute("a = b = None", block=True)  # free the engine's copy before the next size


def wl_scatter_gather(quick: bool) -> Iterator[dict]:
    size, exp = (10**6, 6) if quick else (10**7, 7)
    repeat = 5
    with cluster(2) as rc:
        dv = rc[:]
        arr = np.arange(size, dtype=np.float64)
        scatter = timeit(lambda: dv.scatter("x", arr, block=True), repeat, warmup=1)
        gather = timeit(lambda: dv.gather("x", block=True), repeat, warmup=1)
        back = np.asarray(dv.gather("x", block=True))
        if not np.array_equal(back, arr):
            raise AssertionError("gathered array differs from the scattered one")
    wl = f"scatter_gather_1e{exp}"
    yield record("ipcluster", wl, "scatter", "ms", ms(scatter), bytes=arr.nbytes, engines=2)
    yield record("ipcluster", wl, "gather", "ms", ms(gather), bytes=arr.nbytes, engines=2)


def wl_map(quick: bool) -> Iterator[dict]:
    repeat = 1 if quick else 3
    ntasks, engines = 200, 2
    ideal = ntasks * 0.01 / engines
    with cluster(engines) as rc:
        dv = rc[:]
        dv.map_sync(sleep_10ms, range(4))  # warm-up
        samples = timeit(lambda: dv.map_sync(sleep_10ms, range(ntasks)), repeat, warmup=0)
    yield record("ipcluster", "map_200x10ms", "wall", "s", samples, engines=engines)
    yield record("ipcluster", "map_200x10ms", "efficiency", "ratio", [ideal / s for s in samples],
                 engines=engines, ideal_s=ideal)


# --- load-balanced tasks ----------------------------------------------------------------------


def noop_item(_i: int) -> None:
    return None


def wl_lb_rtt(quick: bool) -> Iterator[dict]:
    repeat = 300 if quick else 2000
    with cluster(2) as rc:
        lv = rc.load_balanced_view()
        samples = timeit(lambda: lv.apply_sync(noop), repeat, warmup=50)
    yield record("ipcluster", "lb_rtt", "apply_sync", "ms", ms(samples))


def wl_lb_throughput(quick: bool) -> Iterator[dict]:
    """Tasks per second: ``map_sync`` of 10,000 no-ops (default chunking), and 10,000
    ``apply_async`` calls then waiting for all of them."""
    ntasks = 2_000 if quick else 10_000
    repeat = 2 if quick else 5
    with cluster(2) as rc:
        lv = rc.load_balanced_view()
        lv.map_sync(noop_item, range(100))  # warm-up

        def run_map() -> None:
            lv.map_sync(noop_item, range(ntasks))

        def run_apply() -> None:
            ars = [lv.apply_async(noop) for _ in range(ntasks)]
            for ar in ars:
                ar.get()

        map_s = timeit(run_map, repeat, warmup=1)
        apply_s = timeit(run_apply, repeat, warmup=1)
    yield record("ipcluster", "lb_map_10k", "map_sync", "tasks/s", [ntasks / s for s in map_s], tasks=ntasks)
    yield record("ipcluster", "lb_apply_async_10k", "apply_async", "tasks/s", [ntasks / s for s in apply_s],
                 tasks=ntasks)


def wl_lb_map_efficiency(quick: bool) -> Iterator[dict]:
    repeat = 1 if quick else 3
    ntasks, engines = 200, 2
    ideal = ntasks * 0.01 / engines
    with cluster(engines) as rc:
        lv = rc.load_balanced_view()
        lv.map_sync(sleep_10ms, range(4))  # warm-up
        samples = timeit(lambda: lv.map_sync(sleep_10ms, range(ntasks)), repeat, warmup=0)
    yield record("ipcluster", "lb_map_200x10ms", "efficiency", "ratio", [ideal / s for s in samples],
                 engines=engines, ideal_s=ideal)


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
                        s.send(payload, copy=False)
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
    src = np.random.default_rng(0).random(100 * MiB // 8)
    dst = np.empty_like(src)
    samples = timeit(lambda: np.copyto(dst, src), 10 if quick else 20, warmup=2)
    yield record("numpy", "memcpy_100MiB", "copyto", "GB/s", gbps(src.nbytes, samples), bytes=src.nbytes)


#: name -> (function, timeout in seconds for the full run; --quick uses a third of it)
WORKLOADS: dict[str, tuple[Callable[[bool], Iterator[dict]], float]] = {
    "floor_memcpy": (wl_floor_memcpy, 60),
    "floor_zmq": (wl_floor_zmq, 120),
    "cold_start_2": (wl_cold_start, 180),
    "apply_rtt": (wl_apply_rtt, 180),
    "apply_all": (wl_apply_all, 240),
    "push_pull": (wl_push_pull, 300),
    "scatter_gather": (wl_scatter_gather, 180),
    "map_200x10ms": (wl_map, 180),
    "lb_rtt": (wl_lb_rtt, 180),
    "lb_throughput": (wl_lb_throughput, 300),
    "lb_map_200x10ms": (wl_lb_map_efficiency, 180),
}

#: Targets from the project's performance issue: (workload, op) -> (comparison, value)
TARGETS = {
    ("apply_rtt", "apply_sync"): ("<=", 0.5),
    ("cold_start_2", "start"): ("<=", 0.6),
    ("push_pull_100MiB", "push"): (">=", 1.0),
    ("push_pull_100MiB", "pull"): (">=", 1.0),
    ("apply_all_8", "apply_sync"): ("<=", 3.0),
    ("lb_rtt", "apply_sync"): ("<=", 0.5),
    ("lb_map_10k", "map_sync"): (">=", 10_000),
    ("lb_apply_async_10k", "apply_async"): (">=", 5_000),
    ("lb_map_200x10ms", "efficiency"): (">=", 0.97),
}


# ---------------------------------------------------------------------------------------------
# Runner


class WorkloadTimeout(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise WorkloadTimeout("workload timed out")


def _on_term(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def select(only: str | None) -> list[str]:
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


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import zmq

    import ipcluster

    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "ipcluster": ipcluster.__version__,
    }


def _children() -> list[Any]:
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def reap_children(timeout: float = 10) -> list[str]:
    """Wait for our child processes to exit; kill and describe those that do not."""
    import psutil

    deadline = time.monotonic() + timeout
    left = _children()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    described = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"pid {p.pid}: {' '.join(p.cmdline())[:200]}")
            p.kill()
    return described


def print_table(records: list[dict], failed: dict[str, str], file: Any) -> None:
    rows = [("system", "workload", "op", "median", "p10", "p90", "unit", "n", "target")]
    for r in records:
        tgt = TARGETS.get((r["workload"], r["op"]))
        mark = ""
        if tgt:
            cmp, val = tgt
            ok = r["median"] <= val if cmp == "<=" else r["median"] >= val
            mark = f"{cmp} {val} {'ok' if ok else 'MISSED'}"
        rows.append((r["system"], r["workload"], r["op"], f"{r['median']:g}", f"{r['p10']:g}",
                     f"{r['p90']:g}", r["unit"], str(r["n"]), mark))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(file=file)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=file)
    for name, why in failed.items():
        print(f"FAILED {name}: {why}", file=file)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes")
    ap.add_argument("--json", metavar="FILE", help="also write machine info and all records to FILE")
    ap.add_argument("--only", metavar="NAME,...", help="run only these workloads (prefixes allowed)")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--no-persist", action="store_true", help="controllers without the persistent task store")
    args = ap.parse_args(argv)
    global PERSIST
    PERSIST = not args.no_persist
    if args.list:
        print("\n".join(WORKLOADS))
        return 0
    names = select(args.only)

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    records: list[dict] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="ipcluster-bench-") as ipdir:
        os.environ["IPYTHONDIR"] = ipdir
        info = machine_info()
        print(f"# {info['date']}  nproc={info['nproc']}  cpu={info['cpu']}  python {info['python']}"
              f"  pyzmq {info['pyzmq']} (libzmq {info['libzmq']})  quick={args.quick}", file=sys.stderr)
        try:
            for name in names:
                fn, timeout = WORKLOADS[name]
                print(f"# {name} ...", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                signal.alarm(int(timeout / 3 if args.quick else timeout))
                gen = fn(args.quick)
                try:
                    for rec in gen:
                        records.append(rec)
                        print(json.dumps(rec), flush=True)
                except (Exception, WorkloadTimeout) as e:
                    failed[name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                    print(f"# {name} FAILED:", file=sys.stderr)
                    traceback.print_exc(file=sys.stderr)
                finally:
                    signal.alarm(0)
                    gen.close()  # a workload stopped mid-way stops its cluster now, not at GC
                print(f"# {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        except KeyboardInterrupt as e:
            failed["interrupted"] = str(e) or "KeyboardInterrupt"
        finally:
            signal.alarm(0)
            leaked = reap_children()
            if leaked:
                failed["leaked_processes"] = "; ".join(leaked)

    print_table(records, failed, sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": args.quick, "results": records,
                       "failed": failed}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
