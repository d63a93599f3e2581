"""Keeping a persistent controller alive: restart it from its task store when it dies.

A :class:`~ipcluster.cluster.cluster.Cluster` started with ``persist=True`` runs its controller
with ``--persist``.  :class:`ControllerKeeper` waits for that process in a daemon thread (with an
event loop of its own, so it works whether the cluster's owner is sync or async code).  When the
controller exits *by itself* with a failure (a crash, SIGKILL, the OOM killer) it is started again
with ``--restore``: same ports, same key, its store's results, its engines back (they reconnect by
themselves), clients catching up.  A clean exit (``rc.shutdown(hub=True)``), a stop requested
through the cluster, or a controller that died before it was up (it never published its
connection file: a start-up error, which the start reports) is final.  More than :data:`MAX_RESTARTS` restarts within
:data:`RESTART_WINDOW` seconds is treated as a controller that cannot run: the keeper gives up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.cluster.cluster import Cluster

log = logging.getLogger("ipcluster.cluster")

#: At most this many restarts within RESTART_WINDOW seconds.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class ControllerKeeper:
    """Restarts the controller of *cluster* when it dies (see the module docstring)."""

    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.lock = threading.Lock()  # held while deciding to restart, and by a stop
        self.stopping = False
        #: set once the controller has exited for good (not restarted)
        self.done = threading.Event()
        self.restarts = 0
        self._times: deque[float] = deque(maxlen=MAX_RESTARTS)
        self._thread = threading.Thread(target=self._run, name="ipcluster-controller-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The cluster is stopping its controller: whatever exit follows is final."""
        with self.lock:
            self.stopping = True
        self.done.set()

    def _served(self, pid: int | None) -> bool:
        """Whether process *pid* got as far as publishing the connection file (it was up)."""
        try:
            return bool(pid) and json.loads(self.cluster.connection_file.read_text()).get("controller_pid") == pid
        except (OSError, ValueError):
            return False

    def _run(self) -> None:
        try:
            asyncio.run(self._keep())
        except Exception as e:  # a keeper that fails must say so, not vanish
            log.error("the controller keeper of %r stopped: %s: %s", self.cluster.key, type(e).__name__, e)
        finally:
            self.done.set()

    async def _keep(self) -> None:
        while True:
            launcher: Any = self.cluster.controller
            if launcher is None:
                return
            pid = launcher.pid
            code = await launcher.wait()
            with self.lock:
                if self.stopping or id(launcher) != id(self.cluster.controller):  # (stopped, or replaced)
                    return
                if code == 0:
                    log.info("the controller of %r exited cleanly; not restarting it", self.cluster.key)
                    return
                if not self._served(pid):
                    return  # it failed before it was up: a start-up error, reported by the start
                now = time.monotonic()
                if len(self._times) == MAX_RESTARTS and now - self._times[0] < RESTART_WINDOW:
                    log.error("the controller of %r died %d times within %g s; not restarting it again",
                              self.cluster.key, MAX_RESTARTS + 1, RESTART_WINDOW)
                    return
                self._times.append(now)
                log.warning("the controller of %r exited (code %s); restarting it from its task store",
                            self.cluster.key, code)
                launcher.restore = True  # (ControllerOptions: the next start passes --restore)
                await launcher.start()
                self.restarts += 1
            try:
                self.cluster.update_cluster_file()  # the new pid, for `ipcluster list` / `stop`
            except Exception as e:
                log.warning("could not update the cluster file of %r: %s", self.cluster.key, e)
