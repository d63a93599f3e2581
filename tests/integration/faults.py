"""The ``cluster`` fixture for fault-injection tests: fast heartbeats, and checks after each test.

Use it by naming it::

    def test_something_breaks(cluster):
        rc = cluster.rc                       # a connected Client (engines registered)
        ...kill, stop, partition...
        cluster.state()                       # controller_state(): sizes, dropped counts, violations

Options, with a marker on the test::

    @pytest.mark.cluster_options(n=3, controller_config={"heartbeat_misses": 2}, cluster_kwargs={...})

* ``n`` engines (default 2); heartbeats every 0.2 s (``controller_config`` overrides any
  ``c.IPController.<name> = value``); ``cluster_kwargs`` go to :class:`ipcluster.Cluster`.

After the test (whatever its outcome) the fixture checks, and fails the test if:

* the controller reports broken invariants (``controller_state()["violations"]``: no task both
  pending and done, every pending task on a live engine, the scheduler's and the registry's counts
  agree) — asked through a new client, so a test may kill and restart the controller; set
  ``cluster.check_invariants = False`` in a test that leaves no controller running;
* after the cluster is stopped: a child process, a thread of the test process, or a socket / pipe /
  eventfd of the test process is left over (each waited for with a deadline first).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import zmq

import ipcluster

#: Heartbeat period (s) of fault-injection clusters.
HEARTBEAT_PERIOD = 0.2
#: Seconds to wait for leftovers (processes, threads, fds) to go away before calling them leaks.
LEAK_DEADLINE = 15.0


@dataclass
class FaultCluster:
    """What the ``cluster`` fixture yields."""

    cluster: ipcluster.Cluster
    rc: ipcluster.Client
    profile_dir: Path
    check_invariants: bool = True
    _clients: list[ipcluster.Client] = field(default_factory=list)

    @property
    def connection_file(self) -> Path:
        return Path(self.cluster.connection_file)

    def client(self, **kwargs: Any) -> ipcluster.Client:
        """Another client of this cluster, closed by the fixture."""
        c = ipcluster.Client(url_file=self.connection_file, **kwargs)
        self._clients.append(c)
        return c

    def state(self, verbose: bool = False) -> dict[str, Any]:
        """The controller's ``controller_state`` (through a fresh client: the test's may be broken)."""
        c = ipcluster.Client(url_file=self.connection_file, timeout=10)
        try:
            return c.controller_state(verbose=verbose)
        finally:
            c.close()


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def _fds() -> set[str]:
    """This process's sockets, pipes and anonymous inodes (eventfds of zmq contexts): ``"fd -> target"``."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile (or the listing's own fd)
        if target.startswith(("socket:", "pipe:", "anon_inode:")):
            out.add(f"{name} -> {target}")
    return out


def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def _wait_gone(current: Any, before: Any) -> Any:
    """Poll until nothing in *current()* is new compared to *before*; return what is left."""
    deadline = time.monotonic() + LEAK_DEADLINE
    while True:
        left = {k for k in current() if k not in before}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)  # polling interval of a deadline-bounded wait


def _start_zmq_gc() -> None:
    """pyzmq's zero-copy garbage collector is a process-wide thread with a context and sockets of
    its own, started by the first large zero-copy send: start it now, so it is not taken for a leak."""
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://faults-gc-warm-up")
    b.connect("inproc://faults-gc-warm-up")
    a.send(b"\0" * (1 << 17), copy=False)
    b.recv()
    a.close(linger=0)
    b.close(linger=0)
    ctx.term()


def _controller_config(profile_dir: Path, options: dict[str, Any]) -> None:
    settings = {"heartbeat_period": HEARTBEAT_PERIOD, **options}
    lines = [f"c.IPController.{k} = {v!r}" for k, v in settings.items()]
    (profile_dir / "ipcontroller_config.py").write_text("\n".join(lines) + "\n")


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FaultCluster]:
    """A cluster of its own with 0.2 s heartbeats, checked for invariants and leaks afterwards."""
    marker = request.node.get_closest_marker("cluster_options")
    opts = dict(marker.kwargs) if marker else {}
    n = int(opts.pop("n", 2))
    controller_config = dict(opts.pop("controller_config", {}))
    cluster_kwargs = dict(opts.pop("cluster_kwargs", {}))
    if opts:
        raise TypeError(f"cluster_options: unknown option(s) {sorted(opts)}")
    _start_zmq_gc()
    children, threads, fds = _children(), _threads(), _fds()
    pdir = tmp_path / "profile"
    pdir.mkdir()
    _controller_config(pdir, controller_config)
    c = ipcluster.Cluster(n=n, profile_dir=str(pdir), log_level="INFO", **cluster_kwargs)
    problems = []
    fc: FaultCluster | None = None
    try:
        rc = c.start_and_connect_sync()
        fc = FaultCluster(c, rc, pdir)
        rc.wait_for_engines(n, timeout=30)
        yield fc
        if fc.check_invariants:
            violations = fc.state()["violations"]
            if violations:
                problems.append(f"controller invariants broken: {violations}")
    finally:
        if fc is not None:
            for client in fc._clients:
                client.close()
        c.stop_cluster_sync()  # closes fc.rc, the cluster's own client
        if fc is not None:
            fc.rc.close()
    leaked_procs = _wait_gone(_children, children)
    for pid in leaked_procs:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    leaked_threads = _wait_gone(_threads, threads)
    leaked_fds = _wait_gone(_fds, fds)
    if leaked_procs:
        problems.append(f"processes left behind: {sorted(leaked_procs)}")
    if leaked_threads:
        names = [f"{t.name} ({getattr(t, '_target', None)!r})" for t in threading.enumerate()
                 if t.ident in leaked_threads]
        problems.append(f"threads left behind: {names}")
    if leaked_fds:
        problems.append(f"sockets/pipes left open: {sorted(leaked_fds)}")
    if problems:
        pytest.fail("; ".join(problems))


__all__ = ["FaultCluster", "HEARTBEAT_PERIOD", "cluster"]
