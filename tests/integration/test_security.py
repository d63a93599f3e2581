"""Bad messages of every kind, to every socket role, never run a pickle and never stop the cluster.

The payload is a canary: unpickling it creates a file.  Each bad form (unsigned, wrongly signed,
tampered, truncated, stale, malformed, oversized) goes to every socket a peer can reach: the
controller's hub, mux and control sockets on both sides, its heartbeat socket, an engine's direct
socket, and the client's receive path.  Afterwards the cluster still serves, the file does not
exist, and the controller counted what it dropped.  Replays are checked with a harmless payload
whose effect can be counted.  A hypothesis-driven run then throws random frames at every role.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipcluster.protocol.serialize import pack_apply_message
from ipcluster.protocol.session import DELIM, Session, new_key
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(180)

LIMIT = 8 << 20  # the cluster's max_message_size in these tests: oversized frames are cheap to make


class Canary:
    """Unpickling this creates a file: proof that a pickle ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def append_line(path: str) -> int:
    with open(path, "a") as f:
        f.write("ran\n")
    return 1


def canary_payload(path: Path) -> list:
    return [bytes(b) for b in pack_apply_message(print, (Canary(str(path)),), {})]


def bad_forms(key: bytes, canary: Path, idents: list[bytes], msg_type: str = "apply_request") -> dict[str, list]:
    """Every bad form of a message carrying the canary; *idents* go before the delimiter."""
    good = Session(key)
    payload = canary_payload(canary)
    twin = canary_payload(canary.with_name(canary.name[:-1] + "X"))  # same length, harmless if it ran
    assert [len(b) for b in twin] == [len(b) for b in payload]
    signed = good.serialize(msg_type, {}, buffers=payload, idents=idents)
    n = len(idents)
    forms = {
        "unsigned": signed[: n + 1] + [b""] + signed[n + 2:],
        "wrong key": Session(new_key()).serialize(msg_type, {}, buffers=payload, idents=idents),
        "pickle swapped after signing": good.serialize(msg_type, {}, buffers=twin, idents=idents)[:-1] + payload[-1:],
        "buffer added": signed + [b"extra"],
        "truncated": signed[:-1],
        "header only": signed[: n + 3],
        "no delimiter": [*idents, *signed[n + 1:]],
        "bad json": signed[: n + 2] + [b"{"] + signed[n + 3:],
    }
    # signed with the right key but not acceptable
    stale = good.header(msg_type)
    stale["date"] = time.time() - 7200
    forms["stale"] = good.serialize(msg_type, {}, buffers=payload, idents=idents, header=stale)
    parts = [b"[]", b"{}", b"{}", b"{}"]  # a header that is not an object
    forms["signed non-object header"] = [*idents, DELIM, good.sign(parts, payload), *parts, *payload]
    big = payload + [b"\0" * (LIMIT + 1)]
    forms["oversized"] = good.serialize(msg_type, {}, buffers=big, idents=idents)
    return forms


def dealer(ctx: zmq.Context, url: str, identity: bytes | None = None) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if identity:
        s.setsockopt(zmq.IDENTITY, identity)
    s.connect(url)
    return s


def send_all(sock: zmq.Socket, forms: dict[str, list]) -> None:
    for frames in forms.values():
        sock.send_multipart(frames)


def engine_direct(ctx: zmq.Context, rc, uuid: bytes) -> zmq.Socket:
    """A ROUTER connected to an engine's same-host socket, once it can address the engine."""
    url = rc._direct_urls.get(uuid)
    assert url, "same-host engines expose a direct socket"
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.connect(url)
    probe = Session(rc.connection_info.key_bytes).serialize("nothing_request", {}, idents=[uuid])

    def sent() -> bool:
        try:
            sock.send_multipart(probe)
            return True
        except zmq.ZMQError:
            return False

    wait_for(sent, timeout=10, what="the engine's direct socket to accept a connection")
    sock.recv_multipart()  # its answer to the probe (an error reply: no such request type)
    return sock


