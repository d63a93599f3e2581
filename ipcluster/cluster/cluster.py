"""``Cluster``: start, connect to and stop a controller and its engines from Python.

::

    import ipcluster as ipp

    with ipp.Cluster(n=4) as rc:          # start_and_connect_sync() ... stop_cluster_sync()
        rc[:].apply_sync(os.getpid)

    async with ipp.Cluster(n=4) as rc:    # the same, from async code
        ...

    cluster = ipp.Cluster.from_file()     # attach to a cluster started elsewhere (ipcluster start)
    cluster.stop_cluster_sync()

Each operation is a coroutine (``start_cluster``) with an explicit blocking twin
(``start_cluster_sync``) that also works inside a running event loop, such as Jupyter's.

The cluster *holds* launchers (:mod:`ipcluster.cluster.launchers`): one for the controller and one
per engine set.  Whatever they started is recorded in a cluster file (:mod:`.state`), so
``ipcluster list/stop`` and :meth:`Cluster.from_file` work from any process.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, TypeVar

from traitlets import Bool, Float, Integer, List, Type, Unicode, Union, validate
from traitlets.config import Config, LoggingConfigurable

from ipcluster.cluster import readiness, state
from ipcluster.cluster.config import merged_config
from ipcluster.cluster.keeper import ControllerKeeper
from ipcluster.cluster.launchers import find_launcher_class
from ipcluster.cluster.launchers.base import BaseLauncher
from ipcluster.cluster.syncrun import in_thread, run_sync
from ipcluster.errors import AlreadyRunning, ClusterError, ClusterNotFound, LauncherError
from ipcluster.errors import TimeoutError as IPClusterTimeout

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.client.client import Client

T = TypeVar("T")

log = logging.getLogger("ipcluster.cluster")

#: Seconds a process gets to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 5.0
#: Seconds processes get to exit by themselves after a shutdown request.
SHUTDOWN_GRACE = 5.0

_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class Cluster(LoggingConfigurable):
    """A controller and engine sets on this machine (or wherever the launchers put them).

    Parameters
    ----------
    n:
        Engines started by :meth:`start_engines` / :meth:`start_cluster` (default: CPU count).
    profile:
        The IPython-style profile (``$IPYTHONDIR/profile_<profile>``), default ``"default"``.
    cluster_id:
        Names this cluster within the profile; default: a fresh ``"<time>-<random>"`` id.
        ``""`` is a valid id (the one ``ipcluster start`` uses by default).
    profile_dir:
        The profile directory, overriding *profile*.
    controller_ip:
        The address the controller binds (default ``127.0.0.1``; anything else is a deliberate
        choice to accept connections from the network).
    controller_location:
        The address engines and clients connect to, when it differs from *controller_ip*.
    enable_curve:
        Encrypt every connection with CurveZMQ and let only allowed keys connect (recommended
        whenever *controller_ip* is not a loopback address).
    curve_allowed_keys:
        More client public keys (Z85) the controller accepts when *enable_curve* is set.
    controller_ipc:
        Processes on the controller's host (same network namespace) connect through Unix domain
        sockets in a private temporary directory instead of TCP (default ``True``).
    engine_timeout:
        Seconds :meth:`connect_client` waits for the controller and the engines.
    persist:
        Run the controller with a persistent task store and restart it from the store when it
        dies (SIGKILL, a crash): results stay retrievable, engines keep their ids, clients and
        engines reconnect by themselves (default ``True``; a local controller is restarted by
        this object, so not after ``ipcluster start --daemonize``).  See ``docs/reliability.md``.
    restart_engines:
        Start a new engine in place of one that dies (same id, startup code run again).
    log_level:
        The controller's log level (a name such as ``"DEBUG"`` or a number).
    config:
        A traitlets :class:`~traitlets.config.Config`; ``<profile_dir>/ipcluster_config.py`` is
        loaded under it.
    engines, controller:
        Shorthands for :attr:`engine_launcher_class` / :attr:`controller_launcher_class`: a
        launcher name (``"local"``, ``"mpi"``, ``"slurm"``, ...), an import path or a class.
    """

    n = Integer(None, allow_none=True, help="Number of engines to start (default: CPU count).").tag(
        config=True
    )
    profile = Unicode(None, allow_none=True, help="The profile name (default 'default').").tag(config=True)
    cluster_id = Unicode(None, allow_none=True, help="The cluster id (default: generated).").tag(config=True)
    controller_ip = Unicode("127.0.0.1", help="The address the controller binds.").tag(config=True)
    controller_location = Unicode("", help="The address engines and clients connect to.").tag(config=True)
    enable_curve = Bool(False, help="CurveZMQ encryption and key checking on every connection.").tag(config=True)
    curve_allowed_keys = List(Unicode(), help="More client public keys (Z85) the controller accepts "
                              "with enable_curve.").tag(config=True)
    controller_ipc = Bool(True, help="Processes on the controller's host connect through Unix domain sockets "
                          "(faster than TCP); False: TCP only.").tag(config=True)
    engine_timeout = Float(60.0, help="Seconds to wait for the controller and engines.").tag(config=True)
    persist = Bool(True, help="Keep tasks and results in the controller's persistent store, and restart "
                   "the controller from it if it dies (engines and clients reconnect by themselves)."
                   ).tag(config=True)
    restart_engines = Bool(False, help="Start a new engine (with the same id, running the startup code "
                           "again) in place of one that dies.").tag(config=True)
    log_level = Union([Unicode(), Integer()], default_value="INFO", help="Controller log level.").tag(
        config=True
    )
    controller_launcher_class = Union(
        [Unicode(), Type(klass=BaseLauncher)], default_value="local",
        help="Controller launcher: a registered name ('local'), an import path or a class.",
    ).tag(config=True)
    engine_launcher_class = Union(
        [Unicode(), Type(klass=BaseLauncher)], default_value="local",
        help="Engine launcher: a registered name ('local'), an import path or a class.",
    ).tag(config=True)

    profile_dir = Unicode("", help="The profile directory (resolved from profile if not given).")
    shutdown_atexit = Bool(True, help="Stop what this object started when Python exits.")

    @validate("log_level")
    def _valid_log_level(self, proposal: Any) -> str:
        value = proposal["value"]
        if isinstance(value, int):
            value = logging.getLevelName(value)
        value = str(value).upper()
        if value == "WARN":
            value = "WARNING"
        if value not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}, not {proposal['value']!r}")
        return value

    def __init__(self, *, config: Config | None = None, profile_dir: str | os.PathLike[str] | None = None,
                 engines: str | type[BaseLauncher] | None = None,
                 controller: str | type[BaseLauncher] | None = None, **kwargs: Any):
        # ipyparallel's spelling: Cluster(engines="mpi", controller="slurm")
        if engines is not None:
            kwargs["engine_launcher_class"] = engines
        if controller is not None:
            kwargs["controller_launcher_class"] = controller
        profile = kwargs.get("profile")
        if profile is None and config is not None:
            profile = config.get("Cluster", {}).get("profile")
        if profile_dir is None and config is not None:
            profile_dir = config.get("Cluster", {}).get("profile_dir") or None
        pdir = state.resolve_profile_dir(profile, profile_dir)
        kwargs.setdefault("log", log)
        super().__init__(config=merged_config(pdir, config), **kwargs)
        self.profile_dir = str(pdir)
        if self.profile is None:
            self.profile = state.profile_name(pdir) if profile_dir else "default"
        if self.cluster_id is None:
            self.cluster_id = state.new_cluster_id()
        self.controller: BaseLauncher | None = None
        self.engines: dict[str, BaseLauncher] = {}
        self.start_time: float | None = None
        self._client: Client | None = None
        self._next_engine_set = 0
        self._dropped_sets: set[str] = set()  # engine sets stopped here: not to be re-read from the file
        self._attached = False
        self._owns_cluster_file = False  # the cluster file describes this object's processes
        self._keeper: ControllerKeeper | None = None  # restarts a persistent controller

    # --- names and paths -------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """``"profile:cluster_id"``, as ``ipcluster list`` shows it."""
        return state.cluster_key(self.profile or "default", self.cluster_id or "")

    @property
    def cluster_file(self) -> Path:
        return state.cluster_file_path(self.profile_dir, self.cluster_id or "")

    @property
    def connection_file(self) -> Path:
        return state.connection_file_path(self.profile_dir, self.cluster_id or "")

    def _log_path(self, what: str) -> str:
        cid = f"{self.cluster_id}-" if self.cluster_id else ""
        return str(Path(self.profile_dir) / "log" / f"ipcluster-{cid}{os.getpid()}-{what}.log")

    # --- state -----------------------------------------------------------------------------------

    @property
    def controller_running(self) -> bool:
        return self.controller is not None and self.controller.running

    @property
    def engines_running(self) -> int:
        """How many engines the running engine sets hold (as started)."""
        return sum(getattr(es, "n", 0) for es in self.engines.values() if es.running)

    @property
    def running(self) -> bool:
        """Is any process of this cluster still running?"""
        return self.controller_running or any(es.running for es in self.engines.values())

    @property
    def status(self) -> str:
        """``"running"``, ``"engines stopped"``, ``"controller stopped"`` or ``"stopped"``; with batch
        launchers also ``"controller queued"`` / ``"engines queued"`` while a job waits in its queue."""
        engines_up = [es.running for es in self.engines.values()]
        if self.controller_running:
            if getattr(self.controller, "job_state", "") == "queued":
                return "controller queued"
            if not (engines_up and all(engines_up)):
                return "engines stopped"
            queued = any(getattr(es, "job_state", "") == "queued" for es in self.engines.values())
            return "engines queued" if queued else "running"
        return "controller stopped" if any(engines_up) else "stopped"

    def to_dict(self) -> dict[str, Any]:
        """The cluster file's content."""
        from ipcluster import __version__

        return {
            "profile": self.profile,
            "profile_dir": self.profile_dir,
            "cluster_id": self.cluster_id,
            "n": sum(getattr(es, "n", 0) for es in self.engines.values()) if self.engines else self.n,
            "start_time": self.start_time,
            "connection_file": str(self.connection_file),
            "controller_ip": self.controller_ip,
            "controller_location": self.controller_location,
            "engine_timeout": self.engine_timeout,
            "log_level": self.log_level,
            "starter_pid": os.getpid(),
            "ipcluster_version": __version__,
            "controller": self.controller.to_dict() if self.controller is not None else None,
            "engines": {set_id: es.to_dict() for set_id, es in self.engines.items()},
        }

    def update_cluster_file(self) -> None:
        """Write the cluster file (or remove it once nothing is left to record)."""
        self._adopt_recorded_sets()
        if self.controller is None and not self.engines:
            self._remove_cluster_file()
        else:
            state.write_cluster_file(self.cluster_file, self.to_dict())
            self._owns_cluster_file = True

    def _adopt_recorded_sets(self) -> None:
        """Take over engine sets another process recorded in our cluster file (``ipcluster engines``),
        so that rewriting the file keeps them and stopping the cluster stops them too."""
        if not self._owns_cluster_file or not self.cluster_file.exists():
            return
        try:
            data = state.read_cluster_file(self.cluster_file)
        except ClusterError:
            return
        for set_id, es in (data.get("engines") or {}).items():
            if set_id in self.engines or set_id in self._dropped_sets:
                continue
            try:
                launcher_cls = find_launcher_class("engines", es.get("launcher", "local"))
                self.engines[set_id] = launcher_cls.from_dict(es, parent=self)
            except LauncherError as e:
                self.log.warning("cannot take over engine set %s of %r: %s", set_id, self.key, e)
                continue
            self._next_engine_set = max(self._next_engine_set, _set_number(set_id) + 1)

    def _remove_cluster_file(self) -> None:
        if self._owns_cluster_file:
            state.remove_file(self.cluster_file)
            self._owns_cluster_file = False

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> "Cluster":
        """Rebuild a cluster, attached to its recorded processes, from :meth:`to_dict` output."""
        opts = {k: data[k] for k in ("profile", "cluster_id", "n", "controller_ip", "controller_location",
                                     "engine_timeout", "log_level") if data.get(k) is not None}
        opts.update(kwargs)
        cluster = cls(profile_dir=data["profile_dir"], shutdown_atexit=False, **opts)
        cluster._attached = True
        cluster._owns_cluster_file = True
        cluster.start_time = data.get("start_time")
        common = {"parent": cluster}
        if data.get("controller"):
            launcher_cls = find_launcher_class("controller", data["controller"].get("launcher", "local"))
            cluster.controller = launcher_cls.from_dict(data["controller"], **common)
        for set_id, es in (data.get("engines") or {}).items():
            launcher_cls = find_launcher_class("engines", es.get("launcher", "local"))
            cluster.engines[set_id] = launcher_cls.from_dict(es, **common)
        cluster._next_engine_set = max((_set_number(i) + 1 for i in cluster.engines), default=0)
        return cluster

    @classmethod
    def from_file(
        cls,
        profile: str | None = None,
        cluster_id: str = "",
        profile_dir: str | os.PathLike[str] | None = None,
        *,
        cluster_file: str | os.PathLike[str] | None = None,
        allow_stopped: bool = False,
        **kwargs: Any,
    ) -> "Cluster":
        """Attach to the running cluster recorded for *profile* / *cluster_id*.

        Raises :class:`~ipcluster.errors.ClusterNotFound` when there is no cluster file, or when
        none of its processes runs any more (unless *allow_stopped*).
        """
        if cluster_file is None:
            pdir = state.resolve_profile_dir(profile, profile_dir)
            cluster_file = state.cluster_file_path(pdir, cluster_id)
        try:
            data = state.read_cluster_file(cluster_file)
        except ClusterNotFound:
            key = state.cluster_key(profile or "default", cluster_id)
            raise ClusterNotFound(f"no cluster {key!r} found (no file {cluster_file})") from None
        cluster = cls.from_dict(data, **kwargs)
        if not allow_stopped and not cluster.running:
            raise ClusterNotFound(f"cluster {cluster.key!r} is not running (stale file {cluster_file})")
        return cluster

    # --- starting --------------------------------------------------------------------------------

    def _check_not_running(self) -> None:
        """Raise AlreadyRunning if this profile/cluster id is in use; remove stale files."""
        cf = self.cluster_file
        if cf.exists():
            try:
                other = type(self).from_file(cluster_file=cf, allow_stopped=True)
            except ClusterError:
                other = None
            if other is not None and other.running:
                raise AlreadyRunning(
                    f"cluster {self.key!r} is already running (cluster file {cf}); stop it with "
                    f"`ipcluster stop --profile {self.profile} --cluster-id {self.cluster_id!r}`"
                )
            self.log.info("removing stale cluster file %s", cf)
            state.remove_file(cf)
        conn = self.connection_file
        if conn.exists():
            if state.controller_alive(conn):
                raise AlreadyRunning(
                    f"a controller for {self.key!r} is already running (connection file {conn})"
                )
            self.log.info("removing stale connection file %s", conn)
            state.remove_connection_file(conn)

    def _launcher_options(self, cls: type[BaseLauncher], **opts: Any) -> dict[str, Any]:
        """*opts* limited to the traits *cls* has (plugins need not know every option)."""
        traits = cls.class_traits()
        return {k: v for k, v in opts.items() if k in traits}

    def _started(self) -> None:
        if self.start_time is None:
            self.start_time = time.time()
        if self.shutdown_atexit and not self._attached:
            _ATEXIT.add(self)

    async def start_controller(self, record: bool = True) -> None:
        """Start the controller (returns once it is launched; :meth:`connect_client` waits for it).

        *record*: write the cluster file now (``start_cluster`` writes it once, after the engines).
        """
        if self.controller_running:
            raise ClusterError(f"the controller of {self.key!r} is already running")
        state.ensure_profile_dir(self.profile_dir)
        self._check_not_running()
        cls = find_launcher_class("controller", self.controller_launcher_class)
        opts = self._launcher_options(
            cls, profile_dir=self.profile_dir, cluster_id=self.cluster_id or "",
            log_path=self._log_path("controller"), ip=self.controller_ip,
            location=self.controller_location, log_level=self.log_level,
            enable_curve=self.enable_curve, curve_allowed_keys=list(self.curve_allowed_keys),
            ipc=self.controller_ipc, persist=self.persist,
        )
        launcher = cls(parent=self, **opts)
        await launcher.start()
        self.controller = launcher
        if self.persist and launcher.name == "local" and hasattr(launcher, "restore"):
            self._keeper = ControllerKeeper(self)
            self._keeper.start()
        self._started()
        if record:
            self.update_cluster_file()

    async def start_engines(self, n: int | None = None, record: bool = True,
                            launcher: str | type[BaseLauncher] | None = None) -> str:
        """Start one more engine set of *n* engines (default :attr:`n`); return its set id.

        *launcher* chooses how (a launcher name, import path or class; default
        :attr:`engine_launcher_class`), so one cluster can hold engines from several launchers.
        """
        n = n or self.n or os.cpu_count() or 1
        state.ensure_profile_dir(self.profile_dir)
        cls = find_launcher_class("engines", launcher if launcher is not None else self.engine_launcher_class)
        set_id = str(self._next_engine_set)
        self._next_engine_set += 1
        opts = self._launcher_options(
            cls, profile_dir=self.profile_dir, cluster_id=self.cluster_id or "",
            log_path=self._log_path("engines" + (f"-{set_id}" if set_id != "0" else "")),
            n=n, connection_file=str(self.connection_file), restart_engines=self.restart_engines,
        )
        if self.restart_engines and "restart_engines" not in opts:
            self.log.warning("restart_engines: the %s engine launcher cannot restart engines; engines of set %s "
                             "that die stay dead", getattr(cls, "name", cls.__name__), set_id)
        engine_set = cls(parent=self, **opts)
        await engine_set.start()
        self.engines[set_id] = engine_set
        self._started()
        if record:
            self.update_cluster_file()
        return set_id

    async def start_cluster(self, n: int | None = None) -> None:
        """Start the controller and *n* engines at once (the engines wait for the controller)."""
        # both are launched before anything slower (like writing the cluster file) happens
        await self.start_controller(record=False)
        try:
            await self.start_engines(n, record=False)
            self.update_cluster_file()
        except BaseException:
            await self.stop_cluster()
            raise

    async def start_and_connect(self, n: int | None = None, **client_kwargs: Any) -> "Client":
        """Start the cluster and return a connected client once the engines are up.

        If anything fails on the way, whatever was started is stopped again.
        """
        try:
            await self.start_cluster(n)
            return await self.connect_client(**client_kwargs)
        except BaseException:
            await self.stop_cluster()
            raise

    # --- connecting ------------------------------------------------------------------------------

    def _watched_launchers(self) -> list[BaseLauncher]:
        launchers = [launcher for launcher in (self.controller, *self.engines.values()) if launcher is not None]
        if self._attached:  # what ended before we attached is not news
            launchers = [launcher for launcher in launchers if launcher.running]
        return launchers

    async def _watched(self, aw: Awaitable[T], what: str) -> T:
        """Await *aw*, but raise LauncherError at once if the controller or an engine set exits."""

        def describe(launcher: BaseLauncher) -> str:
            name = "the controller" if launcher is self.controller else "the engine supervisor"
            return f"{name} of cluster {self.key!r} exited while {what}"

        try:
            return await readiness.watched(aw, self._watched_launchers(), describe)
        except IPClusterTimeout as e:
            queued = [f"{getattr(la, 'scheduler', la.name)} job {getattr(la, 'job_id', '?')}"
                      for la in self._watched_launchers() if getattr(la, "job_state", "") == "queued"]
            if queued:  # a batch job still waiting for resources is the likely reason
                raise IPClusterTimeout(f"{e}; still queued: {', '.join(queued)}") from None
            raise

    def _expected_engines(self) -> int:
        """Engines to wait for: every engine set we started (one that already died must make the
        wait fail, not shrink it to nothing); for an attached cluster, the sets still running."""
        sets = [es for es in self.engines.values() if es.running or not self._attached]
        return sum(getattr(es, "n", 0) for es in sets)

    async def connect_client(self, **client_kwargs: Any) -> "Client":
        """Connect a :class:`~ipcluster.client.client.Client` and wait until the engines are up.

        Raises :class:`~ipcluster.errors.LauncherError` (exit code, last output lines) as soon as
        the controller or an engine supervisor exits while waiting, and
        :class:`~ipcluster.errors.TimeoutError` after :attr:`engine_timeout` seconds.
        """
        from ipcluster.client.client import Client

        deadline = time.monotonic() + self.engine_timeout
        await self._watched(readiness.wait_for_connection_file(
            self.connection_file, _controller_pid(self.controller), deadline), "starting")
        client_kwargs.setdefault("timeout", min(10.0, self.engine_timeout))
        client = await self._watched(
            in_thread(Client, url_file=str(self.connection_file), on_abandoned=_close, **client_kwargs),
            "connecting",
        )
        try:
            n = self._expected_engines()
            if n:
                await self._watched(readiness.wait_for_engines(client, n, deadline, repr(self.key)),
                                    f"waiting for {n} engines")
        except TimeoutError as e:
            client.close()
            hint = self._loopback_hint()
            if hint:
                raise type(e)(f"{e}; {hint}") from None
            raise
        except BaseException:
            client.close()
            raise
        if self._client is not None and self._client is not client:
            self._client.close()
        self._client = client
        try:
            client.cluster = self  # type: ignore[attr-defined]
        except AttributeError:
            pass
        return client

    def _loopback_hint(self) -> str:
        """Why engines elsewhere may never arrive: the controller only listens on loopback."""
        from ipcluster.cluster.launchers.sshcmd import is_loopback

        remote = sorted({es.name for es in self.engines.values() if es.name != "local"})
        if not remote or not is_loopback(self.controller_ip):
            return ""
        return (f"the controller listens on {self.controller_ip}, which engines started by {', '.join(remote)} "
                "on other machines cannot reach: set controller_ip (e.g. '0.0.0.0') and controller_location "
                "(ipcluster start --ip ... --location ...)")

    # --- stopping --------------------------------------------------------------------------------

    async def _ask(self, client: "Client", hub: bool) -> bool:
        """Ask, through *client*, the engines (and with *hub* the controller) to shut down."""
        try:
            await asyncio.wait_for(in_thread(client.shutdown, targets="all", hub=hub, block=True),
                                   SHUTDOWN_GRACE)
            return True
        except Exception as e:
            self.log.warning("shutdown request to %r failed (%s); signalling the processes", self.key, e)
            return False

    async def _stop_launcher(self, launcher: BaseLauncher, grace: float) -> None:
        if grace and launcher.running:
            try:
                await launcher.wait(grace)
            except TimeoutError:
                self.log.info("%s still running %.1f s after the shutdown request", launcher, grace)
        await launcher.stop(STOP_TIMEOUT)

    async def stop_engines(self, engine_set_id: str | None = None) -> None:
        """Stop one engine set, or all of them."""
        ids = [engine_set_id] if engine_set_id is not None else list(self.engines)
        self._dropped_sets.update(ids)
        launchers = [self.engines.pop(i) for i in ids if i in self.engines]
        await asyncio.gather(*(launcher.stop(STOP_TIMEOUT) for launcher in launchers))
        if self._owns_cluster_file:
            self.update_cluster_file()

    async def stop_controller(self) -> None:
        """Stop the controller (engines then lose it; prefer :meth:`stop_cluster`)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._stop_keeper()
        if self.controller is not None:
            await self.controller.stop(STOP_TIMEOUT)
            self.controller = None
        self._remove_stale_connection_file()
        if self._owns_cluster_file:
            self.update_cluster_file()

    def _remove_stale_connection_file(self) -> None:
        if self.connection_file.exists() and not state.controller_alive(self.connection_file):
            state.remove_connection_file(self.connection_file)

    async def stop_cluster(self) -> None:
        """Stop engines and controller; leave no process or file behind.

        With a connected client, the engines and then the controller are asked to shut down
        (engines first, so their supervisor can still report to the controller); then each
        process is waited for, with SIGTERM and finally SIGKILL (also for engines orphaned by a
        dead supervisor).
        """
        self._adopt_recorded_sets()
        self._stop_keeper()
        client, self._client = self._client, None
        engines, self.engines = list(self.engines.values()), {}
        errors: list[BaseException] = []
        try:
            asked = client is not None and self.controller_running and await self._ask(client, hub=False)
            results = await asyncio.gather(
                *(self._stop_launcher(es, SHUTDOWN_GRACE if asked else 0.0) for es in engines),
                return_exceptions=True)
            errors += [r for r in results if isinstance(r, BaseException)]
            if self.controller is not None:
                asked = client is not None and self.controller.running and await self._ask(client, hub=True)
                try:
                    await self._stop_launcher(self.controller, SHUTDOWN_GRACE if asked else 0.0)
                except LauncherError as e:
                    errors.append(e)
                self.controller = None
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception as e:
                    self.log.debug("closing the client: %s", e)
        self._remove_stale_connection_file()
        self._remove_cluster_file()
        _ATEXIT.discard(self)
        if errors:
            raise errors[0]

    def _stop_keeper(self) -> None:
        if self._keeper is not None:
            self._keeper.stop()

    async def wait_controller(self) -> int | None:
        """Wait until the controller has exited for good (with ``persist``, a controller that died
        is restarted first); return its last exit code."""
        if self.controller is None:
            return None
        if self._keeper is None:
            return await self.controller.wait()
        await in_thread(self._keeper.done.wait)
        return self.controller.poll() if self.controller is not None else None

    def signal_engines(self, signum: int, engine_set_id: str | None = None) -> None:
        """Send *signum* (e.g. ``signal.SIGINT`` to interrupt running tasks) to the engines."""
        ids = [engine_set_id] if engine_set_id is not None else list(self.engines)
        for i in ids:
            launcher = self.engines[i]
            send = getattr(launcher, "signal_engines", launcher.signal)
            send(signum)

    # --- blocking twins --------------------------------------------------------------------------

    def start_controller_sync(self) -> None:
        return run_sync(self.start_controller())

    def start_engines_sync(self, n: int | None = None,
                           launcher: str | type[BaseLauncher] | None = None) -> str:
        return run_sync(self.start_engines(n, launcher=launcher))

    def start_cluster_sync(self, n: int | None = None) -> None:
        return run_sync(self.start_cluster(n))

    def connect_client_sync(self, **client_kwargs: Any) -> "Client":
        return run_sync(self.connect_client(**client_kwargs))

    def start_and_connect_sync(self, n: int | None = None, **client_kwargs: Any) -> "Client":
        return run_sync(self.start_and_connect(n, **client_kwargs))

    def stop_engines_sync(self, engine_set_id: str | None = None) -> None:
        return run_sync(self.stop_engines(engine_set_id))

    def stop_controller_sync(self) -> None:
        return run_sync(self.stop_controller())

    def stop_cluster_sync(self) -> None:
        return run_sync(self.stop_cluster())

    # --- context managers ------------------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self.start_and_connect_sync()

    def __exit__(self, *exc: Any) -> None:
        self.stop_cluster_sync()

    async def __aenter__(self) -> "Client":
        return await self.start_and_connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop_cluster()

    def __repr__(self) -> str:
        return f"<Cluster {self.key!r} {self.status}>"


def _controller_pid(launcher: BaseLauncher | None) -> int | None:
    """The pid the controller writes into its connection file, when its launcher knows it
    (``controller_pid``; else its ``pid``: a launcher whose process *is* the controller)."""
    if launcher is None:
        return None
    if hasattr(launcher, "controller_pid"):
        return launcher.controller_pid  # type: ignore[no-any-return]
    return getattr(launcher, "pid", None)


def _set_number(set_id: str) -> int:
    """An engine set id as a number (ids are "0", "1", ...; anything else counts as 0)."""
    return int(set_id) if set_id.isdigit() else 0


def _close(client: "Client") -> None:
    """Close a client nobody waits for any more."""
    try:
        client.close()
    except Exception as e:
        log.debug("closing an abandoned client: %s", e)


class _AtExit:
    """Clusters this process started and has not stopped; stopped when Python exits."""

    def __init__(self) -> None:
        self.clusters: list[Cluster] = []
        self.registered = False

    def add(self, cluster: Cluster) -> None:
        if cluster not in self.clusters:
            self.clusters.append(cluster)
        if not self.registered:
            atexit.register(self.stop_all)
            self.registered = True

    def discard(self, cluster: Cluster) -> None:
        if cluster in self.clusters:
            self.clusters.remove(cluster)

    def stop_all(self) -> None:
        for cluster in list(self.clusters):
            if cluster.shutdown_atexit:
                try:
                    cluster.stop_cluster_sync()
                except Exception as e:  # exiting anyway: report and go on with the others
                    log.warning("stopping %r at exit failed: %s", cluster, e)
        self.clusters.clear()


_ATEXIT = _AtExit()


from ipcluster.cluster.manager import ClusterManager  # noqa: E402  (re-exported for ipcluster.ClusterManager)

__all__ = ["Cluster", "ClusterManager"]
