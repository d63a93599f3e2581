"""The controller application: configuration, socket binding, the event loop, shutdown.

Configuration comes from ``<profile_dir>/ipcontroller_config.py`` (``c.IPController.ip = ...``) and
the command line (``--ip``, ``--location``, ``--heartbeat-period`` ...), the command line winning.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import zmq
from traitlets import Bool, Enum, Float, Int, List, TraitError, Unicode, default, validate
from traitlets.config import Application

import ipcluster
from controller.curve import start_curve
from controller.heartbeat import HeartMonitor
from controller.hub import Hub
from controller.memory import trim_periodically
from controller.registry import EngineRegistry
from controller.rawlinks import RAW_CLIENT_PREFIX, Front, RawLinks
from controller.router import DropLog, Router
from controller.scheduling.policies import POLICIES
from controller.replayguard import ReplayGuardFile, guard_file_path, save_periodically
from controller.scheduling.state import TaskScheduler
from controller.store import StoreError, flush_periodically, open_store, restore_point
from controller.tasks import TaskServer
from ipcluster.protocol.channel import Channel
from ipcluster.protocol.connection import (
    SOCKET_ROLES,
    ConnectionInfo,
    connection_file_path,
    ipc_url,
    make_ipc_dir,
    profile_dir,
    write_connection_file,
)
from ipcluster.protocol.hostkey import host_key
from ipcluster.protocol.limits import DATA, DEFAULT_MAX_MESSAGE_SIZE, HEARTBEAT, REQUEST, set_limit
from ipcluster.protocol.session import MAX_MESSAGE_AGE, Session, new_key

#: Messages from one client queued in the controller's receive buffer at most (see serve()): what a
#: killed controller loses.  A message may be a batch of up to 16 requests (CLIENT_BATCH_PARTS in
#: ipcluster/client/client.py), so this is at most 128 requests, about as many as 100 lone ones.
FRONT_RCVHWM = 8

_SOCKET_TYPES = {
    "hub": zmq.ROUTER, "mux_front": zmq.ROUTER, "mux_back": zmq.ROUTER,
    "control_front": zmq.ROUTER, "control_back": zmq.ROUTER,
    "iopub": zmq.PUB, "hb_ping": zmq.PUB, "hb_pong": zmq.ROUTER,
}
#: What each socket receives, for its size limit (see ipcluster.protocol.limits); PUB sockets
#: receive only subscriptions.
_LIMIT_KINDS = {
    "hub": REQUEST, "mux_front": DATA, "mux_back": DATA, "control_front": REQUEST, "control_back": REQUEST,
    "iopub": REQUEST, "hb_ping": REQUEST, "hb_pong": HEARTBEAT,
}


class IPController(Application):
    """Runs one ipcluster controller."""

    name = "ipcluster-controller"
    description = "The ipcluster controller: routes work between clients and engines."
    version = ipcluster.__version__

    profile = Unicode("default", help="Profile name (under $IPYTHONDIR)").tag(config=True)
    profile_dir = Unicode("", help="Profile directory (overrides --profile)").tag(config=True)
    cluster_id = Unicode("", help="Cluster id: names the connection file").tag(config=True)
    ip = Unicode("127.0.0.1", help="Address to bind. Non-loopback binds expose the cluster: "
                 "use them only on trusted networks.").tag(config=True)
    location = Unicode("", help="Address engines and clients connect to (default: the bind address, "
                       "or this host's name when binding all interfaces)").tag(config=True)
    ipc = Bool(True, help="Also listen on Unix domain sockets in a private temporary directory; processes on "
               "this host (same network namespace) use them instead of TCP, which is faster").tag(config=True)

    enable_curve = Bool(False, help="Encrypt every connection with CurveZMQ and accept only allowed client "
                        "keys (the cluster's own, from the connection file, and curve_allowed_keys). "
                        "Recommended whenever ip is not a loopback address.").tag(config=True)
    curve_allowed_keys = List(Unicode(), help="More CurveZMQ public keys (Z85) allowed to connect when "
                              "enable_curve is set").tag(config=True)
    heartbeat_period = Float(3.0, help="Seconds between heartbeat pings").tag(config=True)
    heartbeat_misses = Int(3, help="Missed pings before an engine is declared dead").tag(config=True)
    max_message_size = Int(DEFAULT_MAX_MESSAGE_SIZE, help="Largest frame (bytes) accepted on data sockets, "
                           "cluster-wide: engines and clients take it from the connection file. Request "
                           "sockets accept at most 64 MiB. -1: no limit").tag(config=True)
    max_message_age = Float(MAX_MESSAGE_AGE, help="Seconds a message may be older than the controller's "
                            "clock before it is refused as stale (hosts' clocks must agree this well)"
                            ).tag(config=True)
    connection_file = Unicode("", help="Where to write the connection file").tag(config=True)
    task_scheme = Unicode("leastload", help="Load-balancing policy: leastload, lru, plainrandom, "
                          "twobin or weighted").tag(config=True)
    task_hwm = Int(0, help="At most this many load-balanced tasks queued on one engine (0: no limit)"
                   ).tag(config=True)

    max_engine_deaths = Int(3, help="A load-balanced task that was running on this many engines that died "
                            "fails with TaskKilledEngines instead of being retried again (0: no limit)"
                            ).tag(config=True)

    @validate("task_scheme")
    def _valid_scheme(self, proposal: Any) -> str:
        name = str(proposal["value"])
        if name not in POLICIES:
            raise TraitError(f"unknown task_scheme {name!r}; choose one of: {', '.join(sorted(POLICIES))}")
        return name

    @validate("task_hwm")
    def _valid_hwm(self, proposal: Any) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"task_hwm must be >= 0 (0: no limit), not {proposal['value']}")
        return int(proposal["value"])
    # traitlets' own log_level knows 'WARN' but not the logging module's spelling 'WARNING'
    log_level = Enum((0, 10, 20, 30, 40, 50, "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"),
                     default_value=logging.WARN, help="Log level").tag(config=True)

    aliases = {
        "profile": "IPController.profile",
        "profile-dir": "IPController.profile_dir",
        "cluster-id": "IPController.cluster_id",
        "ip": "IPController.ip",
        "location": "IPController.location",
        "heartbeat-period": "IPController.heartbeat_period",
        "heartbeat-misses": "IPController.heartbeat_misses",
        "connection-file": "IPController.connection_file",
        "scheme": "IPController.task_scheme",
        "hwm": "IPController.task_hwm",
        "max-message-size": "IPController.max_message_size",
        "max-message-age": "IPController.max_message_age",
        "max-engine-deaths": "IPController.max_engine_deaths",
        "log-level": "IPController.log_level",
        "curve-allow": "IPController.curve_allowed_keys",
    }
    persist = Bool(False, help="Keep task records, results and engine ids in a SQLite file in the profile's "
                   "security directory, so that a controller restarted with --restore takes them back"
                   ).tag(config=True)
    restore = Bool(False, help="Start from the task store and connection file a killed controller of this "
                   "cluster left behind: same ports and key, results kept, engines welcomed back "
                   "(implies persist)").tag(config=True)

    flags = {
        **Application.flags,
        "enable-curve": ({"IPController": {"enable_curve": True}}, "Encrypt connections with CurveZMQ."),
        "persist": ({"IPController": {"persist": True}}, "Keep tasks and results in a persistent store."),
        "restore": ({"IPController": {"restore": True, "persist": True}},
                    "Restart a killed controller from its store and connection file."),
        "no-ipc": ({"IPController": {"ipc": False}}, "Listen on TCP only (no Unix domain sockets)."),
    }

    @default("log_format")
    def _log_format_default(self) -> str:
        return "%(asctime)s.%(msecs)03d [controller] %(levelname)s %(message)s"

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        cli_config = self.config
        pdir = Path(self.profile_dir) if self.profile_dir else profile_dir(self.profile)
        pdir.mkdir(parents=True, exist_ok=True)
        self.profile_dir = str(pdir)
        config_file = pdir / "ipcontroller_config.py"
        if config_file.exists():
            self.load_config_file(config_file.name, path=[str(pdir)])
            self.update_config(cli_config)  # the command line wins over the file

    # --- run ----------------------------------------------------------------------------------

    def start(self) -> None:
        asyncio.run(self.serve())

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        log = self.log
        ctx = zmq.Context()
        cf = Path(self.connection_file) if self.connection_file else connection_file_path(
            self.profile_dir, self.cluster_id)
        previous = restore_point(cf, self.enable_curve) if self.restore else None
        session = Session(previous.key_bytes if previous else new_key())
        # refuse stale messages too, and replays of what a predecessor with this key accepted
        session.check_freshness(self.max_message_age)
        guard = ReplayGuardFile(guard_file_path(Path(self.connection_file) if self.connection_file else
                                                connection_file_path(self.profile_dir, self.cluster_id)),
                                session, log)
        guard.load()
        curve = start_curve(ctx, self.curve_allowed_keys, log) if self.enable_curve else None
        if curve is None and not _is_loopback(self.ip):
            log.warning("listening on %s without encryption: anyone who can reach it sees the traffic; "
                        "enable_curve (ipcluster start --curve) encrypts it", self.ip)
        sockets: dict[str, zmq.Socket] = {}
        ports: dict[str, int] = {}
        for role in SOCKET_ROLES:
            s = ctx.socket(_SOCKET_TYPES[role])
            s.setsockopt(zmq.LINGER, 1000)
            s.setsockopt(zmq.SNDHWM, 0)
            # clients' requests: a bounded queue here leaves the rest in the clients' own queues,
            # which survive a controller restart (a killed controller loses what it had queued)
            s.setsockopt(zmq.RCVHWM, FRONT_RCVHWM if role == "mux_front" else 0)
            if role in ("mux_back", "control_back"):
                s.setsockopt(zmq.ROUTER_MANDATORY, 1)
            set_limit(s, _LIMIT_KINDS[role], self.max_message_size)
            if curve is not None:
                curve.secure(s)
            sockets[role] = s
            ports[role] = _bind(s, self.ip, previous.ports.get(role, 0) if previous else 0)
        ipc_dir = ""
        if self.ipc:  # (restoring: the same directory, where same-host peers reconnect)
            old_ipc = previous.ipc_dir if previous is not None else ""
            ipc_dir = old_ipc if old_ipc and os.path.isdir(old_ipc) else make_ipc_dir()
        if ipc_dir:
            for role, s in sockets.items():
                s.bind(ipc_url(ipc_dir, role))
        ch = {role: Channel(loop, s, None, role, log) for role, s in sockets.items()}

        registry = EngineRegistry()
        drops = DropLog(log)
        monitor = HeartMonitor(self.heartbeat_period, self.heartbeat_misses)
        stop = asyncio.Event()
        hub: Hub  # set below; routers call back into it

        def engine_message(engine: bytes, msg: Any) -> None:
            hub.from_engine(engine, msg)

        # same-host load-balanced tasks on Unix stream sockets (not with CurveZMQ: no encryption there)
        raw = RawLinks(loop, ipc_dir, self.max_message_size, log) if ipc_dir and curve is None else None
        mux = Router("mux", session, registry, Front(ch["mux_front"], raw) if raw else ch["mux_front"],
                     ch["mux_back"], engine_message, drops, iopub=ch["iopub"], track=True)
        control = Router("control", session, registry, ch["control_front"], ch["control_back"],
                         engine_message, drops)
        hub = Hub(session, registry, ch["hub"], mux, control, ch["hb_ping"], monitor, drops, log, stop.set)
        send_to_engine: Callable[[list[Any]], None] = ch["mux_back"].send
        if raw is not None:
            raw.on_client_message, raw.on_engine_message = mux.from_client, mux.from_engine
            hub.raw_links = raw
            send_to_engine = _via_raw_links(raw, ch["mux_back"].send)

        tasks = TaskServer(TaskScheduler(policy=self.task_scheme, hwm=self.task_hwm,
                                         max_engine_deaths=max(self.max_engine_deaths, 0)), registry,
                           send_to_engine, mux.reply_error, log)
        mux.tasks = hub.tasks = tasks
        tasks.outbox = mux.to_engines
        # what a pass over the queued messages of either side of the mux route sends to one peer goes
        # together: the tasks of several client batches to an engine, the replies read to a client
        ch["mux_front"].batch = ch["mux_back"].batch = mux.outboxes
        mux.records = tasks.records = hub.records
        mux.abort_tasks = hub.abort_tasks
        ch["hb_pong"].on_message = hub.on_pong
        hub.read_pongs = ch["hb_pong"]._on_ready
        # a client killed without saying goodbye is noticed when its hub connection drops
        ch["hub_monitor"] = Channel(loop, sockets["hub"].get_monitor_socket(zmq.EVENT_DISCONNECTED), None,
                                    "hub_monitor", log)
        ch["hub_monitor"].on_message = hub.on_hub_disconnect
        store = open_store(hub, self.profile_dir, self.cluster_id, self.restore, log) if self.persist else None
        for c in ch.values():  # start reading now that every handler is set
            c.start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        location = self.location or (self.ip if self.ip not in ("0.0.0.0", "*", "") else _hostname())
        info = ConnectionInfo(
            key=session.key.decode("ascii"), location=location, ports=ports, cluster_id=self.cluster_id,
            controller_pid=os.getpid(), version=ipcluster.__version__, max_message_size=self.max_message_size,
            max_message_age=self.max_message_age,
            heartbeat_period=self.heartbeat_period, ipc_dir=ipc_dir, host_key=host_key(),
        )
        if curve is not None:
            info.curve_serverkey, info.curve_publickey = curve.server_public, curve.member_public
            info.curve_secretkey = curve.member_secret
        write_connection_file(cf, info)
        log.info("controller ready on %s (ports %s); connection file %s", location, ports, cf)
        log.info("load-balanced tasks: policy %s, at most %s per engine", self.task_scheme, self.task_hwm or "any number")

        async def heartbeat() -> None:
            while True:
                hub.heartbeat_tick()
                await asyncio.sleep(self.heartbeat_period)  # a timer, not synchronisation

        async def task_timeouts() -> None:
            while True:
                tasks.tick()
                deadline = tasks.scheduler.next_deadline()
                delay = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
                await asyncio.sleep(min(delay, 0.5))  # a timer: queued tasks' timeouts

        try:
            async with asyncio.TaskGroup() as tg:
                hb = tg.create_task(heartbeat())
                gs = tg.create_task(save_periodically(guard))
                mt = tg.create_task(trim_periodically())
                tt = tg.create_task(task_timeouts())
                fl = tg.create_task(flush_periodically(store, log)) if store is not None else None
                await stop.wait()
                hb.cancel()
                gs.cancel()
                mt.cancel()
                tt.cancel()
                if fl is not None:
                    fl.cancel()
        finally:
            log.info("controller shutting down")
            guard.remove()  # a clean stop: nothing is restored from this state (the store goes too)
            hub.notify_clients("controller_shutdown_notification", {})
            hub.shutdown_engines()
            try:
                if cf.exists() and _owner_pid(cf) == os.getpid():
                    cf.unlink()
            except OSError:
                pass
            if raw is not None:
                raw.close()
            for c in ch.values():
                c.close(linger=500)
            if curve is not None:
                curve.stop()
            if store is not None:  # a clean stop: nothing to restore from any more
                store.close()
                store.remove()
            ctx.term()
            if ipc_dir:
                shutil.rmtree(ipc_dir, ignore_errors=True)


def _via_raw_links(raw: RawLinks, zmq_send: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
    """The scheduler's send (``[engine, client, ...]``): a task from a raw client (a blocking call,
    where latency counts) on the engine's raw link if it has one; the rest on ``mux_back``, whose
    I/O thread batches writes (better for streams of tasks)."""

    def send(frames: list[Any]) -> None:
        if not (frames[1].startswith(RAW_CLIENT_PREFIX) and raw.send_to_engine(frames)):
            zmq_send(frames)

    return send


def _bind(sock: zmq.Socket, ip: str, port: int = 0) -> int:
    """Bind to an OS-chosen port (or, restoring, the previous one) and return it (no probe-and-close race)."""
    host = "*" if ip in ("0.0.0.0", "*", "") else ip
    sock.bind(f"tcp://{host}:{port}")
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return int(endpoint.rsplit(":", 1)[1])


def _is_loopback(ip: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _owner_pid(path: Path) -> int | None:
    import json

    try:
        return json.loads(path.read_text()).get("controller_pid")
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig()
    app = IPController()
    try:
        app.initialize(argv)
    except Exception as e:
        print(f"ipcluster-controller: {e}", file=sys.stderr)
        sys.exit(2)
    tune_gc()
    try:
        app.start()
    except StoreError as e:
        print(f"ipcluster-controller: {e}", file=sys.stderr)
        sys.exit(2)
    # stopped: the interpreter's final collection would walk every task record still in memory
    # (about a second for 100,000); what is left is freed by the process's exit anyway
    gc.freeze()


def tune_gc() -> None:
    """Collect cyclic garbage less often than CPython's default.

    The controller allocates a few containers per message forwarded and keeps many long-lived
    ones (engine and task records).  With the default thresholds the collector ran often enough to
    take ~15 % of the controller's time under a stream of small tasks; the objects of a message are
    freed by reference counting anyway, and cycles (rare here) are still collected, just later.
    Everything allocated at start-up is moved out of the collector's view.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 1000)


#: Allocations (net, of container objects) between two young-generation collections.
GC_THRESHOLD = 50_000