@pytest.mark.cluster_options(controller_config={"max_message_size": LIMIT})
def test_canary_never_runs_in_any_bad_form_on_any_role(cluster, tmp_path):
    rc = cluster.rc
    info = rc.connection_info
    key = info.key_bytes
    canary = tmp_path / "canary"
    uuid = rc._engines[0]
    ctx = zmq.Context()
    try:
        targets = {
            "hub": (dealer(ctx, info.url("hub")), [], "queue_status_request"),
            "mux_front": (dealer(ctx, info.url("mux_front")), [uuid], "apply_request"),
            "mux_front scheduler": (dealer(ctx, info.url("mux_front")), [b"scheduler"], "apply_request"),
            "control_front": (dealer(ctx, info.url("control_front")), [uuid], "clear_request"),
            # as if from an engine: a reply for a client, and a message for the controller itself
            "mux_back reply": (dealer(ctx, info.url("mux_back"), os.urandom(16).hex().encode()),
                               [rc.session.session_id.encode()], "apply_reply"),
            "mux_back": (dealer(ctx, info.url("mux_back"), os.urandom(16).hex().encode()), [], "stream"),
            "control_back": (dealer(ctx, info.url("control_back"), os.urandom(16).hex().encode()), [],
                             "registration_request"),
        }
        for name, (sock, idents, msg_type) in targets.items():
            send_all(sock, bad_forms(key, canary, idents, msg_type))
        pong = dealer(ctx, info.url("hb_pong"), uuid)  # a forged heartbeat carries no pickle at all
        pong.send_multipart([b"\0" * 100] * 3)

        direct = engine_direct(ctx, rc, rc._engines[1])
        send_all(direct, bad_forms(key, canary, [rc._engines[1]]))
        genuine = Session(key).serialize("apply_request", {}, idents=[rc._engines[1]],
                                         buffers=pack_apply_message(append_line, (str(tmp_path / "ran"),), {}))
        direct.send_multipart(genuine)
        direct.recv_multipart()  # the engine handled everything sent before it on this connection

        # the client's receive path (replies and notifications)
        for form in bad_forms(key, canary, []).values():
            rc._on_engine_message([zmq.Frame(bytes(f)) for f in form])
            rc._on_hub([zmq.Frame(bytes(f)) for f in form])

        def counted() -> dict | None:
            state = rc.controller_state()
            routes = state["dropped"]["routes"]
            want = {"hub", "mux_front", "control_front", "mux_back", "control_back"}
            return state if want <= set(routes) and state["dropped"]["session"]["stale"] >= 5 else None

        state = wait_for(counted, timeout=20, what="the controller to count every dropped message")
        session_counts = state["dropped"]["session"]
        assert session_counts["signature"] >= 5 * 7 and session_counts["malformed"] >= 2 * 7
        assert state["violations"] == []

        # still serving, on every route
        assert rc[:].apply_sync(lambda: "ok") == ["ok", "ok"]
        assert rc.load_balanced_view().map_sync(lambda x: x + 1, range(4)) == [1, 2, 3, 4]
        assert rc.queue_status()[0]["queue"] == 0
    finally:
        ctx.destroy(linger=0)
    assert not canary.exists(), "a pickle from a bad message was run"
    assert (tmp_path / "ran").read_text() == "ran\n"


def test_replays_run_once_and_the_cluster_goes_on(cluster, tmp_path):
    rc = cluster.rc
    info = rc.connection_info
    key = info.key_bytes
    counter = tmp_path / "counter"
    ctx = zmq.Context()
    try:
        mux = dealer(ctx, info.url("mux_front"))
        genuine = Session(key).serialize("apply_request", {}, idents=[rc._engines[0]],
                                         buffers=pack_apply_message(append_line, (str(counter),), {}))
        for _ in range(3):
            mux.send_multipart(genuine)
        assert Session(key).deserialize(mux.recv_multipart()).content["status"] == "ok"
        direct = engine_direct(ctx, rc, rc._engines[1])
        once = Session(key).serialize("apply_request", {}, idents=[rc._engines[1]],
                                      buffers=pack_apply_message(append_line, (str(counter),), {}))
        for _ in range(3):
            direct.send_multipart(once)
        direct.recv_multipart()
        assert rc[:].apply_sync(lambda: "ok") == ["ok", "ok"]
        assert not mux.poll(200) and not direct.poll(0), "a replay was answered"
        wait_for(lambda: rc.controller_state()["dropped"]["session"]["replay"] >= 2, timeout=10,
                 what="the controller to count the replays")
    finally:
        ctx.destroy(linger=0)
    assert counter.read_text() == "ran\n" * 2  # once through the controller, once directly


