"""Engines and their supervisor must not outlive a dead controller; a brief disconnect is survived."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

import ipcluster
from engines.controller_watch import EXIT_CONTROLLER_GONE
from tests.conftest import alive, kill_all, wait_for

#: The engines' controller_timeout in these tests (seconds).
GRACE = 1.0
#: How long after the grace period everything must be gone (noticing, exiting, reaping).
SLACK = 5.0


def _write_engine_config(pdir: Path, grace: float = GRACE) -> None:
    pdir.mkdir(parents=True, exist_ok=True)
    (pdir / "ipengine_config.py").write_text(f"c.IPEngine.controller_timeout = {grace}\n")


def _sleep(started: str) -> None:
    """A task interrupted by the engine's stop (KeyboardInterrupt ends it)."""
    import pathlib
    import time

    pathlib.Path(started).touch()
    time.sleep(60)


def _stubborn(started: str) -> None:
    """A task that swallows interrupts: only the engine's hard exit ends it."""
    import pathlib
    import time

    pathlib.Path(started).touch()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except KeyboardInterrupt:
            pass


def test_engines_and_supervisor_exit_when_the_controller_is_killed(tmp_path, no_leaked_processes):
    """Both engines are busy: one task can be interrupted, the other swallows the interrupt."""
    pdir = tmp_path / "p"
    _write_engine_config(pdir)
    cluster = ipcluster.Cluster(n=2, profile_dir=str(pdir), persist=False)  # not restarted when killed
    try:
        rc = cluster.start_and_connect_sync()
        engine_set = cluster.engines["0"]
        supervisor = psutil.Process(engine_set.pid)
        engine_pids = {p.pid for p in supervisor.children()}
        assert engine_pids == set(rc[:].apply_sync(os.getpid))
        pids = engine_pids | {supervisor.pid}
        started = [tmp_path / "started0", tmp_path / "started1"]
        rc[0].apply_async(_sleep, str(started[0]))
        rc[1].apply_async(_stubborn, str(started[1]))
        wait_for(lambda: all(f.exists() for f in started), timeout=10, what="both tasks to start")

        killed_at = time.monotonic()
        os.kill(rc.connection_info.controller_pid, signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=GRACE + SLACK,
                 what="the engines and their supervisor to exit after the controller was killed")
        assert time.monotonic() - killed_at >= GRACE, "the engines did not wait out their grace period"

        assert engine_set.poll() == EXIT_CONTROLLER_GONE
        log = Path(engine_set.log_path).read_text()
        assert log.count("gone for") == 2, log  # one line per engine
        assert "code 4 (controller gone)" in log
        assert log.count("main thread busy") == 2, log  # both tasks were interrupted ...
        assert log.count("still busy; exiting now") == 1, log  # ... and the stubborn one ended hard
        assert "is gone: 2 of 2 engines exited after losing it; exiting" in log
    finally:
        cluster.stop_cluster_sync()  # must neither hang nor raise on a cluster that is already dead
    assert not cluster.running
    assert not any(alive(pid) for pid in pids)


# --- a brief disconnect, produced by cutting a TCP proxy's connections ------------------------


class TcpProxy(threading.Thread):
    """Forwards connections to ``127.0.0.1:<port>`` on to *target_port*, in one thread.

    :meth:`drop` cuts every current connection but keeps listening (so zmq reconnects through
    it); :meth:`close` cuts them and stops listening.
    """

    def __init__(self, target_port: int):
        super().__init__(name="test-tcp-proxy", daemon=True)
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._wake_r, self._wake_w = socket.socketpair()

    def drop(self) -> None:
        self._wake_w.send(b"d")

    def close(self) -> None:
        if self.is_alive():
            self._wake_w.send(b"s")
            self.join(5)
        self._wake_w.close()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "command")
        peers: dict[socket.socket, socket.socket] = {}

        def cut(s: socket.socket) -> None:
            for end in (s, peers.get(s)):
                if end is not None and end in peers:
                    del peers[end]
                    sel.unregister(end)
                    end.close()

        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "command":
                        command = self._wake_r.recv(1)
                        for s in list(peers):
                            cut(s)
                        if command == b"s":
                            return
                    elif key.data == "accept":
                        try:
                            client, _ = self.listener.accept()
                        except BlockingIOError:
                            continue
                        client.setblocking(True)
                        upstream = socket.create_connection(("127.0.0.1", self.target_port))
                        peers[client], peers[upstream] = upstream, client
                        for s in (client, upstream):
                            sel.register(s, selectors.EVENT_READ, "pipe")
                        self.accepted += 1
                    elif key.fileobj in peers:
                        s = key.fileobj
                        assert isinstance(s, socket.socket)
                        try:
                            data = s.recv(65536)
                            if data:
                                peers[s].sendall(data)
                                continue
                        except OSError:
                            pass
                        cut(s)
        finally:
            for s in list(peers):
                cut(s)
            sel.close()
            self.listener.close()
            self._wake_r.close()


