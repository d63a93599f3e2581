"""BroadcastView: one request for many engines, fanned out by the controller.

A :class:`DirectView` call on N engines sends N messages (the payload pickled once, sent N times).
A :class:`BroadcastView` call sends one message, addressed to the reserved routing id
``BROADCAST`` with signed metadata ``{"targets": [engine ids]}``; the controller forwards the same
frames to each target engine.  Every engine replies to that one request, so replies (and outputs)
share one parent msg_id: the client tells them apart by the route they arrive on (the engine's
uuid) or, for the controller's error replies about missing engines, by ``engine_id`` in the
reply's metadata.  Each engine's part is tracked as its own request, ``"<msg_id>/<engine id>"``, so
results, errors and engine deaths are handled exactly as for direct requests.

With ``is_coalescing=True`` the request asks the controller to gather the replies and answer with
one ``broadcast_reply`` holding every engine's reply (each still signed by its engine); the client
unpacks it into the same per-engine parts.  Outputs (stdout, displays) still stream as they are
produced; the results arrive together, in one message instead of one per engine.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ipcluster import errors
from ipcluster.client.asyncresult import AsyncResult
from ipcluster.client.view import DirectView, View
from ipcluster.protocol import messages as M
from ipcluster.protocol.serialize import pack_apply_message
from ipcluster.protocol.session import Message

if TYPE_CHECKING:
    from ipcluster.client.client import Client
    from ipcluster.client.targets import Targets

Future = concurrent.futures.Future


class BroadcastParts:
    """Outstanding broadcasts: request msg_id -> {engine uuid or id: part id}.  Pure bookkeeping.

    ``add`` is called from the user's thread before the request is sent; ``rename`` from the IO
    thread for every message it receives while a broadcast is outstanding.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, dict[bytes | int, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, msg_id: str, parts: dict[bytes | int, str], futures: Sequence[Future[Any]]) -> None:
        """Track *parts* of broadcast *msg_id* until all *futures* are done."""
        with self._lock:
            self._parts[msg_id] = parts
        left = [len(futures)]

        def done(_: Any) -> None:
            with self._lock:
                left[0] -= 1
                if left[0] == 0:
                    self._parts.pop(msg_id, None)

        for fut in futures:
            fut.add_done_callback(done)

    def rename(self, msg: Message) -> bool:
        """Point a broadcast's reply or output at its engine's part; False if it is no part of one."""
        with self._lock:
            parts = self._parts.get(msg.parent_id)
        if parts is None:
            return True  # an ordinary request
        uuid = msg.idents[0] if msg.idents else b""
        part = parts.get(uuid) if uuid else None
        if part is None:
            eid = msg.metadata.get("engine_id")
            part = parts.get(eid) if isinstance(eid, int) else None
        if part is None:
            return False
        msg.parent_header = dict(msg.parent_header, msg_id=part)
        return True


def send_broadcast(client: "Client", engine_ids: Sequence[int], msg_type: str, content: dict[str, Any],
                   buffers: Sequence[Any], coalesce: bool = False) -> tuple[list[str], list[Future[Any]]]:
    """Send one *msg_type* request for all *engine_ids*; returns one part id and future per engine.

    With *coalesce* the controller answers with one message holding all the replies."""
    client._check_open()
    if len(set(engine_ids)) != len(engine_ids):
        raise ValueError(f"broadcast targets name an engine more than once: {list(engine_ids)}")
    uuids = [client._uuid(eid) for eid in engine_ids]
    if any(client._routes.active(u) not in (None, "mux") for u in uuids):
        # requests still out to one of them on another route would be overtaken through the
        # controller: send one request per engine on its active route instead (same results)
        return client._send_each(engine_ids, msg_type, content, buffers)
    header = client.session.header(msg_type)
    msg_id = header["msg_id"]
    parts: dict[bytes | int, str] = {}
    part_ids, futures = [], []
    for eid, uuid in zip(engine_ids, uuids):
        part = f"{msg_id}/{eid}"
        futures.append(client._tracker.register(part, uuid, eid))
        parts[uuid] = parts[eid] = part
        part_ids.append(part)
    client._broadcasts.add(msg_id, parts, futures)
    metadata: dict[str, Any] = {"targets": list(engine_ids)}
    if coalesce:
        metadata["coalesce"] = True
    frames = client.session.serialize(msg_type, content, header=header, metadata=metadata,
                                      buffers=buffers, idents=[M.BROADCAST])
    for uuid, fut in zip(uuids, futures):
        # later requests to these engines follow the broadcast on the controller's route
        client._routes.pending(uuid, "mux", [fut])
    client._io.send("mux", frames)
    if client._controller_gone:
        for p in part_ids:
            client._tracker.fail(p, errors.ControllerError(client._controller_gone))
    return part_ids, futures


class BroadcastView(View):
    """Run work on named engines with one message per call, fanned out by the controller.

    Same results as a :class:`DirectView` (a list in target order, or one value for an int
    target; failures as :class:`~ipcluster.CompositeError`), but the client sends — and
    serialises — each call once, whatever the number of engines.  Flags: ``block``, ``targets``.
    Each engine's part has its own id in ``AsyncResult.msg_ids`` (``"<msg_id>/<engine id>"``).
    While requests to a target are still out on the direct route, a call is sent as one request
    per engine instead, so that it cannot overtake them.

    ``is_coalescing=True`` (a flag, like ``block``) has the controller send all the replies of a
    call back as one message, once every engine has answered: fewer messages for the client when
    there are many engines, at the price of getting no result before the slowest engine's.
    """

    _flag_names = ("block", "targets", "is_coalescing")

    def __init__(self, client: "Client", targets: "Targets" = "all", block: bool = False,
                 is_coalescing: bool = False):
        super().__init__(client, targets, block)
        self.is_coalescing = is_coalescing

    def _apply(self, f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any],
               block: bool | None = None, targets: "Targets" = None) -> Any:
        if not callable(f):
            raise TypeError(f"apply needs a callable, got {type(f).__name__}")
        ids, single = self._targets(targets)
        part_ids, futures = send_broadcast(self.client, ids, M.APPLY_REQUEST, {},
                                           pack_apply_message(f, args, kwargs), coalesce=self.is_coalescing)
        ar = AsyncResult(self.client, part_ids, futures, fname=getattr(f, "__name__", "f"), single=single)
        return self._finish(ar, self._block(block))

    def execute(self, code: str, silent: bool = True, targets: "Targets" = None,
                block: bool | None = None) -> Any:
        """Run *code* (IPython syntax) in the engines' namespaces; outputs per engine in the result."""
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        ids, single = self._targets(targets)
        part_ids, futures = send_broadcast(self.client, ids, M.EXECUTE_REQUEST,
                                           {"code": code, "silent": silent}, (), coalesce=self.is_coalescing)
        ar = AsyncResult(self.client, part_ids, futures, fname="execute", single=single)
        return self._finish(ar, self._block(block))

    # plain applies of DirectView's helpers
    push = DirectView.push
    pull = DirectView.pull
    __setitem__ = DirectView.__setitem__
    __getitem__ = DirectView.__getitem__
    update = DirectView.update
    get = DirectView.get


__all__ = ["BroadcastView"]
