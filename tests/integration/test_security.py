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
    send_when_connected(sock, Session(rc.connection_info.key_bytes).serialize("nothing_request", {}, idents=[uuid]))
    sock.recv_multipart()  # its answer to the probe (an error reply: no such request type)
    return sock


def send_when_connected(sock: zmq.Socket, frames: list) -> None:
    """Send on a ROUTER_MANDATORY socket once its peer is connected (again: an oversized frame
    makes the peer drop the connection, and it takes a moment to come back)."""

    def sent() -> bool:
        try:
            sock.send_multipart(frames)
            return True
        except zmq.ZMQError:
            return False

    wait_for(sent, timeout=10, what="the engine's direct socket to accept a connection")


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
        forms = bad_forms(key, canary, [rc._engines[1]])
        oversized = forms.pop("oversized")  # makes the engine drop the connection: sent last
        send_all(direct, forms)
        genuine = Session(key).serialize("apply_request", {}, idents=[rc._engines[1]],
                                         buffers=pack_apply_message(append_line, (str(tmp_path / "ran"),), {}))
        direct.send_multipart(genuine)
        direct.recv_multipart()  # the engine handled everything sent before it on this connection
        direct.send_multipart(oversized)
        # were it accepted, it would run before this (same connection); dropped, the engine closes the
        # connection and this goes on the next one
        deadline = time.monotonic() + 20
        while True:  # the first tries may go into the connection being closed: try again
            send_when_connected(direct, Session(key).serialize("apply_request", {}, idents=[rc._engines[1]],
                                                               buffers=pack_apply_message(len, ([],), {})))
            if direct.poll(500):
                direct.recv_multipart()
                break
            assert time.monotonic() < deadline, "the engine stopped answering on its direct socket"

        # the same-host raw links (Unix stream sockets in the controller's private directory)
        if info.local_ipc:
            from ipcluster.protocol import rawlink

            to_controller = rawlink.connect(os.path.join(info.ipc_dir, rawlink.CONTROLLER_LISTENER))
            for form in bad_forms(key, canary, [b"scheduler"]).values():
                try:
                    to_controller.send(form)
                except OSError:
                    break  # the oversized form (last) made the controller close the link
            to_controller.close()
            raw_url = rc._raw_urls.get(rc._engines[1])
            if raw_url:
                to_engine = rawlink.connect(raw_url)
                forms = bad_forms(key, canary, [b"me"])
                forms.pop("oversized")
                for form in forms.values():
                    to_engine.send(form)
                to_engine.send(Session(key).serialize("apply_request", {}, idents=[b"me"],
                                                      buffers=pack_apply_message(len, ([],), {})))
                reply = Session(key).deserialize(to_engine.recv())  # after every form sent before it
                assert reply.content["status"] == "ok"
                to_engine.close()

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



def test_an_unsolicited_registration_reply_does_not_stop_an_engine(cluster):
    """The controller forwards what key holders send to an engine's control socket; a registration
    reply that answers no registration request of the engine's (here a refusal) is ignored."""
    rc = cluster.rc
    info = rc.connection_info
    engines = sorted(rc.ids)
    uuid = rc._engines[engines[0]]
    ctx = zmq.Context()
    try:
        control = dealer(ctx, info.url("control_front"), os.urandom(8).hex().encode())
        signer = Session(info.key_bytes)
        for content in ({"status": "error", "evalue": "refused"}, {"status": "ok", "id": 99}):
            control.send_multipart(signer.serialize("registration_reply", content, idents=[uuid]))
        # a request after them on the same route is answered after they were handled
        control.send_multipart(signer.serialize("abort_request", {"msg_ids": []}, idents=[uuid]))
        assert control.poll(10_000), "the engine stopped answering on its control route"
        assert signer.deserialize(control.recv_multipart()).msg_type == "abort_reply"
        assert rc[engines].apply_sync(lambda: 1) == [1] * len(engines)
        assert sorted(rc.ids) == engines
    finally:
        ctx.destroy(linger=0)


ROLES = ("hub", "mux_front", "control_front", "mux_back", "control_back", "hb_pong", "direct")
# every message type but those that would stop the cluster (correctly signed ones are obeyed)
_STOPPERS = {"controller_shutdown_request", "shutdown_request", "signal_request"}
MSG_TYPES = sorted(v for k, v in vars(__import__("ipcluster.protocol.messages", fromlist=["x"])).items()
                   if k.isupper() and isinstance(v, str) and v not in _STOPPERS)