@pytest.fixture
def proxied_engine(tmp_path, no_leaked_processes) -> Iterator[
        tuple[ipcluster.Cluster, ipcluster.Client, TcpProxy, subprocess.Popen[bytes], Path]]:
    """A controller and one engine whose control connection goes through a :class:`TcpProxy`."""
    cluster = ipcluster.Cluster(n=1, profile_dir=str(tmp_path / "p"))
    proxy: TcpProxy | None = None
    engine: subprocess.Popen[bytes] | None = None
    rc: ipcluster.Client | None = None
    log = tmp_path / "engine.log"
    try:
        cluster.start_controller_sync()
        wait_for(cluster.connection_file.exists, timeout=30, what="the connection file")
        info = json.loads(cluster.connection_file.read_text())
        proxy = TcpProxy(info["ports"]["control_back"])
        proxy.start()
        info["ports"]["control_back"] = proxy.port
        info["ipc_dir"] = ""  # TCP only: on this host the engine would use the Unix sockets, not the proxy
        proxied = tmp_path / "proxied-connection.json"
        proxied.write_text(json.dumps(info))
        with open(log, "ab") as out:
            engine = subprocess.Popen(
                [sys.executable, "-P", "-m", "engines", "--file", str(proxied),
                 "--controller-timeout", str(GRACE), "--log-file", str(log)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        rc = cluster.connect_client_sync()
        rc.wait_for_engines(1, timeout=30)
        yield cluster, rc, proxy, engine, log
    finally:
        if engine is not None and engine.poll() is None:
            # an engine's SIGINT only interrupts a task; SIGTERM is its clean stop
            for sig in (signal.SIGTERM, signal.SIGKILL):
                engine.send_signal(sig)
                try:
                    engine.wait(5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proxy is not None:
            proxy.close()
        if rc is not None:
            rc.close()
        cluster.stop_cluster_sync()
        if engine is not None and engine.returncode not in (0, EXIT_CONTROLLER_GONE):
            print(log.read_text() if log.exists() else "(no engine log)")  # shown with the failure
        if engine is not None:
            assert not kill_all([engine.pid])


def _log_has(log: Path, text: str, count: int = 1) -> bool:
    return log.read_text().count(text) >= count


def test_brief_disconnect_within_the_grace_period_is_survived(proxied_engine):
    cluster, rc, proxy, engine, log = proxied_engine
    assert rc[0].apply_sync(os.getpid) == engine.pid
    assert proxy.accepted == 1

    dropped_at = time.monotonic()
    proxy.drop()
    wait_for(lambda: _log_has(log, "lost the connection to the controller"), timeout=5, watch=[engine],
             what="the engine to notice the lost control connection")
    wait_for(lambda: _log_has(log, "is back"), timeout=SLACK, watch=[engine],
             what="zmq to reconnect within the grace period")
    assert proxy.accepted >= 2  # zmq reconnected through the proxy

    # had the reconnection not cancelled the grace period, the engine would exit before this deadline
    wait_for(lambda: time.monotonic() > dropped_at + GRACE + 1.0, timeout=GRACE + 2, watch=[engine],
             what="the cancelled grace period to pass (the engine must not exit meanwhile)")
    assert "gone for" not in log.read_text()
    rc.clear(targets=[0], block=True)  # through the control connection, i.e. the proxy
    assert rc[0].apply_sync(lambda: "still serving") == "still serving"


def test_engine_exits_4_when_the_control_connection_does_not_come_back(proxied_engine):
    cluster, rc, proxy, engine, log = proxied_engine
    assert rc[0].apply_sync(lambda: 1) == 1
    closed_at = time.monotonic()
    proxy.close()  # the controller itself still runs: only this engine loses it
    assert engine.wait(GRACE + SLACK) == EXIT_CONTROLLER_GONE
    assert time.monotonic() - closed_at >= GRACE
    text = log.read_text()
    assert "controller at tcp://127.0.0.1:%d gone for" % proxy.port in text, text
    assert "stopping (controller gone)" in text