ROLES = ("hub", "mux_front", "control_front", "mux_back", "control_back", "hb_pong", "direct")

frame = st.one_of(st.binary(max_size=300), st.sampled_from([DELIM, b"{}", b"[]", b"scheduler", b"broadcast", b""]))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.tuples(st.sampled_from(ROLES), st.lists(frame, min_size=1, max_size=12),
                                   st.booleans()), min_size=1, max_size=20))
def test_fuzzed_frames_leave_every_role_serving(cluster, messages):
    rc = cluster.rc
    info = rc.connection_info
    key = info.key_bytes
    uuid = rc._engines[1]
    signer = Session(key)
    ctx = zmq.Context()
    try:
        socks = {role: dealer(ctx, info.url(role), os.urandom(8).hex().encode())
                 for role in ROLES if role != "direct"}
        direct = engine_direct(ctx, rc, uuid)
        for role, frames, with_good_signature in messages:
            if with_good_signature and len(frames) >= 4:
                # correctly signed garbage: gets past the signature, must fail later checks
                parts = [bytes(f) for f in frames[:4]]
                frames = [DELIM, signer.sign(parts, frames[4:]), *parts, *frames[4:]]
            if role == "direct":
                direct.send_multipart([uuid, *frames])
            else:
                socks[role].send_multipart(frames)
        # everything sent is handled before what follows on the same connections
        direct.send_multipart(Session(key).serialize("apply_request", {}, idents=[uuid],
                                                     buffers=pack_apply_message(len, ([],), {})))
        assert Session(key).deserialize(direct.recv_multipart()).content["status"] == "ok"
        assert rc[:].apply_sync(lambda: 1) == [1, 1]
        assert rc.controller_state()["violations"] == []
    finally:
        ctx.destroy(linger=0)


def test_iopub_relays_engine_output(rc):
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"engine.1.stream")
        sub.connect(rc.connection_info.url("iopub"))
        session = Session(rc.connection_info.key_bytes)
        deadline = time.monotonic() + 10
        got = None
        # PUB/SUB subscriptions take effect asynchronously: keep producing output until one arrives
        while got is None and time.monotonic() < deadline:
            rc[1].apply_sync(lambda: print("relayed"))
            if sub.poll(100):
                got = session.deserialize(sub.recv_multipart())
        assert got is not None, "no output copy on iopub"
        assert got.idents == [b"engine.1.stream"] and got.content["text"] == "relayed\n"
        assert got.parent_header["msg_type"] == "apply_request"
    finally:
        ctx.destroy(linger=0)


def test_profile_files_are_private_even_with_an_open_umask(tmp_path):
    """Key and task data live in 0600 files inside 0700 directories, whatever the umask."""
    import ipcluster

    old = os.umask(0)
    try:
        pdir = tmp_path / "profile"
        with ipcluster.Cluster(n=1, profile_dir=str(pdir), log_level="INFO") as rc:
            rc[:].apply_sync(print, "task output")
            files = {p: p.stat().st_mode & 0o777 for p in pdir.rglob("*")}
    finally:
        os.umask(old)
    for sub in ("security", "log"):
        assert (pdir / sub).stat().st_mode & 0o777 == 0o700, sub
    private = {p: oct(m) for p, m in files.items() if p.parent.name in ("security", "log") and p.is_file()
               and m != 0o600}
    assert not private, f"files readable by others: {private}"
    assert any(p.name.endswith("-connection.json") for p in files)