frame = st.one_of(st.binary(max_size=300), st.sampled_from([DELIM, b"{}", b"[]", b"scheduler", b"broadcast", b""]))
# JSON values that cannot name a real engine process (pids are larger)
json_value = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False)
                          | st.text(max_size=20),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4),
                          max_leaves=12)
json_object = st.dictionaries(st.sampled_from(["msg_ids", "targets", "uuid", "id", "content", "status", "tasks",
                                               "verbose", "wait", "keys", "query", "after", "follow", "retries",
                                               "timeout", "parts", "coalesce", "direct_completed"])
                              | st.text(max_size=8), json_value, max_size=5)
raw = st.tuples(st.just("raw"), st.sampled_from(ROLES), st.lists(frame, min_size=1, max_size=12))
signed_garbage = st.tuples(st.just("signed"), st.sampled_from(ROLES), st.lists(frame, min_size=4, max_size=8))
envelope = st.tuples(st.just("envelope"), st.sampled_from(ROLES),
                     st.tuples(st.sampled_from(MSG_TYPES), json_object, json_object,
                               st.lists(st.binary(max_size=100), max_size=2),
                               st.sampled_from(["engine", "scheduler", "broadcast", "none", "junk"])))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.one_of(raw, signed_garbage, envelope), min_size=1, max_size=20))
def test_fuzzed_frames_leave_every_role_serving(cluster, messages):
    """Random frames, correctly signed random parts, and correctly signed messages of every type
    with random content: the controller and engines drop or answer them and go on serving."""
    rc = cluster.rc
    info = rc.connection_info
    key = info.key_bytes
    engines = sorted(rc.ids)
    uuid = rc._engines[engines[1]]
    signer = Session(key)
    routing = {"engine": [rc._engines[engines[0]]], "scheduler": [b"scheduler"], "broadcast": [b"broadcast"],
               "none": [], "junk": [b"junk"]}
    ctx = zmq.Context()
    try:
        socks = {role: dealer(ctx, info.url(role), os.urandom(8).hex().encode())
                 for role in ROLES if role != "direct"}
        direct = engine_direct(ctx, rc, uuid)
        for kind, role, body in messages:
            if kind == "raw":
                frames = body
            elif kind == "signed":  # gets past the signature, must fail later checks
                parts = [bytes(f) for f in body[:4]]
                frames = [DELIM, signer.sign(parts, body[4:]), *parts, *body[4:]]
            else:
                msg_type, content, metadata, buffers, target = body
                idents = routing[target] if role in ("mux_front", "control_front") else []
                frames = signer.serialize(msg_type, content, metadata=metadata, buffers=buffers, idents=idents)
            if role == "direct":
                direct.send_multipart([uuid, *frames])
            else:
                socks[role].send_multipart(frames)
        # everything sent to the engine is handled before what follows on the same connection
        direct.send_multipart(Session(key).serialize("apply_request", {}, idents=[uuid],
                                                     buffers=pack_apply_message(len, ([],), {})))
        deadline = time.monotonic() + 30
        while True:  # skip the answers to the fuzzed requests that had an answer
            assert direct.poll(max(0, int((deadline - time.monotonic()) * 1000))), "the engine stopped answering"
            reply = Session(key).deserialize(direct.recv_multipart())
            if reply.content.get("status") == "ok" and reply.msg_type == "apply_reply":
                break
        assert rc[engines].apply_sync(lambda: 1) == [1, 1]
        assert rc.load_balanced_view(engines).apply_sync(lambda: 2) == 2
        state = rc.controller_state()
        assert state["violations"] == []
        assert state["dropped"]["handler_errors"] == {}, "a controller handler raised on a message"
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


