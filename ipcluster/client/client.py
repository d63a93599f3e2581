"""The Client: a connection to one cluster's controller, and the factory of views."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import zmq
from zmq.utils.monitor import parse_monitor_message

from ipcluster import errors
from ipcluster.gctune import relax_gc
from ipcluster.client import hubresults
from ipcluster.client.blocking import BlockingCalls
from ipcluster.client.broadcast import BroadcastParts
from ipcluster.client.io import IOThread, log
from ipcluster.client.metadata import Metadata
from ipcluster.client.reconnect import Reconnector
from ipcluster.client.routes import RouteTable
from ipcluster.client.targets import Targets, resolve_targets
from ipcluster.client.tracker import RequestTracker
from ipcluster.protocol import messages as M
from ipcluster.protocol import batch as batching
from ipcluster.protocol import rawlink, segments
from ipcluster.protocol.connection import ConnectionInfo, connection_file_path, profile_dir, read_connection_file
from ipcluster.protocol.frames import split_parts
from ipcluster.protocol.hostkey import host_key
from ipcluster.protocol.limits import DATA, REQUEST, set_limit
from ipcluster.protocol.serialize import pack_apply_message
from ipcluster.protocol.session import Message, Session


#: Seconds :meth:`Client.cancel` waits for engines to confirm aborts before running requests are
#: stopped (an engine's control thread may be held up by a task holding the GIL).
ABORT_FIRST = 0.2


def _engine_gone_error(eid: int, reason: str, killed: dict[str, Any], msg_id: str) -> BaseException:
    """The error of a request *eid* owed when it was unregistered: its own error if the engine was
    killed to stop it (time limit, cancel), else ``EngineDied``."""
    stop = killed.get(msg_id)
    if isinstance(stop, list) and len(stop) == 2:
        cls = getattr(errors, str(stop[0]), None)
        if isinstance(cls, type) and issubclass(cls, (errors.TaskTimeout, errors.TaskAborted)):
            return cls(str(stop[1]))
    return errors.EngineDied(f"engine {eid} stopped before replying to {msg_id} ({reason})",
                             engine_id=eid, msg_id=msg_id)


#: Seconds between two looks at the buffer pool for maps to release (see ``Client._trim_buffers``).
BUFFER_TRIM_INTERVAL = 5.0

#: At most this many requests per batch the client sends: the controller's receive queue holds up
#: to 100 messages per client, lost with it if it is killed, so its batches are kept smaller than
#: the controller's own.
CLIENT_BATCH_PARTS = 16

#: send_task's dependencies outstanding here, when the task has none (never mutated).
_NO_PENDING: dict[str, Any] = {}


class Client:
    """A connection to a running cluster.

    Parameters
    ----------
    url_file:
        Path of the cluster's connection file.  Default: the one named by *profile* / *cluster_id*.
    profile, profile_dir, cluster_id:
        Locate the connection file in ``$IPYTHONDIR/profile_<profile>/security/``.
    context:
        A ``zmq.Context`` to use (default: a private one).
    timeout:
        Seconds to wait for the connection file to appear and for the controller to answer.
    direct:
        Send DirectView requests straight to engines on this host (one hop instead of two through
        the controller).  The controller still learns of every engine's death and keeps
        ``queue_status``; set ``False`` to route everything through the controller.
    sshserver:
        ``[user@]host[:port]`` of an SSH server that can reach the controller when this process
        cannot: the client tunnels its connections through ``ssh -L`` forwards (closed with it).
    sshkey:
        Private key file for *sshserver* (default: what ssh would use; ``~/.ssh/config`` applies).
    ssh_args:
        More arguments for that ssh command, e.g. ``["-o", "StrictHostKeyChecking=accept-new"]``.
    curve_publickey, curve_secretkey:
        This client's own CurveZMQ keypair (Z85), for a controller with ``enable_curve`` that lists
        the public key in its ``curve_allowed_keys``.  Default: the cluster's keypair from the
        connection file.
    tune_gc:
        If this process still uses CPython's default garbage-collector thresholds, collect the
        youngest generation every 10,000 allocations instead of every 700 (see
        :mod:`ipcluster.gctune`: 20–30 % more small tasks per second).  ``False`` leaves them alone.

    Examples
    --------
    >>> rc = Client(profile="default")        # doctest: +SKIP
    >>> rc.wait_for_engines(4)                 # doctest: +SKIP
    >>> rc[:].apply_sync(os.getpid)            # doctest: +SKIP
    """

    def __init__(
        self,
        url_file: str | os.PathLike[str] | None = None,
        profile: str | None = None,
        cluster_id: str | None = None,
        profile_dir: str | os.PathLike[str] | None = None,
        context: zmq.Context | None = None,
        timeout: float = 10,
        direct: bool = True,
        sshserver: str | None = None,
        sshkey: str | None = None,
        ssh_args: Sequence[str] = (),
        curve_publickey: str | None = None,
        curve_secretkey: str | None = None,
        tune_gc: bool = True,
        **kwargs: Any,
    ):
        if kwargs:
            raise TypeError(f"Client() got unexpected keyword argument(s): {', '.join(kwargs)}")
        if tune_gc:
            relax_gc()
        self.url_file = Path(url_file) if url_file else _default_connection_file(profile, profile_dir, cluster_id)
        self.connection_info: ConnectionInfo = _wait_for_file(self.url_file, timeout)
        self._tunnel: Any = None
        if sshserver:
            from ipcluster.client.tunnel import SSHTunnel

            self._tunnel = SSHTunnel(sshserver, sshkey=sshkey, ssh_args=ssh_args, timeout=timeout)
            self.connection_info = self._tunnel.open(self.connection_info)
        self._curve: tuple[str, str] | None = None
        self._hub_answered = False
        if self.connection_info.curve_serverkey:
            from ipcluster.protocol.curve import client_keypair

            self._curve = client_keypair(self.connection_info, curve_publickey, curve_secretkey)
            direct = False  # engines' same-host sockets are not encrypted: use the controller's
        self.session = Session(self.connection_info.key_bytes)
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._tracker = RequestTracker()
        self._engines: dict[int, bytes] = {}
        self._direct = direct
        self._host_key = host_key()
        self._direct_urls: dict[bytes, str] = {}  # same-host engines: uuid -> their direct socket
        self._raw_urls: dict[bytes, str] = {}  # same-host engines: uuid -> their raw listener (blocking calls)
        self._routes = RouteTable(on_released=lambda name: self._io.remove(name))
        self._broadcasts = BroadcastParts()  # outstanding BroadcastView requests
        self._engine_changed = threading.Condition()
        self._hub_waiting: dict[str, concurrent.futures.Future[Message]] = {}
        self._remote_waits = hubresults.RemoteWaits()  # get_result of requests pending elsewhere
        self._closed = False
        self._controller_gone: str | None = None
        self._persistent = False  # the controller has a task store: it comes back when restarted
        self._reconnect = Reconnector(self)
        self._blocking = BlockingCalls(self, self._ctx, self.session.session_id.encode("ascii"))
        self._io = IOThread()
        try:
            self._connect(timeout)
        except BaseException:
            self.close()
            raise
        self._io.loop.call_soon_threadsafe(self._trim_buffers)
        _activate_magics(self)

    def _trim_buffers(self) -> None:
        """(IO thread, every few seconds) Let go of large receive buffers unused for a while, so a
        big result that was dropped does not keep its memory (see :mod:`ipcluster.protocol.bufpool`)."""
        if self._closed:
            return
        segments.trim()
        self._io.loop.call_later(BUFFER_TRIM_INTERVAL, self._trim_buffers)

    # --- connection ---------------------------------------------------------------------------

    def _connect(self, timeout: float) -> None:
        ident = self.session.session_id.encode("ascii")
        info = self.connection_info
        self._mux_url = info.url("mux_front")  # for blocking tasks (a file-system check per call otherwise)
        raw = os.path.join(info.ipc_dir, rawlink.CONTROLLER_LISTENER) if info.local_ipc else ""
        # the controller's raw listener (no CurveZMQ): blocking load-balanced tasks go there
        self._controller_raw = raw if raw and not info.curve_serverkey and os.path.exists(raw) else ""
        socks = {}
        for role, kind, url_role in (("hub", zmq.DEALER, "hub"), ("mux", zmq.DEALER, "mux_front"),
                                     ("control", zmq.DEALER, "control_front")):
            s = self._ctx.socket(kind)
            s.setsockopt(zmq.IDENTITY, ident)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            set_limit(s, REQUEST if role == "control" else DATA, info.max_message_size)
            if self._curve is not None:
                from ipcluster.protocol.curve import set_client_keys

                set_client_keys(s, info, self._curve)
            socks[role] = s
        # watched from before it connects, so a refused handshake cannot go unseen
        monitor = socks["hub"].get_monitor_socket(zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED
                                                  | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        for role, url_role in (("hub", "hub"), ("mux", "mux_front"), ("control", "control_front")):
            socks[role].connect(info.url(url_role))
        direct = self._ctx.socket(zmq.ROUTER)
        direct.setsockopt(zmq.IDENTITY, ident)
        direct.setsockopt(zmq.ROUTER_MANDATORY, 1)  # not connected yet -> EHOSTUNREACH -> use mux
        direct.setsockopt(zmq.LINGER, 0)
        direct.setsockopt(zmq.SNDHWM, 0)
        direct.setsockopt(zmq.RCVHWM, 0)
        set_limit(direct, DATA, info.max_message_size)
        self._io.add("hub", socks["hub"], self._on_hub)
        # replies read in one pass complete their futures together (RequestTracker.batch)
        mux = self._io.add("mux", socks["mux"], self._on_engine_message, batch=self._tracker.batch)
        self._io.add("direct", direct, self._on_engine_message, batch=self._tracker.batch)
        self._io.add("control", socks["control"], self._on_engine_message, batch=self._tracker.batch)
        self._io.add("monitor", monitor, self._on_monitor)
        try:
            reply = self._hub_request(M.CONNECTION_REQUEST, {}, timeout)
        except errors.TimeoutError:
            raise errors.ControllerError(
                f"no answer from the controller at {info.location} within {timeout} s "
                f"(connection file {self.url_file}); is the cluster running?") from None
        self._hub_answered = True
        self._persistent = bool(reply.content.get("persistent"))
        if reply.content.get("batches") is True:  # (a controller of an older version does not say so)
            # small messages queued together (tasks submitted in a loop) go as one batch
            mux.packer = functools.partial(batching.pack_queue, self.session, idents=[batching.BATCH_TARGET],
                                           max_parts=CLIENT_BATCH_PARTS)
        engines = reply.content.get("engines", {})

        def add_all() -> None:
            for eid, e in engines.items():
                self._add_engine(int(eid), e)

        self._io.call(add_all)

    def _hub_request(self, msg_type: str, content: dict[str, Any], timeout: float | None = 10) -> Message:
        self._check_open()
        header = self.session.header(msg_type)
        fut: concurrent.futures.Future[Message] = concurrent.futures.Future()
        self._hub_waiting[header["msg_id"]] = fut
        if self._controller_gone:  # (checked after registering: a later loss fails the future itself)
            self._hub_waiting.pop(header["msg_id"], None)
            raise errors.ControllerError(self._controller_gone)
        self._io.send("hub", self.session.serialize(msg_type, content, header=header))
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise errors.TimeoutError(f"{msg_type}: no reply from the controller within {timeout} s") from None
        finally:
            self._hub_waiting.pop(header["msg_id"], None)

    # --- IO-thread handlers -------------------------------------------------------------------

    def _decode(self, frames: list[zmq.Frame], route: str) -> Message | None:
        try:
            return self.session.deserialize(frames)
        except errors.ProtocolError as e:
            n = sum(self.session.rejected.values())
            if n == 1 or n % 1000 == 0:
                log.warning("dropped a message on %s: %s (%d so far)", route, e, n)
            return None

    def _on_hub(self, frames: list[zmq.Frame]) -> None:
        msg = self._decode(frames, "hub")
        if msg is None:
            return
        t = msg.msg_type
        if t == M.ENGINE_REGISTERED_NOTIFICATION:
            self._add_engine(int(msg.content["id"]), msg.content)
        elif t == M.ENGINE_UNREGISTERED_NOTIFICATION:
            eid = int(msg.content["id"])
            with self._engine_changed:
                uuid = self._engines.pop(eid, None)
                self._engine_changed.notify_all()
            if uuid is not None:
                self._drop_direct(uuid)
                reason = msg.content.get("reason", "unregistered")
                self._tracker.fail_engine(uuid, functools.partial(
                    _engine_gone_error, eid, reason, msg.content.get("killed") or {}))
        elif t == M.CONTROLLER_SHUTDOWN_NOTIFICATION:
            self._lose_controller("the controller shut down")
        elif t == M.RESULT_NOTIFICATION:
            hubresults.on_notification(self, msg)
            self._reconnect.on_notification(msg)
        else:
            fut = self._hub_waiting.get(msg.parent_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _add_engine(self, eid: int, info: dict[str, Any]) -> None:
        """Record an engine (IO thread); connect straight to it when it runs on this host."""
        uuid = str(info["uuid"]).encode("ascii")
        url = info.get("direct_url")
        if self._direct and url and info.get("host_key") == self._host_key and uuid not in self._direct_urls:
            try:
                self._io.channels["direct"].sock.connect(url)
                self._direct_urls[uuid] = url
                if info.get("raw_url"):
                    self._raw_urls[uuid] = str(info["raw_url"])
            except zmq.ZMQError as e:
                log.warning("cannot connect directly to engine %d at %s: %s", eid, url, e)
        with self._engine_changed:
            self._engines[eid] = uuid
            self._engine_changed.notify_all()

    def _drop_direct(self, uuid: bytes) -> None:
        self._raw_urls.pop(uuid, None)
        url = self._direct_urls.pop(uuid, None)
        ch = self._io.channels.get("direct")
        if url is not None and ch is not None:
            try:
                with ch.lock:
                    ch.sock.disconnect(url)
            except zmq.ZMQError:
                pass

    def _on_engine_message(self, frames: list[Any]) -> None:
        if len(frames) > 1 and batching.is_batch_target(frames[0]):
            self._on_batch(frames)
            return
        msg = self._decode(frames, "mux")
        if msg is None:
            return
        self._on_engine_msg(msg)

    def _on_batch(self, frames: list[Any]) -> None:
        """Messages the controller sent together (``ipcluster.protocol.batch``): each part as if alone."""
        msg = self._decode(frames, "mux")
        if msg is None:
            return
        try:
            parts = batching.unpack(msg)
        except errors.ProtocolError as e:
            log.warning("dropped a batch on mux: %s", e)
            return
        for part in parts:
            if batching.is_batch_target(part[0]):
                log.warning("dropped a batch inside a batch on mux")
                continue
            try:
                inner = self.session.deserialize(part, presigned=True)
            except errors.ProtocolError as e:
                log.warning("dropped a part of a batch on mux: %s", e)
                continue
            self._on_engine_msg(inner)

    def _on_engine_msg(self, msg: Message) -> None:
        if msg.msg_type == M.BROADCAST_REPLY:
            self._on_coalesced(msg)
        else:
            self._on_engine_reply(msg)

    def _on_coalesced(self, msg: Message) -> None:
        """A coalesced broadcast reply: every part is an engine's (or the controller's) signed reply."""
        try:
            parts = split_parts(msg.content.get("parts"), msg.buffers)
        except ValueError as e:
            log.warning("dropped a broadcast reply: %s", e)
            return
        for part in parts:
            try:
                inner = self.session.deserialize(part, has_idents=False)
            except errors.ProtocolError as e:
                log.warning("dropped a part of a broadcast reply: %s", e)
                continue
            self._on_engine_reply(inner)

    def _on_engine_reply(self, msg: Message) -> None:
        if self._broadcasts and not self._broadcasts.rename(msg):
            return
        if msg.msg_type in M.OUTPUT_TYPES:
            self._tracker.on_output(msg)
        else:
            self._tracker.on_reply(msg)

    def _on_monitor(self, frames: list[zmq.Frame]) -> None:
        event = parse_monitor_message([f.bytes for f in frames])
        if self._closed or self._controller_gone:  # the first reason given stays the reason
            return
        where = f"the controller at {self.connection_info.location}"
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._reconnect.back()  # (nothing to do unless the connection had been lost)
        elif event["event"] == zmq.EVENT_DISCONNECTED and self._persistent and self._hub_answered:
            self._reconnect.lost()  # a controller with a task store is restarted: wait for it
        elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self._lose_controller(f"{where} refused this client's CurveZMQ key (not on its allow-list)")
        elif event["event"] & _HANDSHAKE_FAILED or not self._hub_answered:
            self._lose_controller(f"{where} refused the connection in the security handshake: CurveZMQ on one "
                                  "side only (enable_curve), or a stale connection file?")
        elif event["event"] == zmq.EVENT_DISCONNECTED:
            self._lose_controller(f"lost the connection to the controller at {self.connection_info.location}")

    def _lose_controller(self, why: str) -> None:
        self._controller_gone = why
        self._tracker.fail_all(lambda m: errors.ControllerError(why))
        self._remote_waits.fail_all(errors.ControllerError(why))
        for fut in list(self._hub_waiting.values()):
            if not fut.done():
                fut.set_exception(errors.ControllerError(why))

    # --- engines ------------------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        """Ids of the registered engines, sorted."""
        with self._engine_changed:
            return sorted(self._engines)

    def __len__(self) -> int:
        return len(self._engines)

    def wait_for_engines(self, n: int | None = None, timeout: float = -1, block: bool = True) -> None:
        """Wait until at least *n* engines are registered (default: at least one).

        Raises :class:`ipcluster.TimeoutError` after *timeout* seconds (``-1``: wait forever).
        """
        want = 1 if n is None else n
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with self._engine_changed:
            while len(self._engines) < want:
                if self._controller_gone:
                    raise errors.ControllerError(self._controller_gone)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise errors.TimeoutError(
                        f"{len(self._engines)} of {want} engines registered after {timeout} s")
                self._engine_changed.wait(remaining if remaining is not None else 1.0)

    def _resolve_targets(self, targets: Targets) -> tuple[list[int], bool]:
        """Engine ids for *targets*, and whether a single int was given."""
        with self._engine_changed:
            return resolve_targets(targets, sorted(self._engines), set(self._engines))

    def _uuid(self, engine_id: int) -> bytes:
        try:
            return self._engines[engine_id]
        except KeyError:
            raise errors.NoEnginesRegistered(f"engine {engine_id} is not registered") from None

    # --- sending ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise errors.IPClusterError("this Client is closed")

    def send_apply(self, engine_ids: Sequence[int], f: Any, args: Sequence[Any] = (),
                   kwargs: dict[str, Any] | None = None, wait: bool = False,
                   metadata: dict[str, Any] | None = None, futures: Sequence[Any] | None = None,
                   ) -> tuple[list[str], list[concurrent.futures.Future[Any]]]:
        """Send ``f(*args, **kwargs)`` to each engine (pickled once); returns msg_ids and futures.

        With ``wait=True`` it returns once every request is done (the caller blocks anyway), which
        lets it receive the replies itself when the engines run on this host.  *futures*: one per
        engine, the futures to complete (see :meth:`RequestTracker.register`), else new ones.
        """
        self._check_open()
        buffers = pack_apply_message(f, args, kwargs or {})
        return self._send_each(engine_ids, M.APPLY_REQUEST, {}, buffers, wait=wait, metadata=metadata,
                               into=futures)

    def send_apply_each(self, calls: Sequence[tuple[int, Any, Sequence[Any]]], wait: bool = False,
                        metadata: dict[str, Any] | None = None,
                        ) -> tuple[list[str], list[concurrent.futures.Future[Any]]]:
        """Send ``f(*args)`` to engine ``eid`` for each ``(eid, f, args)`` of *calls* (one call each,
        e.g. scatter's parts); returns msg_ids and futures in order.  With ``wait=True`` as
        :meth:`send_apply`: every request goes out before the first reply is waited for."""
        self._check_open()
        packed = [pack_apply_message(f, args, {}) for _, f, args in calls]
        return self._send_each([eid for eid, _, _ in calls], M.APPLY_REQUEST, {}, (), wait=wait,
                               metadata=metadata, per_engine_buffers=packed)

    def send_execute(self, engine_ids: Sequence[int], code: str, silent: bool = False, wait: bool = False,
                     metadata: dict[str, Any] | None = None,
                     ) -> tuple[list[str], list[concurrent.futures.Future[Any]]]:
        self._check_open()
        return self._send_each(engine_ids, M.EXECUTE_REQUEST, {"code": code, "silent": silent}, (), wait=wait,
                               metadata=metadata)

    def _send_each(self, engine_ids: Sequence[int], msg_type: str, content: dict[str, Any],
                   buffers: Sequence[Any], channel: str = "mux", record: bool = True, wait: bool = False,
                   metadata: dict[str, Any] | None = None,
                   per_engine_buffers: Sequence[Sequence[Any]] | None = None,
                   into: Sequence[Any] | None = None,
                   ) -> tuple[list[str], list[concurrent.futures.Future[Any]]]:
        msg_ids, futures, uuids, requests = [], [], [], []
        for i, eid in enumerate(engine_ids):
            if per_engine_buffers is not None:
                buffers = per_engine_buffers[i]
            uuid = self._uuid(eid)
            header = self.session.header(msg_type)
            msg_id = header["msg_id"]
            futures.append(self._tracker.register(msg_id, uuid, eid, record=record,
                                                  future=None if into is None else into[i]))
            msg_ids.append(msg_id)
            uuids.append(uuid)
            requests.append(self.session.serialize(msg_type, content, header=header, buffers=buffers,
                                                   idents=[uuid], metadata=metadata))
        urls = [self._direct_urls.get(u) for u in uuids]
        if wait and channel == "mux" and self._can_block_here(uuids, urls):
            self._blocking.run(uuids, urls, requests, futures,  # type: ignore[arg-type]
                               raw_urls=[self._raw_urls.get(u) for u in uuids])
        else:
            for uuid, frames, fut in zip(uuids, requests, futures):
                if channel == "mux":
                    self._send_request(uuid, frames, fut)
                else:
                    self._io.send(channel, frames)
        if self._controller_gone:
            for m in msg_ids:
                self._tracker.fail(m, errors.ControllerError(self._controller_gone))
        return msg_ids, futures

    def send_task(self, buffers: Sequence[Any], metadata: dict[str, Any], depends_on: set[str] = set(),
                  msg_type: str = M.APPLY_REQUEST, content: dict[str, Any] | None = None,
                  wait: bool = False, future: Any = None) -> tuple[str, concurrent.futures.Future[Any]]:
        """Send a task to the controller's scheduler; returns its msg_id and future.

        A task is an ``apply_request`` (*buffers* hold the call) or an ``execute_request``
        (*content* holds the code); the scheduler places either without looking inside.

        The scheduler may not have seen the requests a task depends on (direct-route ones): the
        task carries the outcomes this client knows, lists the ones still outstanding here, and the
        client reports those outcomes to the controller when they arrive.

        With ``wait=True`` it returns once the task is done (the caller blocks anyway): the calling
        thread sends it and receives the reply on a socket of its own (see ``blocking.py``).
        *future*: the future to complete (see :meth:`RequestTracker.register`), else a new one.
        """
        self._check_open()
        header = self.session.header(msg_type)
        msg_id = header["msg_id"]
        fut = self._tracker.register(msg_id, M.SCHEDULER, None, future=future)
        pending: dict[str, concurrent.futures.Future[Any]] = _NO_PENDING
        md = metadata
        if depends_on:  # (the scheduler reads absent "known" / "pending" as empty)
            pending = {d: f for d in depends_on if (f := self._tracker.futures.get(d)) is not None and not f.done()}
            md = dict(metadata, known=self._known_outcomes(depends_on - set(pending)), pending=sorted(pending))
        block_here = wait and not pending and self._can_block_task_here()
        if block_here and self._direct:
            reply_to = self._blocking.reply_route(list(self._direct_urls.values()), dict(self._raw_urls))
            if reply_to is not None:
                md = dict(md, reply_to=reply_to.decode("ascii"))
        frames = self.session.serialize(msg_type, content or {}, header=header, metadata=md, buffers=buffers,
                                        idents=[M.SCHEDULER])
        if block_here:
            self._blocking.run([M.SCHEDULER], [self._mux_url], [frames], [fut], to_controller=True,
                               raw_urls=[self._controller_raw] if self._controller_raw else ())
        else:
            self._io.send("mux", frames)
        if pending:
            for dep_id, dep_fut in pending.items():
                dep_fut.add_done_callback(functools.partial(self._report_outcome_cb, dep_id))
        return msg_id, fut

    def _report_outcome_cb(self, msg_id: str, _: Any) -> None:
        self._report_outcome(msg_id)

    def _report_outcome(self, msg_id: str) -> None:
        """Tell the controller how a request a task depends on ended (it may not have seen it)."""
        outcome = self._known_outcomes({msg_id}).get(msg_id)
        if outcome is None or self._closed:
            return
        try:
            self._io.send("hub", self.session.serialize(M.TASK_OUTCOME_NOTIFICATION, {"msg_id": msg_id, **outcome}))
        except zmq.ZMQError:
            pass  # the controller is gone; the task fails with it

    def _known_outcomes(self, msg_ids: set[str]) -> dict[str, dict[str, Any]]:
        known = {}
        for m in msg_ids:
            md = self._tracker.metadata.get(m)
            if md is not None and md.get("status") and md.get("engine_uuid"):
                known[m] = {"success": md["status"] == "ok", "engine": md["engine_uuid"]}
        return known

    def _can_block_task_here(self) -> bool:
        """Whether this thread may send a task and receive its reply itself: not the IO thread, the
        controller still there, and no CurveZMQ (the thread's socket would need the keys too)."""
        return (not self._io.in_io_thread() and not self._controller_gone
                and getattr(self, "_curve", None) is None)

    def _can_block_here(self, uuids: Sequence[bytes], urls: Sequence[str | None]) -> bool:
        """Whether this thread may send and receive a blocking call itself (see ``blocking.py``):
        engines on this host, nothing outstanding to them (order), not the IO thread."""
        if not self._direct or self._io.in_io_thread() or not all(urls):
            return False
        return not self._routes.any_active(uuids)

    def _send_request(self, uuid: bytes, frames: list[Any], fut: concurrent.futures.Future[Any]) -> None:
        """Send on the engine's active route; with none, directly when possible, else through the
        controller (see ``routes.py``)."""
        route = self._routes.active(uuid) or ("direct" if uuid in self._direct_urls else "mux")
        if route == "direct":
            try:
                self._io.send("direct", frames)
            except zmq.ZMQError as e:
                if e.errno != zmq.EHOSTUNREACH:  # not connected yet (or gone): use the controller
                    raise
                route = "mux"
                self._io.send("mux", frames)
        elif route == "mux":
            self._io.send("mux", frames)
        else:
            self._io.send(route, frames[1:])  # an adopted DEALER needs no routing id
        self._routes.pending(uuid, route, [fut])

    def _adopt_route(self, uuid: bytes, sock: "zmq.Socket | rawlink.RawLink", futures: Sequence[concurrent.futures.Future[Any]]) -> None:
        """Take over a blocking call's socket whose caller stopped waiting (IO thread receives now)."""
        name = self._routes.new_adopted_name()
        if isinstance(sock, rawlink.RawLink):
            self._io.add_raw(name, sock, self._on_engine_message)
        else:
            self._io.add(name, sock, self._on_engine_message, batch=self._tracker.batch)
        self._routes.pending(uuid, name, futures)

    def _control(self, engine_ids: Sequence[int], msg_type: str, content: dict[str, Any],
                 block: bool | None, fname: str) -> Any:
        from ipcluster.client.asyncresult import AsyncResult

        msg_ids, futures = self._send_each(engine_ids, msg_type, content, (), channel="control", record=False)
        ar = AsyncResult(self, msg_ids, futures, fname=fname)
        if block is None or block:
            ar.get()
            return None
        return ar

    # --- control ------------------------------------------------------------------------------

    def abort(self, jobs: str | Iterable[str] | Any = None, targets: Targets = None,
              block: bool | None = None) -> Any:
        """Abort queued requests (by msg_id or AsyncResult; default: all of this client's outstanding).

        Aborted requests fail with :class:`ipcluster.TaskAborted`; requests already running finish.
        Load-balanced tasks are aborted in the controller's queue, or on the engine they were sent to.
        """
        if jobs is None:
            wanted: set[str] | None = None
        else:
            items = [jobs] if isinstance(jobs, str) or hasattr(jobs, "msg_ids") else list(jobs)
            wanted = set()
            for j in items:
                wanted.update(getattr(j, "msg_ids", [j]))
        if targets is None:
            tasks = [m for m in self._tracker.outstanding_on(M.SCHEDULER) if wanted is None or m in wanted]
            if tasks:  # on the route the tasks took, so it cannot overtake them
                header = self.session.header(M.TASK_ABORT_REQUEST)
                fut = self._tracker.register(header["msg_id"], M.SCHEDULER, None, record=False)
                self._io.send("mux", self.session.serialize(M.TASK_ABORT_REQUEST, {"msg_ids": tasks},
                                                            header=header, idents=[M.SCHEDULER]))
                fut.result(10)
        if not self._engines:
            return None
        engine_ids, _ = self._resolve_targets(targets)
        per_engine = {}
        for eid in engine_ids:
            ids = self._tracker.outstanding_on(self._uuid(eid))
            if wanted is not None:
                ids = [m for m in ids if m in wanted]
            if ids:
                # a broadcast's part "<msg_id>/<engine id>" is the request <msg_id> on that engine
                per_engine[eid] = sorted({m.split("/", 1)[0] for m in ids})
        if not per_engine:
            return None
        results = [self._control([eid], M.ABORT_REQUEST, {"msg_ids": ids}, False, "abort")
                   for eid, ids in per_engine.items()]
        if block is None or block:
            for ar in results:
                ar.get()
            return None
        return results

    def cancel(self, jobs: str | Iterable[str] | Any) -> None:
        """Stop requests (msg_ids or AsyncResults), running or not, without waiting for them to end.

        Queued ones are aborted (``TaskAborted``); running ones are interrupted and, if still
        running after the engine supervisor's grace period, killed with their engine, which is
        restarted (``TaskCancelled``).  The aborts go first: the running requests are stopped once
        the engines confirm them (at most :data:`ABORT_FIRST` seconds later), so a request queued
        behind a running one is skipped rather than started and interrupted.
        """
        items = [jobs] if isinstance(jobs, str) or hasattr(jobs, "msg_ids") else list(jobs)
        wanted: set[str] = set()
        for j in items:
            wanted.update(getattr(j, "msg_ids", [j]))
        tasks = [m for m in self._tracker.outstanding_on(M.SCHEDULER) if m in wanted]
        if tasks:  # on the route the tasks took, so it cannot overtake them
            header = self.session.header(M.TASK_ABORT_REQUEST)
            self._tracker.register(header["msg_id"], M.SCHEDULER, None, record=False)
            self._io.send("mux", self.session.serialize(M.TASK_ABORT_REQUEST, {"msg_ids": tasks, "cancel": True},
                                                        header=header, idents=[M.SCHEDULER]))
        direct: dict[str, str] = {}
        per_engine: dict[int, list[str]] = {}
        for eid, uuid in list(self._engines.items()):
            ids = sorted({m.split("/", 1)[0] for m in self._tracker.outstanding_on(uuid)} & wanted)
            if ids:
                per_engine[eid] = ids
                direct.update((m, uuid.decode("ascii")) for m in ids)
        aborts = [self._control([eid], M.ABORT_REQUEST, {"msg_ids": ids}, False, "abort")
                  for eid, ids in per_engine.items()]  # queued on the engine: it skips them
        if aborts and not self._io.in_io_thread():  # (the IO thread would wait for itself)
            concurrent.futures.wait(aborts, timeout=ABORT_FIRST)
        if direct:  # running: the engine's supervisor stops them
            self._io.send("hub", self.session.serialize(M.TASK_CANCEL_REQUEST, {"tasks": direct}))

    def clear(self, targets: Targets = None, block: bool | None = None) -> Any:
        """Clear the namespace of the target engines."""
        engine_ids, _ = self._resolve_targets(targets)
        return self._control(engine_ids, M.CLEAR_REQUEST, {}, block, "clear")

    def send_signal(self, signum: int, targets: Targets = None, block: bool | None = None,
                    msg_ids: str | Iterable[str] | Any = None) -> Any:
        """Send signal *signum* (e.g. ``signal.SIGINT``) to the target engine processes.

        With *msg_ids* (msg_ids or AsyncResults; SIGINT only) the interrupt is for those requests
        alone: an engine interrupts the request it runs if it is one of them, and otherwise
        ignores the signal, also when the request ended while the signal was on its way (its
        reply content says ``interrupting``).  Without, the engine interrupts whatever it runs.
        """
        content: dict[str, Any] = {"signum": int(signum)}
        if msg_ids is not None:
            if int(signum) != signal.SIGINT:
                raise ValueError(f"send_signal(msg_ids=...) sends SIGINT only, not signal {int(signum)}")
            items = [msg_ids] if isinstance(msg_ids, str) or hasattr(msg_ids, "msg_ids") else list(msg_ids)
            content["msg_ids"] = [str(m) for j in items for m in getattr(j, "msg_ids", [j])]
        engine_ids, _ = self._resolve_targets(targets)
        return self._control(engine_ids, M.SIGNAL_REQUEST, content, block, "signal")

    def shutdown(self, targets: Targets = "all", restart: bool = False, hub: bool = False,
                 block: bool | None = None) -> None:
        """Stop the target engines; with ``hub=True`` also stop the controller."""
        if restart:
            raise ValueError("restart=True is not supported: engines are restarted by their launcher")
        ids = self.ids if targets in (None, "all") else self._resolve_targets(targets)[0]
        if ids:
            ar = self._control(ids, M.SHUTDOWN_REQUEST, {"restart": False}, False, "shutdown")
            if block is None or block:
                try:
                    ar.get(timeout=10)
                except (errors.EngineError, errors.CompositeError, errors.ControllerError):
                    pass  # an engine that is already gone is as shut down as we need
        if hub:
            try:
                self._hub_request(M.CONTROLLER_SHUTDOWN_REQUEST, {}, timeout=10)
            except errors.ControllerError:
                pass

    def queue_status(self, targets: Targets = None, verbose: bool = False) -> dict[Any, Any]:
        """``{engine_id: {"queue": n, "completed": n}, "unassigned": n}`` from the controller."""
        target_ids = None if targets is None else self._resolve_targets(targets)[0]
        reply = self._hub_request(M.QUEUE_STATUS_REQUEST, {"targets": target_ids, "verbose": verbose})
        out: dict[Any, Any] = {int(k): v for k, v in reply.content.get("engines", {}).items()}
        out["unassigned"] = reply.content.get("unassigned", 0)
        return out

    def controller_state(self, verbose: bool = False, objects: bool = False,
                         timeout: float | None = 10) -> dict[str, Any]:
        """Diagnostics from the controller: ``sizes`` of its per-task and per-client structures,
        ``dropped`` (refused messages by route and reason, and the totals by check: signature,
        replay, stale, malformed) and ``violations`` (broken bookkeeping invariants; empty when all is
        well).  With *verbose*, also the msg_ids pending on each engine and in the scheduler; with
        *objects*, the counts of the most numerous object types in the controller (slow: for leaks)."""
        content = self._hub_request(M.CONTROLLER_STATE_REQUEST, {"verbose": verbose, "objects": objects},
                                    timeout).content
        content.pop("status", None)
        return content

    # --- the controller's task records -------------------------------------------------------
    # They cover requests that went through the controller: load-balanced tasks, and DirectView
    # requests from a Client(direct=False) or another host.  Same-host DirectView requests go
    # straight to the engine and only their sender knows them.

    def hub_history(self) -> list[str]:
        """msg_ids of the requests the controller has records of, in the order it received them.

        Only requests that went through the controller (see :meth:`get_result`); at most the last
        100,000.
        """
        return list(self._hub_request(M.HISTORY_REQUEST, {}).content.get("history") or [])

    def db_query(self, query: dict[str, Any], keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The controller's task records matching *query*, oldest first, as dicts.

        *query* maps a field to a value (equality) or to operators ``$in $nin $eq $ne $lt $lte $gt
        $gte``: ``{"completed": {"$gt": t}}`` selects records completed after *t*.  Fields:
        ``msg_id client msg_type engine_id engine_uuid submitted received started completed status
        ename request_bytes result_bytes``; *keys* selects some (``msg_id`` always comes back).
        Only requests that went through the controller (see :meth:`get_result`).

        Raises ``ValueError`` for an unknown operator or field.
        """
        reply = self._hub_request(M.DB_QUERY_REQUEST, {"query": query, "keys": None if keys is None else list(keys)})
        if reply.content.get("status") != "ok":
            raise ValueError(reply.content.get("evalue") or "invalid query")
        return list(reply.content.get("records") or [])

    def result_status(self, msg_ids: Any) -> dict[str, list[str]]:
        """``{"completed": [...], "pending": [...], "unknown": [...]}`` for msg_ids (or AsyncResults):
        from this client's own bookkeeping first, else from the controller's records."""
        from ipcluster.client import hubresults

        return hubresults.result_status(self, hubresults.msg_ids_of(msg_ids))

    def get_result(self, msg_ids: Any, block: bool | None = None) -> Any:
        """An :class:`AsyncResult` for msg_ids (one or a list), also ones another client submitted.

        A request this client sent comes from its own bookkeeping; any other is fetched from the
        controller, which keeps results of requests that went through it (load-balanced tasks,
        DirectView requests from a ``Client(direct=False)`` or another host) within a memory budget,
        newest first.  A request still queued or running there gives an AsyncResult that finishes
        when it does.  Raises :class:`ipcluster.IPClusterError` for a msg_id nobody knows or one whose
        result the controller no longer keeps.  With ``block=True`` it waits for the results before
        returning.
        """
        from ipcluster.client.asyncresult import AsyncResult

        single = isinstance(msg_ids, str)
        ids = hubresults.msg_ids_of(msg_ids)
        futures = {m: f for m in ids if (f := hubresults.local_future(self, m)) is not None}
        remote = [m for m in dict.fromkeys(ids) if m not in futures]
        if remote:
            futures.update(hubresults.fetch(self, remote))
        ar = AsyncResult(self, ids, [futures[m] for m in ids], fname="get_result", single=single)
        if block:
            ar.wait()
        return ar

    # --- bookkeeping --------------------------------------------------------------------------

    @property
    def results(self) -> dict[str, Any]:
        return self._tracker.results

    @property
    def metadata(self) -> dict[str, Metadata]:
        return self._tracker.metadata

    @property
    def history(self) -> Any:
        """msg_ids of requests sent, oldest first (the last 100,000)."""
        return self._tracker.history

    @property
    def outstanding(self) -> set[str]:
        return self._tracker.outstanding

    def purge_results(self, jobs: Iterable[Any] | str | None = None) -> None:
        """Forget finished results (by msg_id or AsyncResult; default: all) to free memory.

        The client also forgets the oldest results by itself past 64 MiB of result buffers or
        100,000 requests; an :class:`AsyncResult` you hold keeps its value either way.
        """
        if jobs is None or jobs == "all":
            self._tracker.purge()
            return
        items = [jobs] if isinstance(jobs, str) or hasattr(jobs, "msg_ids") else list(jobs)
        ids: list[str] = []
        for j in items:
            ids.extend(getattr(j, "msg_ids", [j]))
        self._tracker.purge(ids)

    def wait(self, jobs: Iterable[Any] | None = None, timeout: float = -1) -> bool:
        """Wait for *jobs* (AsyncResults or msg_ids; default: everything outstanding); ``True`` if done."""
        futs: list[concurrent.futures.Future[Any]] = []
        for j in list(jobs) if jobs is not None else list(self._tracker.outstanding):
            if isinstance(j, concurrent.futures.Future):
                futs.append(j)
            else:
                f = self._tracker.futures.get(j)
                if f is not None:
                    futs.append(f)
        done, pending = concurrent.futures.wait(futs, timeout=None if timeout < 0 else timeout)
        return not pending

    def wait_interactive(self, jobs: Iterable[Any] | None = None, interval: float = 0.1,
                         timeout: float = -1) -> bool:
        """:meth:`wait` with a progress bar (see :meth:`AsyncResult.wait_interactive`)."""
        from ipcluster.client.asyncresult import wait_with_progress

        futs: list[concurrent.futures.Future[Any]] = []
        for j in list(jobs) if jobs is not None else list(self._tracker.outstanding):
            if isinstance(j, concurrent.futures.Future):
                futs.append(j)
            elif (f := self._tracker.futures.get(j)) is not None:
                futs.append(f)
        return wait_with_progress(futs, interval, timeout, desc="outstanding")

    def spin(self) -> None:
        """Kept for ipyparallel compatibility: the IO thread always processes messages."""

    # --- views --------------------------------------------------------------------------------

    def direct_view(self, targets: Targets = "all") -> Any:
        """A :class:`~ipcluster.DirectView` on *targets* (``'all'`` follows engines as they come and go)."""
        from ipcluster.client.view import DirectView

        if targets is not None and targets != "all":
            self._resolve_targets(targets)  # fail early on bad targets
        return DirectView(self, "all" if targets is None else targets)

    def load_balanced_view(self, targets: Targets = None) -> Any:
        """A :class:`~ipcluster.LoadBalancedView`: tasks placed by the controller's scheduler,
        optionally only on *targets*."""
        from ipcluster.client.lbview import LoadBalancedView

        return LoadBalancedView(self, targets)

    def broadcast_view(self, targets: Targets = "all", is_coalescing: bool = False) -> Any:
        """A :class:`~ipcluster.BroadcastView` on *targets*: one message per call, fanned out to
        the engines by the controller; with *is_coalescing* the replies come back as one message."""
        from ipcluster.client.broadcast import BroadcastView

        if targets is not None and targets != "all":
            self._resolve_targets(targets)  # fail early on bad targets
        return BroadcastView(self, "all" if targets is None else targets, is_coalescing=is_coalescing)

    def executor(self, targets: Targets = None) -> Any:
        """A :class:`concurrent.futures.Executor` over ``load_balanced_view(targets)``.

        Shutting the executor down leaves this client and the cluster running.
        """
        from ipcluster.client.executor import ViewExecutor

        return ViewExecutor(self.load_balanced_view(targets))

    def activate(self, targets: Targets = "all", suffix: str = "") -> Any:
        """Make ``%px<suffix>`` (and ``%%px``, ``%autopx``, ``%pxresult``, ``%pxconfig`` with the
        same suffix) run on a DirectView of *targets*; returns that view.  IPython only."""
        view = self.direct_view(targets)
        view.activate(suffix)
        return view

    def __getitem__(self, key: int | slice | Sequence[int]) -> Any:
        from ipcluster.client.view import DirectView

        if isinstance(key, slice):
            ids, _ = self._resolve_targets(key)
            return DirectView(self, ids)
        ids, single = self._resolve_targets(key)
        return DirectView(self, ids[0] if single else ids)

    # --- lifecycle ----------------------------------------------------------------------------

    def close(self, linger: int | None = None) -> None:
        """Disconnect: fail anything still outstanding, stop the IO thread, close the sockets."""
        if self._closed:
            return
        if getattr(self, "_io", None) is not None and self._io.alive and "hub" in self._io.channels \
                and not self._controller_gone:  # (a send with nobody to take it would block the IO thread)
            try:
                self._io.send("hub", self.session.serialize(M.DISCONNECT_NOTIFICATION, {}))
            except Exception:
                pass
        self._closed = True
        self._tracker.fail_all(lambda m: errors.IPClusterError("the Client was closed before a reply arrived"))
        if getattr(self, "_blocking", None) is not None:
            self._blocking.close()
        if getattr(self, "_io", None) is not None:
            self._io.stop(linger=100 if linger is None else linger)
        if self._own_context:
            self._ctx.term()
        if getattr(self, "_tunnel", None) is not None:
            self._tunnel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed and getattr(self, "_io", None) is not None:
                self._io.stop(linger=0, timeout=1)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._engines)} engines"
        return f"<Client {self.url_file} ({state})>"


def _activate_magics(client: Client) -> None:
    """Inside IPython, give the new client's engines to ``%px`` (see ``ipcluster.magics``).

    Checked through ``sys.modules`` so a client outside IPython never imports it."""
    if "IPython" not in sys.modules:
        return
    try:
        from ipcluster.magics import auto_activate

        auto_activate(client)
    except Exception as e:  # the magics are a convenience: never a reason for Client() to fail
        log.warning("could not activate the %%px magics: %s: %s", type(e).__name__, e)


#: Monitor events of a failed security handshake (a refused CurveZMQ key, a mechanism mismatch).
_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


def _default_connection_file(profile: str | None, pdir: str | os.PathLike[str] | None,
                             cluster_id: str | None) -> Path:
    base = Path(pdir) if pdir else profile_dir(profile)
    return connection_file_path(base, cluster_id or "")


def _wait_for_file(path: Path, timeout: float) -> ConnectionInfo:
    """Read the connection file, waiting up to *timeout* seconds for it to appear."""
    deadline = time.monotonic() + max(timeout, 0)
    delay = 0.005
    while not path.exists():
        if time.monotonic() >= deadline:
            raise errors.ConnectionFileError(
                f"connection file {path} not found after {timeout} s; start a cluster with "
                "`ipcluster start` or ipcluster.Cluster, or pass the right profile / cluster_id / url_file")
        time.sleep(delay)  # polling a path with a deadline: the file's writer is another process
        delay = min(delay * 2, 0.1)
    return read_connection_file(path)
