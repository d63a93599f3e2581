"""A minimal engine that follows the protocol, with switches to misbehave.

``python tests/fakes/fake_engine.py CONNECTION_FILE [--mode MODE]``; modes:
``normal`` (apply only), ``silent`` (registers, never replies), ``garbage`` (answers with unsigned
frames), ``die`` (exits with code 7 on its first request), ``noheart`` (never answers heartbeats).
``--version V`` claims ipcluster version V at registration.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import uuid

import zmq

from ipcluster.protocol import messages as M
from ipcluster.protocol.connection import read_connection_file
from ipcluster.protocol.serialize import serialize_object, unpack_apply_message
from ipcluster.protocol.session import Session
from ipcluster.protocol.versions import local_versions


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--mode", default="normal")
    p.add_argument("--version", default=None)
    a = p.parse_args()
    info = read_connection_file(a.file)
    session = Session(info.key_bytes)
    ident = uuid.uuid4().hex.encode()
    ctx = zmq.Context()
    mux = ctx.socket(zmq.DEALER)
    control = ctx.socket(zmq.DEALER)
    sub = ctx.socket(zmq.SUB)
    pong = ctx.socket(zmq.DEALER)
    for s, role in ((mux, "mux_back"), (control, "control_back"), (pong, "hb_pong")):
        s.setsockopt(zmq.IDENTITY, ident)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(info.url(role))
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(info.url("hb_ping"))
    if a.mode != "noheart":
        threading.Thread(target=zmq.proxy, args=(sub, pong), daemon=True).start()
    versions = {**local_versions(), "engines_path": None, "controller_path": None}
    if a.version is not None:
        versions["ipcluster"] = a.version
    control.send_multipart(session.serialize(M.REGISTRATION_REQUEST, {
        "uuid": ident.decode(), "hostname": socket.gethostname(), "pid": os.getpid(),
        "supervisor_pid": None, "versions": versions}))
    reply = session.deserialize(control.recv_multipart(), has_idents=False)
    if reply.content.get("status") != "ok":
        print(reply.content.get("evalue"), file=sys.stderr)
        sys.exit(3)
    engine_id = reply.content["id"]
    mux.send_multipart(session.serialize(M.ENGINE_READY_NOTIFICATION, {"uuid": ident.decode()}))
    while True:
        msg = session.deserialize(mux.recv_multipart(copy=False))
        if a.mode == "die":
            os._exit(7)
        if a.mode == "silent":
            continue
        if a.mode == "garbage":
            mux.send_multipart([msg.idents[0], b"<IDS|MSG>", b"bad", b"{}", b"{}", b"{}", b"{}"])
            continue
        f, args, kwargs = unpack_apply_message(msg.buffers)
        md = {"engine_id": engine_id, "engine_uuid": ident.decode(), "status": "ok"}
        mux.send_multipart(session.serialize(M.APPLY_REPLY, {"status": "ok"}, parent=msg, metadata=md,
                                             buffers=serialize_object(f(*args, **kwargs)),
                                             idents=msg.idents), copy=False)


if __name__ == "__main__":
    main()