def _controller_log(tmp_path: Path, args: list[str]) -> str:
    """Start a controller in a network namespace of its own with *args*; its log once it is ready."""
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip for a private network namespace")
    tmp_path.mkdir(parents=True, exist_ok=True)
    pdir = tmp_path / "profile"
    conn = pdir / "security" / "ipcluster-connection.json"
    log = tmp_path / "controller.log"
    script = (f"ip link set lo up && exec {sys.executable} -P -m controller --profile-dir {pdir} "
              f"--log-level INFO " + " ".join(args))
    with open(log, "wb") as out:
        proc = subprocess.Popen(["unshare", "--net", "sh", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(Path(__file__).resolve().parents[2]))
    try:
        wait_for(conn.exists, timeout=30, watch=[proc], what="the controller's connection file")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return log.read_text()


@pytest.mark.timeout(90)
def test_a_non_loopback_bind_without_curve_warns_once(tmp_path):
    text = _controller_log(tmp_path / "plain", ["--ip", "0.0.0.0"])
    assert text.count("without encryption") == 1, text
    if zmq.has("curve"):
        assert "without encryption" not in _controller_log(tmp_path / "curve", ["--ip", "0.0.0.0", "--enable-curve"])
    assert "without encryption" not in _controller_log(tmp_path / "loopback", [])


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE support")
@pytest.mark.cluster_options(n=1, cluster_kwargs={"enable_curve": True})
def test_curve_keeps_hmac_on_and_checks_the_allow_list(cluster, tmp_path):
    from ipcluster.protocol import curve

    rc = cluster.rc
    info = rc.connection_info
    canary = tmp_path / "canary"
    ctx = zmq.Context()
    try:
        # the cluster's own (allowed) Curve keypair, but a message signed with the wrong HMAC key
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        curve.set_client_keys(sock, info)
        sock.connect(info.url("mux_front"))
        sock.send_multipart(Session(new_key()).serialize("apply_request", {}, buffers=canary_payload(canary),
                                                         idents=[rc._engines[0]]))
        wait_for(lambda: rc.controller_state()["dropped"]["session"]["signature"] >= 1, timeout=10,
                 what="the controller to drop the wrongly signed message")
        # a key that is not on the allow-list never completes the handshake
        stranger = ctx.socket(zmq.DEALER)
        stranger.setsockopt(zmq.LINGER, 0)
        public, secret = curve.new_keypair()
        curve.set_client_keys(stranger, info, (public, secret))
        monitor = stranger.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        stranger.connect(info.url("hub"))
        assert monitor.poll(10_000), "no handshake event"
        from zmq.utils.monitor import recv_monitor_message

        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        monitor.close(linger=0)
        assert rc[0].apply_sync(lambda: "still serving") == "still serving"
    finally:
        ctx.destroy(linger=0)
    assert not canary.exists()


@pytest.mark.timeout(120)
def test_a_message_recorded_before_a_controller_restart_is_not_replayed_after_it(cluster, tmp_path):
    """The restarted controller (same key, from its store) adopts its predecessor's replay guard."""
    import json
    import signal

    from controller.replayguard import guard_file_path
    from tests.conftest import alive

    c, rc = cluster.cluster, cluster.rc
    info = rc.connection_info
    counter = tmp_path / "counter"
    sender = Session(info.key_bytes)
    uuid = rc._engines[rc.ids[0]]

    def request() -> list:
        return sender.serialize("apply_request", {}, idents=[uuid],
                                buffers=pack_apply_message(append_line, (str(counter),), {}))

    recorded = request()
    ctx = zmq.Context()
    try:
        mux = dealer(ctx, info.url("mux_front"))
        mux.send_multipart(recorded)
        assert mux.poll(20_000) and Session(info.key_bytes).deserialize(mux.recv_multipart())
        guard = guard_file_path(c.connection_file)
        wait_for(lambda: guard.exists() and sender.session_id in guard.read_text(), timeout=10,
                 what="the controller to save its replay guard")
        assert json.loads(guard.read_text())["key"] and info.key not in guard.read_text()

        old_pid = c.controller.pid
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: not alive(old_pid), 10, what="the controller to die")
        wait_for(lambda: c.controller is not None and c.controller.pid != old_pid and c.controller.running,
                 30, what="the controller to be restarted")
        engine_id = rc.ids[0]
        wait_for(lambda: engine_id in rc.queue_status(), 30, what="the engine to register again")

        again = dealer(ctx, info.url("mux_front"))
        again.send_multipart(recorded)  # the replay: refused as stale
        again.send_multipart(request())  # the same sender's new message: runs
        assert again.poll(20_000)
        reply = Session(info.key_bytes).deserialize(again.recv_multipart())
        assert reply.content["status"] == "ok", reply.content
        assert not again.poll(500), "the replayed message was answered"
        assert rc.controller_state()["dropped"]["session"]["stale"] >= 1
    finally:
        ctx.destroy(linger=0)
    assert counter.read_text() == "ran\n" * 2
